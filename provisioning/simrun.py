"""One simulated terminal as its own process, so that a test can SIGKILL it like a power cut.

Two ways to run it: from a device configuration on the firmware tree (below), or booting a whole
device root like the chip does (``--root``, further below; :mod:`provisioning.simdevice` drives it).

``python -m provisioning.simrun CONFIG.json WORKDIR`` boots the firmware application from the
device configuration (its outbox, the "flash", in WORKDIR/outbox), prints ``ready`` and keeps
running its main loop while it reads commands from stdin, one a line:

- ``press LEVEL``: a rating; prints ``stored SEQ`` once ``App.press`` has returned (the rating is in
  the outbox: the citizen got the "saved" feedback), or ``refused`` (outbox full);
- ``depth``: prints ``depth N`` (ratings not yet acknowledged by the hub).

End of input stops it cleanly. ``SIPAS_SIM_SLOW_WRITES=MS`` makes every write of the outbox reach
the file in two halves, MS milliseconds apart, so that a kill can land in the middle of an append
and leave a torn slot. That models a filesystem without atomic appends, stricter than littlefs
(which commits an append whole on close): the outbox must cope with both.

``python -m provisioning.simrun --root ROOT [--trial-s S] [--crash-delay S] [--network-off]`` boots
a device root (a directory laid out like the terminal's flash, see :mod:`provisioning.simdevice`)
as the ESP32 does: ``ROOT/ota_boot.py`` (what ``boot.py`` runs: swap, trial, rollback, safe-mode
counter) prints ``boot {...}``; then, as ``main.py`` does, the application imported from
``ROOT/app`` (never from ``firmware/``) runs with a host board until the process ends. Its lines:

- ``boot {json}``: what ota_boot decided (state, trial, tries, safe_mode);
- ``ready {json}``: the application's loop is turning (fw, ota, safe_mode);
- ``crash TYPE: TEXT``: the application raised (a broken bundle); after ``--crash-delay`` seconds
  (10 on the device, for a technician's Ctrl-C) the process exits with :data:`EXIT_RESET`;
- ``reset WHY``: ``machine.reset()`` (a ``reboot`` or ``update`` command, or the trial timer of
  ``--trial-s`` seconds, 600 on the device): the process exits with :data:`EXIT_RESET`;
- answers to stdin commands: ``press LEVEL`` -> ``stored SEQ`` | ``refused``; ``depth`` ->
  ``depth N``; ``info`` -> ``info {json}``; ``network on|off`` -> ``network on|off``.

End of input stops it cleanly (exit 0), like unplugging the terminal after its outbox drained.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from provisioning.simulate import SimTerminal

EXIT_RESET = 75  # the process's exit code for machine.reset(): the supervisor boots it again


class _TornWrites:
    """A file whose every write goes to the OS in two halves with a pause between them."""

    def __init__(self, f: Any, delay: float) -> None:
        self._f, self._delay = f, delay

    def write(self, data: bytes | str) -> int:
        half = len(data) // 2
        self._f.write(data[:half])
        self._f.flush()
        time.sleep(self._delay)
        self._f.write(data[half:])
        self._f.flush()
        return len(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> _TornWrites:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()


def slow_outbox_writes(delay: float) -> None:
    """Route the outbox module's ``open`` (its files only) through :class:`_TornWrites`."""
    from app import outbox  # the firmware tree: on sys.path once provisioning.simulate is loaded

    def slow_open(path: str, mode: str = "r", *args: Any, **kw: Any) -> Any:
        f = open(path, mode, *args, **kw)  # noqa: SIM115  (the outbox closes it with `with`)
        return _TornWrites(f, delay) if any(c in mode for c in "wa") else f

    outbox.open = slow_open


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def command(sim: SimTerminal, words: list[str]) -> None:
    if words[:1] == ["press"]:
        seq = sim.press(int(words[1]))
        say("refused" if seq is None else f"stored {seq}")
    elif words == ["depth"]:
        say(f"depth {sim.depth()}")


def main(argv: list[str]) -> None:
    if argv[:1] == ["--root"]:
        device_main(argv)
        return
    from provisioning.simulate import SimTerminal, load_config

    slow_ms = float(os.environ.get("SIPAS_SIM_SLOW_WRITES") or 0)
    if slow_ms:
        slow_outbox_writes(slow_ms / 1000)
    sim = SimTerminal(load_config(Path(argv[0])), Path(argv[1]))
    say("ready")
    pending = b""
    while True:
        if select.select([0], [], [], 0.01)[0]:
            chunk = os.read(0, 4096)
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                command(sim, line.decode().split())
        sim.step(0)
    sim.stop()


# -- a whole device root, booted like the chip ------------------------------------------------
def _exit(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no clean-up, no DISCONNECT: the chip just restarts


def device_main(argv: list[str]) -> None:
    opts = {"--root": "", "--trial-s": "600", "--crash-delay": "10"}
    network = "--network-off" not in argv
    words = [w for w in argv if w != "--network-off"]
    for k, v in zip(words[::2], words[1::2], strict=False):
        if k not in opts:
            raise SystemExit(f"simrun: unknown option {k}")
        opts[k] = v
    root = Path(opts["--root"]).resolve()
    sys.path.insert(0, str(root))  # the device's own root files and app/, as on the ESP32
    # boot.py: the fixed boot code, which must always return
    res: dict[str, Any] = {}
    try:
        ota_boot: Any = importlib.import_module("ota_boot")  # ROOT/ota_boot.py, the device's
        res = ota_boot.boot(str(root))
    except Exception as e:
        traceback.print_exc()
        say(f"boot-error {e!r}")
    say("boot " + json.dumps(res))
    trial_s = float(opts["--trial-s"])
    if res.get("trial"):

        def trial_over() -> None:
            if ota_boot.in_trial(str(root)):
                say("reset trial timer")
                _exit(EXIT_RESET)

        timer = threading.Timer(trial_s, trial_over)
        timer.daemon = True
        timer.start()
    # main.py: the application; if it raises, wait (a technician's Ctrl-C) and reset
    try:
        _run_app(root, network)
    except BaseException as e:
        traceback.print_exc()
        say(f"crash {type(e).__name__}: {e}")
        time.sleep(float(opts["--crash-delay"]))
        _exit(EXIT_RESET)


def _run_app(root: Path, network: bool) -> None:
    import app  # ROOT/app: the device's application package, not firmware/app

    app.__path__ = [str(root / "app")]  # even if a bundle has no app/__init__.py
    from provisioning.simulate import FIRMWARE_DIR, HostBoard

    # provisioning.simulate puts firmware/ on sys.path for its own use; this device runs only what
    # is in its root (the `app` package above is already bound to ROOT/app).
    while str(FIRMWARE_DIR) in sys.path:
        sys.path.remove(str(FIRMWARE_DIR))
    from app import start

    class DeviceBoard(HostBoard):
        """The host board of a device root: machine.reset() ends the process (the supervisor
        boots it again); Wi-Fi is up unless switched off with the ``network`` command."""

        def __init__(self, levels: int = 3) -> None:
            super().__init__()
            self.levels = levels
            self.network = network

        def reset(self) -> None:
            say("reset machine.reset()")
            _exit(EXIT_RESET)

        def start_watchdog(self, timeout_ms: int = 30000) -> None:
            pass

        def connect_wifi(self, ssid: str, password: str) -> None:
            pass  # the simulated Wi-Fi follows the `network on|off` command

        def sync_ntp(self) -> bool:
            return True  # the host's clock is right

    control = _Control()
    start.run(str(root), make_board=DeviceBoard, each=control.each)


class _Control:
    """The stdin commands, served once per turn of the application's main loop."""

    def __init__(self) -> None:
        self.ready = False
        self.pending = b""

    def info(self, app: Any) -> dict[str, Any]:
        fw = getattr(sys.modules.get("app.app"), "FW_VERSION", None)
        return {
            "fw": fw,
            "ota": app.ota,
            "safe_mode": app.safe_mode,
            "online": app.online(),
            "depth": app.outbox.depth(),
            "healthy": app.healthy,
        }

    def each(self, app: Any) -> None:
        if app is None:  # not provisioned: nothing to drive
            return
        if not self.ready:
            self.ready = True
            say("ready " + json.dumps(self.info(app)))
        if not select.select([0], [], [], 0)[0]:
            return
        chunk = os.read(0, 4096)
        if not chunk:  # end of input: a clean stop
            if app.client is not None:
                app.client.disconnect()
            _exit(0)
        *lines, self.pending = (self.pending + chunk).split(b"\n")
        for line in lines:
            self.command(app, line.decode().split())

    def command(self, app: Any, words: list[str]) -> None:
        if words[:1] == ["press"]:
            seq = app.press(int(words[1]))
            say("refused" if seq is None else f"stored {seq}")
        elif words == ["depth"]:
            say(f"depth {app.outbox.depth()}")
        elif words == ["info"]:
            say("info " + json.dumps(self.info(app)))
        elif words[:1] == ["network"] and words[1:] in (["on"], ["off"]):
            app.board.network = words[1] == "on"
            say(f"network {words[1]}")


if __name__ == "__main__":
    main(sys.argv[1:])
