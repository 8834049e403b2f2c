"""Shared machinery of the firmware benchmarks (``bench/firmware_*.py``): an office whose hub runs
in its own process with its own Mosquitto on a free loopback port (``bench/_common.py``),
simulated terminals (the real ``firmware/app`` code on CPython, ``provisioning/simulate.py``), and
a probe of the board's feedback.

Probes and the scripts' own wrappers are installed at run time in the benchmark's process only;
no firmware or hub file is changed. Times are ``time.perf_counter()``.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "firmware"):  # the firmware's `import app.*`, as on the device
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from bench._common import HUB_USER, HubProcess, Office, say, summary  # noqa: E402

__all__ = [
    "HUB_USER",
    "FeedbackProbe",
    "HubProcess",
    "Office",
    "fs_type",
    "go_offline",
    "go_online",
    "new_terminal",
    "office_with_hub",
    "say",
    "summary",
    "wait_online",
]
from provisioning.simulate import SimTerminal  # noqa: E402


@contextlib.contextmanager
def office_with_hub(terminals: int = 1) -> Iterator[tuple[Office, HubProcess, Path]]:
    """An office of ``terminals`` registered terminals: a temporary directory, a Mosquitto
    configured by the hub's own code on a free loopback port, and the hub (API off) in its own
    process, as on the office's Raspberry Pi (its interpreter lock is not the terminal's).
    Everything is stopped and removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="sipas-bench-fw-") as tmp:
        work = Path(tmp)
        with Office(work, terminals) as office:
            hub = HubProcess(office.hub_settings())
            hub.start()
            try:
                yield office, hub, work
            finally:
                hub.stop()


def new_terminal(office: Office, index: int, **cfg: Any) -> SimTerminal:
    """Simulated terminal number ``index`` of the office; ``cfg`` overrides its configuration."""
    device = dict(office.devices[index])
    device.update(cfg)
    return SimTerminal(device, office.workdir / f"terminal-{index}")


def wait_online(term: SimTerminal, timeout: float = 10) -> None:
    app = term.app
    deadline = time.monotonic() + timeout
    while not app.online():
        app._wait_from = None  # no back-off wait: connect now
        app.step(5)
        if time.monotonic() > deadline:
            raise SystemExit("the simulated terminal did not connect to the hub")


def go_offline(term: SimTerminal) -> None:
    """Wi-Fi down: the link is dropped and no new connection can be opened."""
    term.board.network = False
    if term.app.client is not None:
        term.app._drop("bench: network off")


def go_online(term: SimTerminal) -> None:
    term.board.network = True
    term.app._wait_from = None  # the next step connects at once (no back-off left to wait)


class FeedbackProbe:
    """Timestamps the board's ``feedback()`` calls (the LED and the tone on the device)."""

    def __init__(self, board: Any) -> None:
        self.board = board
        self.calls: list[tuple[float, str, int]] = []
        orig = board.feedback

        def feedback(kind: str, level: int) -> None:
            self.calls.append((time.perf_counter(), kind, level))
            orig(kind, level)

        board.feedback = feedback


def fs_type(path: Path) -> str:
    """The type of the file system holding ``path`` (from /proc/mounts), e.g. ext4, tmpfs."""
    best, kind = "", "unknown"
    try:
        rp = str(path.resolve())
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if (
                len(parts) >= 3
                and (rp == parts[1] or rp.startswith(parts[1].rstrip("/") + "/"))
                and len(parts[1]) > len(best)
            ):
                best, kind = parts[1], parts[2]
    except OSError:
        pass
    return kind
