"""The hub's ingest handler on a real SQLite file: every message is stored, re-acknowledged or
quarantined with a reason; nothing raises, nothing is stored twice."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
from sqlmodel import Session, select

from hub import protocol
from hub.db import make_engine
from hub.ingest import MAX_QUARANTINED, Ingestor
from hub.models import Quarantine, Rating, Terminal
from hub.registry import add_terminal
from provisioning.simulate import firmware_path
from tests.helpers import record

firmware_path()
from app import codec  # noqa: E402

pytestmark = pytest.mark.unit
OFFICE = "office-test"


@pytest.fixture
def env(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'hub.sqlite3'}")
    term, device = add_terminal(engine, office=OFFICE, desk="quay-1")
    yield engine, Ingestor(engine, OFFICE), device
    engine.dispose()


def topic(device: dict, leaf: str = "rating", office: str = OFFICE) -> str:
    return protocol.topic(office, device["terminal_id"], leaf)


def rows(engine, model=Rating) -> list:
    with Session(engine) as s:
        return list(s.exec(select(model)).all())


def test_valid_rating_is_stored_and_acknowledged(env) -> None:
    engine, ing, dev = env
    res = ing.process([(topic(dev), record(dev, 1, level=3))])
    assert res.counts["stored"] == 1
    [r] = rows(engine)
    assert (r.terminal_id, r.seq, r.level, r.desk) == (dev["terminal_id"], 1, 3, "quay-1")
    assert res.acks == [(topic(dev, "ack"), protocol.encode_ack(1, [1]))]


def test_duplicate_is_acknowledged_again_not_stored_twice(env) -> None:
    engine, ing, dev = env
    rec = record(dev, 7)
    ing.process([(topic(dev), rec)])
    res = ing.process([(topic(dev), rec), (topic(dev), rec)])
    assert res.counts["duplicates"] == 2 and len(rows(engine)) == 1
    assert json.loads(res.acks[0][1])["seqs"] == [7, 7]


def test_one_ack_per_terminal_for_a_batch(env) -> None:
    engine, ing, dev = env
    res = ing.process([(topic(dev), record(dev, s)) for s in (1, 2, 3)])
    assert len(res.acks) == 1 and json.loads(res.acks[0][1])["seqs"] == [1, 2, 3]


@pytest.mark.parametrize(
    "case",
    [
        "other office",
        "unknown terminal",
        "oversize",
        "short",
        "forged",
        "wrong epoch",
        "bad topic",
        "bad status",
    ],
)
def test_bad_input_is_quarantined_with_a_reason(env, case: str) -> None:
    engine, ing, dev = env
    good = record(dev, 1)
    t, payload = topic(dev), good
    if case == "other office":
        t = topic(dev, office="office-other")
    elif case == "unknown terminal":
        t = protocol.topic(OFFICE, "t-00000000dead", "rating")
    elif case == "oversize":
        payload = b"x" * 100_000
    elif case == "short":
        payload = good[:30]
    elif case == "forged":
        payload = good[:12] + bytes([2]) + good[13:]  # level changed after signing
    elif case == "wrong epoch":
        payload = codec.encode_rating(
            dev["terminal_id"],
            bytes.fromhex(dev["hub_key"]),
            bytes(32),
            0,
            9,
            1,
            1795000000,
            1,
            0,
            3,
        )
    elif case == "bad topic":
        t = "sipas/v1/office-test/../rating"
    elif case == "bad status":
        t, payload = topic(dev, "status"), b"{not json"
    res = ing.process([(t, payload)])
    assert res.counts["quarantined"] == 1 and rows(engine) == []
    [q] = rows(engine, Quarantine)
    assert q.topic == t and q.reason
    if case == "oversize":  # kept, but only its start: a flood must not fill the hub's storage
        assert q.payload == payload[:MAX_QUARANTINED] and "16384 of 100000 bytes kept" in q.reason
    else:
        assert q.payload == payload
    if case in ("forged", "wrong epoch"):  # the terminal is told, so it stops resending
        assert json.loads(res.acks[0][1])["status"] == "rejected"


def test_revoked_terminal_is_refused(env) -> None:
    engine, ing, dev = env
    with Session(engine) as s:
        t = s.get(Terminal, dev["terminal_id"])
        t.active = False
        s.add(t)
        s.commit()
    ing.reload_terminals()
    res = ing.process([(topic(dev), record(dev, 1))])
    assert res.counts["quarantined"] == 1 and rows(engine) == []


def test_unknown_clock_is_timestamped_at_receipt(env) -> None:
    engine, ing, dev = env
    ing.process([(topic(dev), record(dev, 1, flags=codec.FLAG_CLOCK_UNKNOWN, t=37))])
    [r] = rows(engine)
    assert r.clock_unknown and abs(r.press_time.timestamp() - time.time()) < 60


def test_status_heartbeat_updates_last_seen(env) -> None:
    engine, ing, dev = env
    ing.process([(topic(dev, "status"), b'{"v":1,"state":"online","last_seq":3}')])
    [t] = rows(engine, Terminal)
    assert t.last_seen is not None and json.loads(t.last_status)["last_seq"] == 3


def test_random_garbage_never_crashes_and_is_all_accounted_for(env) -> None:
    engine, ing, dev = env
    rnd = random.Random(20261123)
    msgs = []
    good = record(dev, 1)
    for i in range(400):
        kind = i % 4
        if kind == 0:
            payload = rnd.randbytes(rnd.randint(0, 120))
        elif kind == 1:
            b = bytearray(good)
            # body or hub tag: the district tag is the district's to check, not the hub's
            b[rnd.randrange(32)] ^= 1 << rnd.randrange(8)
            payload = bytes(b)
        elif kind == 2:
            payload = rnd.randbytes(48)
        else:
            payload = json.dumps(
                {"v": rnd.choice([1, 2, None]), "x": "é" * rnd.randint(0, 5)}
            ).encode()
        leaf = rnd.choice(["rating", "status", "rating"])
        msgs.append((topic(dev, leaf), payload))
    res = ing.process(msgs)
    accounted = sum(res.counts[k] for k in ("stored", "duplicates", "quarantined", "status"))
    assert accounted == len(msgs)
    assert res.counts["stored"] == 0  # no bit-flipped or random record passes the HMAC check
    assert len(rows(engine, Quarantine)) == res.counts["quarantined"]


def test_reused_sequence_number_with_other_content_is_quarantined_not_stored(env) -> None:
    engine, ing, dev = env
    first = record(dev, 5, level=1)
    ing.process([(topic(dev), first)])
    other = record(dev, 5, level=3)  # validly signed, same key, different rating
    res = ing.process([(topic(dev), other)])
    assert res.counts["quarantined"] == 1 and res.counts["duplicates"] == 0
    assert json.loads(res.acks[0][1]) == {"v": 1, "epoch": 1, "seqs": [5], "status": "stored"}
    [r] = rows(engine)
    assert r.raw == first
    [q] = rows(engine, Quarantine)
    assert q.payload == other and "reused" in q.reason


def test_a_message_that_breaks_ingest_is_quarantined_alone(env, monkeypatch) -> None:
    engine, ing, dev = env
    good, bad = record(dev, 1), record(dev, 2)
    real = ing._rating

    def explode(s, t, tid, known, payload, res, acked):
        if payload == bad:
            raise RuntimeError("a bug the hub did not foresee")
        return real(s, t, tid, known, payload, res, acked)

    monkeypatch.setattr(ing, "_rating", explode)
    with pytest.raises(RuntimeError):
        ing.process([(topic(dev), good), (topic(dev), bad)])
    res = ing.process_each([(topic(dev), good), (topic(dev), bad)])
    assert (res.counts["stored"], res.counts["quarantined"]) == (1, 1)
    assert [r.seq for r in rows(engine)] == [1]
    [q] = rows(engine, Quarantine)
    assert q.payload == bad and "could not process" in q.reason
