"""``verify``: the terminal boots, reaches the hub, and a technician test press round-trips.

1. Reset the board and watch its serial output (a crash or "not provisioned" stops here), while
   asking the hub (``GET /api/v1/terminals``) until the terminal is online with a boot counter
   past the one the hub knew: that heartbeat came from this boot.
2. Interrupt the application (Ctrl-C) and run it again from the raw REPL through the firmware's own
   entry, ``app.start.run("/", each=hook)``: the hook waits until the terminal is connected, makes
   one press with ``App.press(level, test=True)`` (the TEST flag: excluded from every report),
   and returns once the hub's acknowledgement has removed it from the outbox.
3. Find that rating through the hub's API (``GET /api/v1/ratings``), flagged as a test.
4. Reset the board, so the application runs as it will at the desk.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from provisioning.hubapi import HubClient, HubError
from provisioning.serial_device import Device, DeviceError

# Runs on the terminal (MicroPython): no f-strings. %(..)d are filled in by the tool.
_TEST_PRESS = """
import json
from app import start
class _SipasDone(Exception):
    pass
_s = {"seq": None, "acked": False, "error": None, "t0": None, "t1": None}
def _sipas_each(a):
    b = a.board
    now = b.ticks_ms()
    if _s["t0"] is None:
        _s["t0"] = now
    if _s["seq"] is None:
        if not a.online():
            if b.ticks_diff(now, _s["t0"]) > %(connect_ms)d:
                _s["error"] = "offline"
                raise _SipasDone()
            return
        _s["terminal"] = a.tid
        _s["epoch"] = a.cfg["epoch"]
        _s["seq"] = a.press(%(level)d, test=True)
        _s["t1"] = now
        if _s["seq"] is None:
            _s["error"] = "outbox full"
            raise _SipasDone()
        return
    if not [1 for s, r in a.outbox.pending(_s["seq"] - 1, 1) if s == _s["seq"]]:
        _s["acked"] = True
        _s["ms"] = b.ticks_diff(now, _s["t1"])
        raise _SipasDone()
    if b.ticks_diff(now, _s["t1"]) > %(ack_ms)d:
        raise _SipasDone()
try:
    start.run("/", each=_sipas_each)
except _SipasDone:
    pass
print(json.dumps(_s))
"""

BOOT_FAILURES = (
    (
        "not provisioned",
        "the terminal says it is not provisioned ({line}): its /config.json is missing or "
        "invalid. Run `sipas-provision deploy` with this terminal's bundle",
    ),
    (
        "Brownout detector",
        "the board lost power while starting (brownout): use a shorter or thicker USB cable, or "
        "a powered USB hub or charger",
    ),
    (
        "Guru Meditation",
        "the board crashed ({line}): flash MicroPython again (`sipas-provision "
        "flash-micropython`), then deploy",
    ),
    (
        "application failed",
        "the application failed at start ({line}); the output above says why. Deploy the "
        "bundle again; if it persists, report it with this output",
    ),
)


class VerifyError(Exception):
    """Verification failed; the message says what to check."""


@dataclass
class VerifyResult:
    terminal_id: str
    boot_lines: list[str] = field(default_factory=list)
    online_after_s: float = 0.0
    seq: int | None = None
    epoch: int | None = None
    rating_id: int | None = None
    roundtrip_ms: int | None = None


class VerifyProgress:
    def step(self, name: str) -> None: ...

    def serial_line(self, line: str) -> None: ...


def _terminal(hub: HubClient, terminal_id: str) -> dict[str, Any] | None:
    for t in hub.terminals():
        if t.get("id") == terminal_id:
            return t
    return None


def _boots(t: dict[str, Any] | None) -> int | None:
    b = (t or {}).get("boots")
    return int(b) if isinstance(b, int) else None


def find_rating(hub: HubClient, terminal_id: str, epoch: int, seq: int) -> dict[str, Any] | None:
    after = 0
    while True:
        page: list[dict[str, Any]] = hub._call(  # noqa: SLF001 - no ratings() in HubClient yet
            "GET",
            "/ratings",
            "listing ratings",
            params={"terminal": terminal_id, "after_id": after, "limit": 1000},
        )
        for r in page:
            if r.get("epoch") == epoch and r.get("seq") == seq:
                return r
        if len(page) < 1000:
            return None
        after = int(page[-1]["id"])


def watch_boot(
    dev: Device,
    hub: HubClient,
    terminal_id: str,
    *,
    timeout: float,
    ui: VerifyProgress,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[list[str], float]:
    """Reset the board and read its output until the hub reports this boot's heartbeat."""
    before = _boots(_terminal(hub, terminal_id))
    ser = dev.t.serial
    try:
        dev.t.exec_raw_no_follow("import machine\nmachine.reset()")
    except Exception as e:  # TransportError, OSError
        raise VerifyError(f"could not reset the board on {dev.port}: {e}") from e
    start = clock()
    lines: list[str] = []
    partial = b""
    next_poll = start + 1.0
    while clock() - start < timeout:
        try:
            chunk = ser.read(ser.in_waiting or 1)
        except OSError as e:
            raise VerifyError(
                f"the serial port {dev.port} went away while the board booted ({e}): check the "
                "USB cable"
            ) from e
        partial += chunk
        while b"\n" in partial:
            raw, partial = partial.split(b"\n", 1)
            line = raw.decode(errors="replace").strip()
            if not line:
                continue
            lines.append(line)
            ui.serial_line(line)
            for needle, message in BOOT_FAILURES:
                if needle in line:
                    raise VerifyError(message.format(line=line))
            if line.startswith("Traceback"):
                tail = _read_traceback(ser, partial)
                raise VerifyError(
                    f"the application crashed at boot: {tail}. Deploy the bundle again "
                    "(`sipas-provision deploy`); if it persists, report it with this output"
                )
        if clock() >= next_poll:
            next_poll = clock() + 1.0
            t = _terminal(hub, terminal_id)
            if t and t.get("online") and (before is None or (_boots(t) or 0) > before):
                return lines, clock() - start
    raise VerifyError(
        f"{terminal_id} did not reach the hub within {timeout:.0f} s of booting. Check the Wi-Fi "
        "name and password in its bundle (`sipas-provision build`), that the office Wi-Fi "
        "reaches the hub's address, and that the hub runs (`sipas-hub broker status`). "
        "Serial output: " + (" | ".join(lines[-5:]) or "nothing")
    )


def _read_traceback(ser: Any, partial: bytes) -> str:
    end = time.monotonic() + 2
    data = partial
    while time.monotonic() < end and b">>>" not in data:
        data += ser.read(ser.in_waiting or 1)
    lines = [x.strip() for x in data.decode(errors="replace").splitlines() if x.strip()]
    errors = [x for x in lines if not x.startswith(("File ", ">>>", "MicroPython", "Type "))]
    return errors[-1] if errors else "no detail"


def verify(
    port: str,
    terminal_id: str,
    hub: HubClient,
    *,
    boot_timeout: float = 60,
    ack_timeout: float = 30,
    level: int = 1,
    progress: VerifyProgress | None = None,
    device_factory: Callable[[str], Device] = Device,
) -> VerifyResult:
    ui = progress or VerifyProgress()
    result = VerifyResult(terminal_id)
    try:
        known = _terminal(hub, terminal_id)
    except HubError as e:
        raise VerifyError(str(e)) from e
    if known is None:
        raise VerifyError(
            f"{terminal_id} is not registered at the hub {hub.base}: run `sipas-provision "
            "register` first (or check --hub)"
        )
    if known.get("active") is False:
        raise VerifyError(f"{terminal_id} is retired at the hub: it cannot be verified")
    try:
        with device_factory(port) as dev:
            ui.step("boot")
            dev.enter_raw(soft_reset=False)
            lines, after = watch_boot(dev, hub, terminal_id, timeout=boot_timeout, ui=ui)
            result.boot_lines, result.online_after_s = lines, after
        with device_factory(port) as dev:
            ui.step("test press")
            dev.enter_raw(soft_reset=False)  # Ctrl-C: the application stops where it was
            code = _TEST_PRESS % {
                "connect_ms": int(boot_timeout * 1000),
                "level": level,
                "ack_ms": int(ack_timeout * 1000),
            }
            state = dev.exec_json(code, timeout=boot_timeout + ack_timeout + 10)
            if state.get("terminal") not in (None, terminal_id):
                raise VerifyError(
                    f"the board on {port} is {state.get('terminal')}, not {terminal_id}: wrong "
                    "board or wrong record"
                )
            if state.get("error") == "offline":
                raise VerifyError(
                    f"{terminal_id} did not connect to the hub again for the test press: check "
                    "the Wi-Fi signal at the desk and run verify again"
                )
            if state.get("error"):
                raise VerifyError(f"the test press was refused: {state['error']}")
            result.seq, result.epoch = state.get("seq"), state.get("epoch")
            if not state.get("acked"):
                raise VerifyError(
                    f"the test press (seq {result.seq}) is stored on the terminal but the hub did "
                    f"not acknowledge it within {ack_timeout:.0f} s: check the hub's log "
                    "(`journalctl -u sipas-hub`); the terminal sends it again by itself"
                )
            result.roundtrip_ms = state.get("ms")
            ui.step("hub")
            assert result.seq is not None and result.epoch is not None
            rating = find_rating(hub, terminal_id, result.epoch, result.seq)
            if rating is None:
                raise VerifyError(
                    f"the terminal got an acknowledgement for seq {result.seq} but the hub's API "
                    "does not list it: is --hub the hub this terminal reports to?"
                )
            if not rating.get("test"):
                raise VerifyError(
                    f"rating {rating.get('id')} is stored without the TEST flag: it would count "
                    "in reports. Exclude it (`sipas-hub rating exclude`) and report this"
                )
            result.rating_id = int(rating["id"])
            ui.step("reset")
            dev.hard_reset()
    except DeviceError as e:
        raise VerifyError(str(e)) from e
    except HubError as e:
        raise VerifyError(str(e)) from e
    return result
