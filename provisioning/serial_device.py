"""A MicroPython board on a serial port, through mpremote's raw-REPL transport.

Every failure is a :class:`DeviceError` whose message says what to check. The code sent to the
board is small and runs on MicroPython (no f-strings there; the ESP32 build has ``hashlib``,
``binascii``, ``json`` and ``os``).
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Callable
from typing import Any

from mpremote.transport import TransportError, TransportExecError
from mpremote.transport_serial import SerialTransport

BAUD = 115200
CHUNK = 256  # bytes per write on the device (mpremote's default): small enough for any heap

_HASHES = """
import hashlib, binascii, json
def _sipas_h(p):
    try:
        f = open(p, 'rb')
    except OSError:
        return None
    h = hashlib.sha256()
    b = bytearray(512)
    mv = memoryview(b)
    while True:
        n = f.readinto(b)
        if not n:
            break
        h.update(mv[:n])
    f.close()
    return binascii.hexlify(h.digest()).decode()
print(json.dumps(dict((p, _sipas_h(p)) for p in %s)))
"""

_LISTDIR = """
import os, json
try:
    _r = [[e[0], e[1] & 0x4000 != 0] for e in os.ilistdir(%r)]
except OSError:
    _r = None
print(json.dumps(_r))
"""

_RMTREE = """
import os
def _sipas_rm(p):
    try:
        es = list(os.ilistdir(p))
    except OSError:
        return 0
    n = 0
    for e in es:
        q = p + '/' + e[0]
        if e[1] & 0x4000:
            n += _sipas_rm(q)
        else:
            os.remove(q)
            n += 1
    os.rmdir(p)
    return n
print(_sipas_rm(%r))
"""

# A terminal whose application armed the watchdog (30 s) resets that long after being
# interrupted, even at the REPL; feeding it keeps a long copy alive. machine.reset() ends it.
_FEED = """
try:
    import machine
    machine.WDT(timeout=30000).feed()
except Exception:
    pass
"""


class DeviceError(Exception):
    """The board did not do what was asked; the message says what to check."""


def no_repl_hint(port: str) -> str:
    return (
        f"no MicroPython prompt on {port}: is MicroPython flashed (`sipas-provision "
        "flash-micropython`)? Close any other program using the port (a serial monitor, Thonny, "
        "another sipas-provision), then unplug and replug the board"
    )


class Device:
    """One open connection to a board. Use as a context manager."""

    def __init__(self, port: str, baud: int = BAUD) -> None:
        self.port = port
        try:
            self.t = SerialTransport(port, baudrate=baud, timeout=2)
        except (TransportError, OSError) as e:
            raise DeviceError(open_error(port, e)) from e
        self._raw = False

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            if self._raw:
                self.t.exit_raw_repl()
            self.t.close()
        except (OSError, TransportError):
            pass

    def enter_raw(self, soft_reset: bool = False, timeout: float = 5) -> None:
        """Stop what runs (Ctrl-C) and take the raw REPL; ``soft_reset`` restarts the
        interpreter first (boot.py runs again, main.py does not)."""
        self._settle()
        try:
            self.t.enter_raw_repl(soft_reset=soft_reset, timeout_overall=timeout)
        except (TransportError, OSError) as e:
            raise DeviceError(no_repl_hint(self.port)) from e
        self._raw = True

    def _settle(self, quiet: float = 0.3, limit: float = 3.0) -> None:
        # A board that was just reset prints its ROM and boot output for a moment: a Ctrl-C sent
        # then is lost, and the output would be read as the REPL's answer. Wait for silence.
        ser = self.t.serial
        end = time.monotonic() + limit
        last = time.monotonic()
        while time.monotonic() < end and time.monotonic() - last < quiet:
            if ser.in_waiting:
                ser.read(ser.in_waiting)
                last = time.monotonic()
            else:
                time.sleep(0.02)

    def exec(self, code: str, timeout: float = 10) -> str:
        """Run ``code`` on the board; its output. A Python error there raises DeviceError."""
        try:
            out, err = self.t.exec_raw(textwrap.dedent(code), timeout=timeout)
        except (TransportError, OSError) as e:
            raise DeviceError(
                f"the board on {self.port} stopped answering ({e}): check the USB cable, then "
                "unplug and replug the board and run the command again"
            ) from e
        if err:
            raise DeviceError(f"the board on {self.port} reported an error: {err.decode()[-400:]}")
        return str(out.decode(errors="replace"))

    def exec_json(self, code: str, timeout: float = 10) -> Any:
        out = self.exec(code, timeout)
        try:
            return json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError) as e:
            raise DeviceError(f"unexpected answer from the board on {self.port}: {out!r}") from e

    def sha256(self, paths: list[str]) -> dict[str, str | None]:
        """sha256 (hex) of each file on the board; None for a missing file."""
        if not paths:
            return {}
        out: dict[str, str | None] = self.exec_json(_HASHES % json.dumps(paths), timeout=30)
        return out

    def listdir(self, path: str) -> list[tuple[str, bool]] | None:
        """(name, is_dir) of each entry, or None if ``path`` does not exist."""
        out = self.exec_json(_LISTDIR % path)
        return None if out is None else [(str(n), bool(d)) for n, d in out]

    def mkdir(self, path: str) -> None:
        self.exec(f"import os\nos.mkdir({path!r})")

    def remove(self, path: str) -> None:
        self.exec(f"import os\nos.remove({path!r})")

    def rename(self, old: str, new: str) -> None:
        self.exec(f"import os\nos.rename({old!r}, {new!r})")

    def rmtree(self, path: str) -> int:
        """Remove a directory and everything in it; the number of files removed (0 if absent)."""
        return int(self.exec(_RMTREE % path, timeout=30).strip() or 0)

    def feed_watchdog(self) -> None:
        self.exec(_FEED)

    def write_file(
        self, path: str, data: bytes, progress: Callable[[int, int], None] | None = None
    ) -> None:
        try:
            self.t.fs_writefile(path, data, chunk_size=CHUNK, progress_callback=progress)
        except TransportExecError as e:
            raise DeviceError(
                f"writing {path} on the board failed: {e.error_output.strip()[-300:]}"
            ) from e
        except (TransportError, OSError) as e:
            raise DeviceError(
                f"writing {path} on the board failed ({e}): check the USB cable and that the "
                "board's flash is not full, then run the command again"
            ) from e

    def hard_reset(self) -> None:
        """machine.reset(): the board restarts (boot.py, then main.py). Closes the connection."""
        try:
            self.t.exec_raw_no_follow("import machine\nmachine.reset()")
        except (TransportError, OSError) as e:
            raise DeviceError(f"could not reset the board on {self.port}: {e}") from e
        self._raw = False
        self.close()


def open_error(port: str, e: BaseException) -> str:
    text = str(e)
    if "ermission" in text or getattr(e, "errno", None) == 13:
        return (
            f"no permission to open {port}: add yourself to the 'dialout' group "
            "(`sudo usermod -aG dialout $USER`, then log out and in again)"
        )
    if "busy" in text.lower() or "lock" in text.lower():
        return f"{port} is in use by another program (a serial monitor, Thonny?): close it"
    return (
        f"cannot open {port} ({text}): check the port name (`sipas-provision ports`) and the "
        "USB cable"
    )
