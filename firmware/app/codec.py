# Rating record and heartbeat encoding, and HMAC-SHA256 signing (docs/protocol.md, version 1).
# Pure logic: runs on MicroPython (ESP32 and wasm) and CPython alike.
import hashlib
import struct

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


VERSION = const(1)
RECORD_SIZE = const(48)
BODY_SIZE = const(16)
TAG_SIZE = const(16)

FLAG_CLOCK_UNKNOWN = const(1)
FLAG_REPEAT = const(2)
FLAG_TEST = const(4)
FLAG_PROMPTED = const(8)
FLAG_FOLLOWUP = const(16)
FLAGS_KNOWN = const(31)

REASON_NONE = const(0)
REASON_MAX = const(4)

_BODY_FMT = "<BBHIIBBBB"
_RATING_PREFIX = b"SIPAS-R1"
_STATUS_PREFIX = b"SIPAS-S1"
_BLOCK = const(64)


def is_negative(level, scale):
    # Levels that count as dissatisfied: the last one on 3 levels, the last two on 4 and 5.
    return level > scale - (1 if scale == 3 else 2)


def hmac_sha256(key, msg):
    # HMAC (RFC 2104) over hashlib.sha256: the ESP32 build has no hmac module.
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key + b"\x00" * (_BLOCK - len(key))
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    inner.update(msg)
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    outer.update(inner.digest())
    return outer.digest()


def tag(key, msg):
    return hmac_sha256(key, msg)[:TAG_SIZE]


def rating_message(terminal_id, body):
    return _RATING_PREFIX + terminal_id.encode() + b"\x00" + body


def encode_body(flags, epoch, seq, press_time, level, reason, scale):
    check_fields(flags, epoch, seq, press_time, level, reason, scale)
    return struct.pack(_BODY_FMT, VERSION, flags, epoch, seq, press_time, level, reason, scale, 0)


def check_fields(flags, epoch, seq, press_time, level, reason, scale):
    if flags & ~FLAGS_KNOWN:
        raise ValueError("unknown flag bits")
    if not 1 <= epoch <= 0xFFFF:
        raise ValueError("epoch out of range")
    if not 1 <= seq <= 0xFFFFFFFF:
        raise ValueError("seq out of range")
    if not 0 <= press_time <= 0xFFFFFFFF:
        raise ValueError("press_time out of range")
    if scale not in (3, 4, 5):
        raise ValueError("scale must be 3, 4 or 5")
    if not 1 <= level <= scale:
        raise ValueError("level out of range for scale")
    if not REASON_NONE <= reason <= REASON_MAX:
        raise ValueError("reason out of range")


def encode_rating(
    terminal_id, hub_key, district_key, flags, epoch, seq, press_time, level, reason=0, scale=3
):
    body = encode_body(flags, epoch, seq, press_time, level, reason, scale)
    msg = rating_message(terminal_id, body)
    return body + tag(hub_key, msg) + tag(district_key, msg)


def decode_rating(record):
    # Returns (version, flags, epoch, seq, press_time, level, reason, scale, hub_tag, district_tag);
    # raises ValueError on a malformed record. Tags are not checked here (see verify_rating).
    if len(record) != RECORD_SIZE:
        raise ValueError("record must be 48 bytes")
    v, flags, epoch, seq, t, level, reason, scale, res = struct.unpack(
        _BODY_FMT, record[:BODY_SIZE]
    )
    if v != VERSION:
        raise ValueError("unsupported record version")
    if res:
        raise ValueError("reserved byte set")
    check_fields(flags, epoch, seq, t, level, reason, scale)
    return (
        v,
        flags,
        epoch,
        seq,
        t,
        level,
        reason,
        scale,
        bytes(record[BODY_SIZE:32]),
        bytes(record[32:48]),
    )


def _eq(a, b):
    # Constant-time comparison of two byte strings of equal length.
    if len(a) != len(b):
        return False
    d = 0
    for i in range(len(a)):
        d |= a[i] ^ b[i]
    return d == 0


def verify_rating(terminal_id, key, record, district=False):
    msg = rating_message(terminal_id, bytes(record[:BODY_SIZE]))
    got = record[32:48] if district else record[BODY_SIZE:32]
    return _eq(tag(key, msg), got)


def status_message(terminal_id, epoch, last_seq, t):
    return _STATUS_PREFIX + terminal_id.encode() + b"\x00" + struct.pack("<HII", epoch, last_seq, t)
