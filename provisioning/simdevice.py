"""A whole simulated terminal: its flash as a directory, booted in a child process like the chip.

The directory (the *device root*) holds what the ESP32's flash holds::

    ROOT/boot.py main.py ota_boot.py    fixed boot code (written over USB only)
    ROOT/app/*.py                       the application (what an update replaces)
    ROOT/config.json                    the terminal's configuration (its outbox_dir points into ROOT)
    ROOT/ota_count                      the update counter (raised to the clock at each install)
    ROOT/outbox/ ota.json bootfail      written by the terminal itself (app.new, app.old while updating)

Typical use (``sipas-provision simulate BUNDLE`` is built on this)::

    root = install(tmp / "t1", config=device)            # or install(..., bundle=BUNDLE_DIR)
    with SimDevice(root) as dev:                         # boots it; reboots it on every reset
        info = dev.wait_ready()                          # {"fw": "0.2.0", "ota": None, ...}
        seq = dev.press(1)                               # stored in its outbox (None: refused)
        dev.power_cut()                                  # SIGKILL, then it boots again
        dev.wait_ready(fw="0.3.0", ota="ok")             # e.g. after the hub's update

Each boot is one run of ``python -m provisioning.simrun --root ROOT``: ``ROOT/ota_boot.py`` runs
first (the update's swap, trial, rollback, the safe-mode counter), then the application imported
from ``ROOT/app`` (never from ``firmware/``) with the host board of :mod:`provisioning.simulate`.
``machine.reset()`` ends the process with :data:`EXIT_RESET` and the supervisor thread starts the
next boot, so new application code is imported fresh, as on the chip.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from provisioning import otacount
from provisioning.records import write_private
from provisioning.simrun import EXIT_RESET

REPO_ROOT = Path(__file__).resolve().parent.parent
FIRMWARE_DIR = REPO_ROOT / "firmware"
ROOT_FILES = ("boot.py", "main.py", "ota_boot.py")
# What a USB install starts afresh (the outbox is kept: it holds ratings not yet acknowledged).
_FRESH = ("app", "app.new", "app.old", "app.bad", "ota.json", "bootfail")


class SimDeviceError(Exception):
    """The simulated device did not do what was asked in time; the text says what it did."""


def _checked(bundle: Path, entry: dict[str, Any]) -> Path:
    rel = Path(str(entry.get("path")))
    src = bundle / rel
    if rel.is_absolute() or ".." in rel.parts:
        raise SimDeviceError(f"{bundle}: manifest lists a path outside the bundle: {rel}")
    try:
        data = src.read_bytes()
    except OSError as e:
        raise SimDeviceError(f"{bundle}: {rel} is listed in the manifest but missing") from e
    if len(data) != entry.get("size") or hashlib.sha256(data).hexdigest() != entry.get("sha256"):
        raise SimDeviceError(f"{bundle}: {rel} does not match the manifest: the bundle was altered")
    return src


def _bundle_files(bundle: Path) -> tuple[dict[str, Path], dict[str, Path], Path | None]:
    """(root files, app .py files, config) of a bundle, every file checked against the manifest.
    A device bundle carries .mpy files: the simulator runs their ``sources`` instead."""
    try:
        m = json.loads((bundle / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        raise SimDeviceError(f"{bundle} is not a bundle (manifest.json: {e})") from e
    roots = {Path(e["path"]).name: _checked(bundle, e) for e in m.get("root") or []}
    app = {Path(e["path"]).name: _checked(bundle, e) for e in m.get("app") or []}
    if any(name.endswith(".mpy") for name in app):
        app = {
            Path(e["path"]).name: _checked(bundle, e)
            for e in m.get("sources") or []
            if str(e.get("path", "")).startswith("src/app/")
        }
        if not app:
            raise SimDeviceError(
                f"{bundle} has only .mpy application files and no sources: the simulator runs .py "
                "(build it with its sources, or for the simulator)"
            )
    config = _checked(bundle, m["config"]) if m.get("config") else None
    return roots, app, config


def install(
    root: Path,
    *,
    config: dict[str, Any] | Path | None = None,
    bundle: Path | None = None,
    firmware_dir: Path = FIRMWARE_DIR,
) -> Path:
    """Write a device root, as provisioning over USB does; returns ``root``.

    The fixed boot code and the application come from ``bundle`` (a directory with manifest.json,
    every file checked) or else from the firmware tree. ``config`` (a dict or a JSON file; else
    the bundle's config.json) is written to ``ROOT/config.json`` with ``outbox_dir`` pointing into
    the root. The outbox of an earlier install is kept; update state (``ota.json``, ``bootfail``,
    ``app.*``) starts afresh. ``ota_count`` is raised to the clock, never lowered, as ``deploy``
    does on a board (provisioning/otacount.py): update commands signed before are refused.
    """
    root = Path(root)
    if bundle is not None:
        roots, app, bundle_config = _bundle_files(Path(bundle))
    else:
        roots = {n: firmware_dir / n for n in ROOT_FILES if (firmware_dir / n).is_file()}
        app = {p.name: p for p in sorted((firmware_dir / "app").glob("*.py"))}
        bundle_config = None
    if not app:
        raise SimDeviceError(f"no application files to install into {root}")
    cfg: dict[str, Any]
    if isinstance(config, Path):
        cfg = json.loads(config.read_text())
    elif config is not None:
        cfg = dict(config)
    elif bundle_config is not None:
        cfg = json.loads(bundle_config.read_text())
    else:
        raise SimDeviceError("no configuration: give config=, or a bundle built with one")
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)  # its config.json holds the terminal's keys and passwords
    for name in _FRESH:
        p = root / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    for name, src in roots.items():
        shutil.copyfile(src, root / name)
    (root / "app").mkdir()
    for name, src in app.items():
        shutil.copyfile(src, root / "app" / name)
    cfg["outbox_dir"] = str(root.resolve() / "outbox")
    write_private(root / "config.json", json.dumps(cfg).encode())  # mode 0600, as the record
    try:
        otacount.seed_dir(root, otacount.count_now())
    except otacount.ClockError as e:
        raise SimDeviceError(str(e)) from e
    return root


class _Life:
    """One boot of the device: a child process and the lines it printed."""

    def __init__(self, n: int, proc: subprocess.Popen[bytes]) -> None:
        self.n = n
        self.proc = proc
        self.lines: list[str] = []
        self.code: int | None = None


class SimDevice:
    """A device root run like the chip: boots in a child process, boots again after every reset.

    ``trial_s`` is the trial reset timer (600 s on the device) and ``crash_delay_s`` the pause
    before a crashed application resets (10 s on the device); tests shorten both. ``network``
    False boots with Wi-Fi down (see :meth:`network`). Child stderr goes to ``log`` (default
    ``ROOT.log`` beside the root). Use as a context manager, or call :meth:`start` and
    :meth:`stop`.
    """

    def __init__(
        self,
        root: Path,
        *,
        trial_s: float = 600.0,
        crash_delay_s: float = 10.0,
        network: bool = True,
        log: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        self.trial_s = trial_s
        self.crash_delay_s = crash_delay_s
        self.network_on = network
        self.log = Path(log) if log is not None else self.root.with_name(self.root.name + ".log")
        self.env = env or {}
        self.lives: list[_Life] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._reboot_after_kill = False
        self._supervisor: threading.Thread | None = None

    # -- life cycle -----------------------------------------------------------------------------
    def __enter__(self) -> SimDevice:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> SimDevice:
        """Power on: boot, and keep booting after every reset until :meth:`stop`."""
        if self._supervisor is not None:
            raise SimDeviceError("already started")
        self._stopping = False
        self._supervisor = threading.Thread(
            target=self._supervise, name=f"simdevice-{self.root.name}", daemon=True
        )
        self._supervisor.start()
        self.wait_for(lambda: bool(self.lives), 10, "the first boot did not start")
        return self

    def _spawn(self) -> _Life:
        cmd = [sys.executable, "-m", "provisioning.simrun", "--root", str(self.root)]
        cmd += ["--trial-s", str(self.trial_s), "--crash-delay", str(self.crash_delay_s)]
        if not self.network_on:
            cmd.append("--network-off")
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **self.env}
        with open(self.log, "ab") as err:
            proc = subprocess.Popen(
                cmd,
                env=env,
                cwd=REPO_ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        return _Life(len(self.lives) + 1, proc)

    def _supervise(self) -> None:
        while True:
            life = self._spawn()
            with self._cond:
                self.lives.append(life)
                self._cond.notify_all()
            assert life.proc.stdout is not None
            for raw in life.proc.stdout:
                with self._cond:
                    life.lines.append(raw.decode(errors="replace").rstrip("\n"))
                    self._cond.notify_all()
            code = life.proc.wait()
            with self._cond:
                life.code = code
                again = not self._stopping and (
                    code == EXIT_RESET or (code == -signal.SIGKILL and self._reboot_after_kill)
                )
                self._reboot_after_kill = False
                self._cond.notify_all()
            for f in (life.proc.stdin, life.proc.stdout):
                if f is not None:
                    with contextlib.suppress(OSError):  # a broken pipe to a process that is gone
                        f.close()
            if not again:
                return

    def stop(self, timeout: float = 10) -> None:
        """Switch off cleanly (end of input: the application disconnects), no reboot."""
        self._stopping = True
        life = self.current
        if life is not None and life.code is None:
            try:
                assert life.proc.stdin is not None
                life.proc.stdin.close()
                life.proc.wait(timeout)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                life.proc.kill()
        if self._supervisor is not None:
            self._supervisor.join(timeout)
        self._supervisor = None

    def power_cut(self, *, restart: bool = True) -> None:
        """SIGKILL the running boot, as pulling the plug would; with ``restart`` it boots again."""
        life = self.current
        if life is None or life.code is not None:
            raise SimDeviceError("the device is not running")
        with self._cond:
            self._reboot_after_kill = restart
            if not restart:
                self._stopping = True
        life.proc.send_signal(signal.SIGKILL)
        self.wait_for(lambda: life.code is not None, 10, "the killed process did not end")
        if restart:
            self.wait_for(lambda: len(self.lives) > life.n, 10, "it did not boot again")

    # -- what it printed ----------------------------------------------------------------------
    @property
    def current(self) -> _Life | None:
        with self._cond:
            return self.lives[-1] if self.lives else None

    @property
    def boots(self) -> list[dict[str, Any]]:
        """What ota_boot decided at each boot so far (state, trial, tries, safe_mode)."""
        with self._cond:
            return [
                json.loads(x[5:])
                for life in self.lives
                for x in life.lines
                if x.startswith("boot ")
            ]

    def lines(self) -> list[str]:
        """Every line printed so far, each prefixed with its boot number (``3| ready {...}``)."""
        with self._cond:
            return [f"{life.n}| {x}" for life in self.lives for x in life.lines]

    def wait_for(self, pred: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait until ``pred()`` holds (checked whenever a line arrives or a boot ends); else
        SimDeviceError with ``what`` and the last lines printed."""
        with self._cond:
            if not self._cond.wait_for(pred, timeout):
                tail = "\n".join(self.lines()[-15:])
                raise SimDeviceError(
                    f"{self.root.name}: {what} within {timeout:g} s; it printed:\n{tail}"
                )

    def wait_ready(self, timeout: float = 20, **expect: Any) -> dict[str, Any]:
        """Wait until the current boot, or a later one, has its application running with a
        ``ready`` info matching ``expect`` (e.g. ``fw="0.2.0", safe_mode=False``). The info is taken
        after the loop's first turn: a version that connected at once may have confirmed its trial
        already (``ota`` "ok"; :attr:`boots` says how it booted). Returns that info."""
        found: dict[str, Any] = {}
        first = self.current.n if self.current is not None else 0

        def match() -> bool:
            for life in self.lives[max(first - 1, 0) :]:
                for x in life.lines:
                    if x.startswith("ready "):
                        info = json.loads(x[6:])
                        if all(info.get(k) == v for k, v in expect.items()):
                            found.update(info)
                            return True
            return False

        self.wait_for(match, timeout, f"no boot came up ready with {expect or 'anything'}")
        return found

    def wait_line(self, prefix: str, timeout: float = 20) -> str:
        """Wait until some boot printed a line starting with ``prefix``; returns the first."""
        got: list[str] = []

        def match() -> bool:
            got[:] = [x for life in self.lives for x in life.lines if x.startswith(prefix)]
            return bool(got)

        self.wait_for(match, timeout, f"no line starting with {prefix!r}")
        return got[0]

    # -- commands to the running application ------------------------------------------------
    def ask(self, command: str, answer: str, timeout: float = 10) -> str:
        """Send one stdin command to the running boot; returns its answer line (the first line
        after it starting with one of the ``|``-separated prefixes in ``answer``)."""
        life = self.current
        if life is None or life.code is not None:
            raise SimDeviceError(f"{self.root.name} is not running (it would not hear {command!r})")
        prefixes = tuple(answer.split("|"))
        with self._cond:
            start = len(life.lines)
        assert life.proc.stdin is not None
        try:
            life.proc.stdin.write((command + "\n").encode())
            life.proc.stdin.flush()
        except (BrokenPipeError, ValueError) as e:
            raise SimDeviceError(f"{self.root.name} reset before {command!r}") from e
        got: list[str] = []

        def done() -> bool:
            got[:] = [x for x in life.lines[start:] if x.startswith(prefixes)]
            return bool(got) or life.code is not None

        self.wait_for(done, timeout, f"no answer to {command!r}")
        if not got:
            raise SimDeviceError(f"{self.root.name} reset before answering {command!r}")
        return got[0]

    def press(self, level: int) -> int | None:
        """A rating; its sequence number once it is in the outbox, or None if refused (full)."""
        a = self.ask(f"press {level}", "stored|refused")
        return None if a == "refused" else int(a.split()[1])

    def depth(self) -> int:
        return int(self.ask("depth", "depth").split()[1])

    def info(self) -> dict[str, Any]:
        """fw, ota, safe_mode, online, depth, healthy of the running application."""
        data: dict[str, Any] = json.loads(self.ask("info", "info")[5:])
        return data

    def network(self, on: bool) -> None:
        """Switch the simulated Wi-Fi of the running boot (and of the boots after it)."""
        self.network_on = on
        self.ask("network " + ("on" if on else "off"), "network")

    def wait_until(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = 20, what: str = ""
    ) -> dict[str, Any]:
        """Poll :meth:`info` until ``pred(info)`` holds (through resets); returns that info."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | str = {}
        while time.monotonic() < deadline:
            try:
                last = self.info()
                if pred(last):
                    return last
            except SimDeviceError as e:
                last = str(e).splitlines()[0]
            time.sleep(0.1)
        tail = "\n".join(self.lines()[-15:])
        raise SimDeviceError(
            f"{self.root.name}: {what or 'condition'} not reached; last {last}\n{tail}"
        )
