"""Small builders shared by the tests: signed rating records as a terminal makes them."""

from __future__ import annotations

import time
from datetime import datetime
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
