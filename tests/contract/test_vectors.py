"""The shared vectors of docs/protocol.md, checked on the hub (CPython) and the firmware (MicroPython).

The firmware half runs ``firmware/app/codec.py`` under real MicroPython (wasm), the hub half runs
``hub/protocol.py``; the two implementations share no code, so agreement here is agreement on the
wire.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hub import protocol

pytestmark = pytest.mark.contract
VECTORS = json.loads((Path(__file__).parent / "vectors.json").read_text())


@pytest.mark.parametrize("v", VECTORS["ratings"], ids=lambda v: f"seq{v['seq']}")
def test_hub_decodes_and_verifies_rating(v: dict) -> None:
    rec = bytes.fromhex(v["record"])
    r = protocol.decode_rating(rec)
    assert (r.flags, r.epoch, r.seq, r.press_time, r.level, r.reason, r.scale) == (
        v["flags"],
        v["epoch"],
        v["seq"],
        v["press_time"],
        v["level"],
        v["reason"],
        v["scale"],
    )
    assert protocol.verify_tag(bytes.fromhex(v["hub_key"]), v["terminal_id"], r.body, r.hub_tag)
    assert protocol.verify_tag(
        bytes.fromhex(v["district_key"]), v["terminal_id"], r.body, r.district_tag
    )
    # The hub key must not verify the district tag: the two tags are independent.
    assert not protocol.verify_tag(
        bytes.fromhex(v["hub_key"]), v["terminal_id"], r.body, r.district_tag
    )


@pytest.mark.parametrize("v", VECTORS["invalid_ratings"], ids=lambda v: v["why"])
def test_hub_refuses_invalid_record(v: dict) -> None:
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_rating(bytes.fromhex(v["record"]))


@pytest.mark.parametrize("v", VECTORS["tampered_ratings"], ids=lambda v: v["why"])
def test_hub_detects_tampering(v: dict) -> None:
    key = bytes.fromhex(VECTORS["ratings"][0]["hub_key"])
    r = protocol.decode_rating(bytes.fromhex(v["record"]))
    assert not protocol.verify_tag(key, v["terminal_id"], r.body, r.hub_tag)


@pytest.mark.parametrize("v", VECTORS["status"], ids=lambda v: v["terminal_id"])
def test_hub_status_tags(v: dict) -> None:
    key = bytes.fromhex(VECTORS["ratings"][0]["hub_key"])
    dkey = bytes.fromhex(VECTORS["ratings"][0]["district_key"])
    args = (v["terminal_id"], v["epoch"], v["last_seq"], v["time"])
    assert protocol.status_tag(key, *args).hex() == v["tag"]
    assert protocol.status_tag(dkey, *args).hex() == v["dtag"]


def test_hub_ack_encoding() -> None:
    for v in VECTORS["ack"]:
        assert protocol.encode_ack(v["epoch"], v["seqs"], v["status"]).decode() == v["payload"]


FIRMWARE_CHECK = r"""
import json
from binascii import hexlify, unhexlify
from app import codec
V = json.loads(VECTORS_JSON)
n = 0
for v in V["hmac_sha256"]:
    assert hexlify(codec.hmac_sha256(unhexlify(v["key"]), unhexlify(v["msg"]))).decode() == v["mac"], v
    n += 1
for v in V["ratings"]:
    rec = codec.encode_rating(v["terminal_id"], unhexlify(v["hub_key"]), unhexlify(v["district_key"]),
                              v["flags"], v["epoch"], v["seq"], v["press_time"], v["level"],
                              v["reason"], v["scale"])
    assert hexlify(rec).decode() == v["record"], ("encode", v["seq"])
    d = codec.decode_rating(unhexlify(v["record"]))
    assert d[1:8] == (v["flags"], v["epoch"], v["seq"], v["press_time"], v["level"], v["reason"], v["scale"])
    assert codec.verify_rating(v["terminal_id"], unhexlify(v["hub_key"]), rec)
    assert codec.verify_rating(v["terminal_id"], unhexlify(v["district_key"]), rec, True)
    n += 1
for v in V["invalid_ratings"]:
    try:
        codec.decode_rating(unhexlify(v["record"]))
    except ValueError:
        n += 1
    else:
        raise AssertionError("accepted: " + v["why"])
key = unhexlify(V["ratings"][0]["hub_key"])
for v in V["tampered_ratings"]:
    assert not codec.verify_rating(v["terminal_id"], key, unhexlify(v["record"])), v["why"]
    n += 1
dkey = unhexlify(V["ratings"][0]["district_key"])
for v in V["status"]:
    m = codec.status_message(v["terminal_id"], v["epoch"], v["last_seq"], v["time"])
    assert hexlify(codec.tag(key, m)).decode() == v["tag"]
    assert hexlify(codec.tag(dkey, m)).decode() == v["dtag"]
    n += 1
print("checked", n)
"""


def test_firmware_codec_under_micropython(micropython) -> None:
    code = "VECTORS_JSON = " + repr(json.dumps(VECTORS)) + "\n" + FIRMWARE_CHECK
    out = micropython.run(code)
    expected = (
        len(VECTORS["hmac_sha256"])
        + len(VECTORS["ratings"])
        + len(VECTORS["invalid_ratings"])
        + len(VECTORS["tampered_ratings"])
        + len(VECTORS["status"])
    )
    assert f"checked {expected}" in out
