"""Wire protocol version 1, hub side (docs/protocol.md is the specification).

Written independently of ``firmware/app/codec.py``: both are checked against the shared vectors in
``tests/contract/vectors.json``, so a drift on either side fails a test instead of a rating.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import struct
from dataclasses import dataclass

PREFIX = "sipas/v1"
RECORD_SIZE = 48
MAX_PAYLOAD = 4096  # nothing a terminal sends in v1 comes near this; bigger is refused unread

FLAG_CLOCK_UNKNOWN = 1
FLAG_REPEAT = 2
FLAG_TEST = 4
FLAG_PROMPTED = 8
FLAG_FOLLOWUP = 16
_FLAGS_KNOWN = 31

TERMINAL_ID_RE = re.compile(r"^t-[0-9a-f]{12}$")
OFFICE_ID_RE = re.compile(r"^[a-z0-9-]{1,32}$")
LEAVES = ("rating", "status", "reply", "ack", "cmd")

_BODY = struct.Struct("<BBHIIBBBB")


class ProtocolError(ValueError):
    """A message that does not follow docs/protocol.md; the text says what is wrong."""


def topic(office: str, terminal_id: str, leaf: str) -> str:
    return f"{PREFIX}/{office}/{terminal_id}/{leaf}"


def parse_topic(t: str) -> tuple[str, str, str]:
    parts = t.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != PREFIX:
        raise ProtocolError(f"not a v1 topic: {t!r}")
    office, tid, leaf = parts[2:]
    if not OFFICE_ID_RE.fullmatch(office):
        raise ProtocolError(f"bad office id in topic: {office!r}")
    if not TERMINAL_ID_RE.fullmatch(tid):
        raise ProtocolError(f"bad terminal id in topic: {tid!r}")
    if leaf not in LEAVES:
        raise ProtocolError(f"unknown topic leaf: {leaf!r}")
    return office, tid, leaf


@dataclass(frozen=True)
class RatingRecord:
    flags: int
    epoch: int
    seq: int
    press_time: int
    level: int
    reason: int
    scale: int
    hub_tag: bytes
    district_tag: bytes
    body: bytes

    @property
    def clock_unknown(self) -> bool:
        return bool(self.flags & FLAG_CLOCK_UNKNOWN)

    @property
    def repeat(self) -> bool:
        return bool(self.flags & FLAG_REPEAT)

    @property
    def test(self) -> bool:
        return bool(self.flags & FLAG_TEST)

    @property
    def prompted(self) -> bool:
        return bool(self.flags & FLAG_PROMPTED)

    @property
    def followup(self) -> bool:
        return bool(self.flags & FLAG_FOLLOWUP)


def decode_rating(payload: bytes) -> RatingRecord:
    if len(payload) != RECORD_SIZE:
        raise ProtocolError(f"rating must be {RECORD_SIZE} bytes, got {len(payload)}")
    v, flags, epoch, seq, t, level, reason, scale, reserved = _BODY.unpack_from(payload)
    if v != 1:
        raise ProtocolError(f"unsupported record version {v}")
    if flags & ~_FLAGS_KNOWN:
        raise ProtocolError(f"unknown flag bits {flags:#04x}")
    if reserved:
        raise ProtocolError("reserved byte is not zero")
    if epoch == 0 or seq == 0:
        raise ProtocolError("epoch and seq start at 1")
    if scale not in (3, 4, 5):
        raise ProtocolError(f"scale must be 3, 4 or 5, got {scale}")
    if not 1 <= level <= scale:
        raise ProtocolError(f"level {level} is outside the {scale}-level scale")
    if reason > 4:
        raise ProtocolError(f"unknown reason code {reason}")
    return RatingRecord(
        flags, epoch, seq, t, level, reason, scale, payload[16:32], payload[32:48], payload[:16]
    )


def _tag(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()[:16]


def rating_message(terminal_id: str, body: bytes) -> bytes:
    return b"SIPAS-R1" + terminal_id.encode() + b"\x00" + body


def rating_tag(key: bytes, terminal_id: str, body: bytes) -> bytes:
    return _tag(key, rating_message(terminal_id, body))


def verify_tag(key: bytes, terminal_id: str, body: bytes, got: bytes) -> bool:
    return hmac.compare_digest(rating_tag(key, terminal_id, body), got)


def status_tag(key: bytes, terminal_id: str, epoch: int, last_seq: int, t: int) -> bytes:
    msg = b"SIPAS-S1" + terminal_id.encode() + b"\x00" + struct.pack("<HII", epoch, last_seq, t)
    return _tag(key, msg)


def encode_ack(
    epoch: int, seqs: list[int], status: str = "stored", reason: str | None = None
) -> bytes:
    msg: dict[str, object] = {"v": 1, "epoch": epoch, "seqs": seqs, "status": status}
    if reason:
        msg["reason"] = reason
    return json.dumps(msg, separators=(",", ":")).encode()


def encode_command(cid: str, cmd: str, args: dict[str, object] | None = None) -> bytes:
    msg: dict[str, object] = {"v": 1, "id": cid, "cmd": cmd}
    if args:
        msg["args"] = args
    return json.dumps(msg, separators=(",", ":")).encode()
