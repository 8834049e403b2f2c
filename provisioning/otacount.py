"""The terminal's update counter (``/ota_count``), written when a terminal is provisioned over USB.

The firmware refuses an ``update`` command whose signed count is not above ``/ota_count``
(firmware/app/ota.py, docs/protocol.md "Replay and downgrade"). Erasing the flash loses that file,
so a command signed before the erase (and captured on the network) would pass again. Provisioning
therefore writes the count a hub would sign with right now, in the format the firmware reads
(decimal text, written to ``/ota_count.tmp`` and renamed over it), and never lowers a count the
board already holds. The hub signs with at least its clock (``hub.firmware.next_update_count``),
so its next update is above it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import time
from pathlib import Path

MAX_COUNT = 0xFFFFFFFF  # counts are u32 (firmware/app/ota.py)
# A computer clock before this is wrong (no RTC, never synchronised): a count taken from it
# would not cover the commands signed before the erase.
EARLIEST = int(dt.datetime(2025, 1, 1, tzinfo=dt.UTC).timestamp())
DEVICE_PATH = "/ota_count"

# Runs on the board (MicroPython: no f-strings). Prints [count on the board now, written?].
_SEED = """
import os, json
def _sipas_seed(p, n):
    try:
        with open(p) as f:
            old = int(f.read())
    except (OSError, ValueError):
        old = 0
    if old >= n:
        return [old, False]
    with open(p + '.tmp', 'w') as f:
        f.write(str(n))
    os.rename(p + '.tmp', p)
    return [n, True]
print(json.dumps(_sipas_seed(%r, %d)))
"""


class ClockError(Exception):
    """This computer's clock cannot give a count; the message says what to do."""


def count_now(now: float | None = None) -> int:
    """The count to write: the Unix second before the current one. Commands signed before it are
    refused; the hub's next one (its clock, even within this very second) is above it."""
    t = time.time() if now is None else now
    n = int(t) - 1
    if not EARLIEST <= n <= MAX_COUNT:
        shown = dt.datetime.fromtimestamp(max(0, min(int(t), MAX_COUNT)), dt.UTC)
        raise ClockError(
            f"this computer's clock says {shown:%d/%m/%Y %H:%M} UTC: set it to the right time "
            "(`timedatectl`, or connect it to the internet) and run the command again; the "
            "terminal's update counter is taken from it"
        )
    return n


def seed_code(path: str, n: int) -> str:
    """MicroPython code raising the counter at ``path`` to ``n`` (never lowering it); it prints
    ``[count now on the board, whether it was written]`` as JSON."""
    return _SEED % (path, n)


def seed_dir(root: Path, n: int) -> tuple[int, bool]:
    """The same on a directory standing for a board's flash (the simulated device)."""
    path = Path(root) / DEVICE_PATH.lstrip("/")
    old = 0
    with contextlib.suppress(OSError, ValueError):
        old = int(path.read_text())
    if old >= n:
        return old, False
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(str(n))
    os.replace(tmp, path)
    return n, True
