"""One simulated terminal as its own process, so that a test can SIGKILL it like a power cut.

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
"""

from __future__ import annotations

import os
import select
import sys
import time
from pathlib import Path
from typing import Any

from provisioning.simulate import SimTerminal, load_config


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


if __name__ == "__main__":
    main(sys.argv[1:])
