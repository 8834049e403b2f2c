"""Property-based fuzzing of the hub's ingest handler (``hub.ingest.Ingestor.process``).

Batches mix valid ratings with malformed, oversized, forged (wrong key, another terminal's key,
flipped bits, wrong epoch), replayed and misaddressed messages (other office, unknown or revoked
terminal, bad leaf, garbage topics), statuses and replies. Each message's expected fate comes from
an oracle written from docs/protocol.md in this file (its own record layout and HMAC, not the hub's
``protocol`` module). Properties, for every batch:

- ``process`` never raises;
- every message is counted exactly once: stored + duplicates + quarantined + status + replies;
- each count is the oracle's;
- a valid record is stored exactly once, byte for byte, whatever the replays; nothing else is stored;
- every quarantined message is in the quarantine table with its payload byte for byte, its topic
  (the hub keeps the first 512 characters) and a non-empty reason, in arrival order;
- the ``stored`` acks name every valid record (re-acknowledging replays), one ack per terminal and
  epoch; the ``rejected`` acks name exactly the well-formed records whose epoch or tag is wrong.

The hub tag covers bytes 0..31 only: the district tag (32..47) is the district's to check, so a
record with a flipped district-tag bit is legitimately stored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import shutil
import sqlite3
import struct
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from hub.db import make_engine
from hub.ingest import Ingestor
from hub.models import Quarantine, Rating, Terminal
from hub.registry import add_terminal

pytestmark = pytest.mark.faults

OFFICE = "office-test"
OTHER_OFFICE = "office-other"
MAX_PAYLOAD = 4096  # docs/protocol.md: nothing a terminal sends comes near; bigger is refused
QUARANTINE_TOPIC_CHARS = 512  # the hub keeps this much of a refused message's topic
COUNT_KEYS = ("stored", "duplicates", "quarantined", "status", "replies")
# Failing examples are replayed first on the next run; kept out of the working tree.
EXAMPLES = DirectoryBasedExampleDatabase(
    str(Path(__file__).resolve().parents[2] / ".pytest_cache" / "hypothesis")
)
FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=EXAMPLES,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- the oracle: docs/protocol.md, independently of hub/protocol.py ------------------------------

TERMINAL_ID = re.compile(r"t-[0-9a-f]{12}")
OFFICE_ID = re.compile(r"[a-z0-9-]{1,32}")
BODY = struct.Struct("<BBHIIBBBB")  # version flags epoch seq press_time level reason scale reserved


def rating_tag(key: bytes, terminal_id: str, body: bytes) -> bytes:
    msg = b"SIPAS-R1" + terminal_id.encode() + b"\x00" + body
    return hmac.new(key, msg, hashlib.sha256).digest()[:16]


@dataclass(frozen=True)
class Fields:
    version: int = 1
    flags: int = 0
    epoch: int = 1
    seq: int = 1
    press_time: int = 1_795_000_000
    level: int = 1
    reason: int = 0
    scale: int = 3
    reserved: int = 0

    def body(self) -> bytes:
        return BODY.pack(
            self.version,
            self.flags,
            self.epoch,
            self.seq,
            self.press_time,
            self.level,
            self.reason,
            self.scale,
            self.reserved,
        )

    def well_formed(self) -> bool:
        return (
            self.version == 1
            and self.flags < 32
            and self.reserved == 0
            and self.epoch >= 1
            and self.seq >= 1
            and self.scale in (3, 4, 5)
            and 1 <= self.level <= self.scale
            and self.reason <= 4
        )


def record(f: Fields, terminal_id: str, hub_key: bytes, district_key: bytes = bytes(32)) -> bytes:
    body = f.body()
    return (
        body + rating_tag(hub_key, terminal_id, body) + rating_tag(district_key, terminal_id, body)
    )


@dataclass(frozen=True)
class Term:
    """A terminal as the test knows it (keys from its device configuration)."""

    tid: str
    epoch: int
    hub_key: bytes
    district_key: bytes
    office: str = OFFICE
    active: bool = True


@dataclass(frozen=True)
class Fate:
    outcome: str  # "rating" (stored or duplicate), "quarantined", "status", "replies"
    key: tuple[str, int, int] | None = None  # rating key of a valid or rejected record
    rejected: bool = False  # quarantined and answered with a "rejected" ack


def fate(topic: str, payload: bytes, terminals: dict[str, Term]) -> Fate:
    """What docs/protocol.md says the hub must do with this message."""
    parts = topic.split("/")
    if len(parts) != 5 or parts[:2] != ["sipas", "v1"]:
        return Fate("quarantined")
    office, tid, leaf = parts[2:]
    term = terminals.get(tid)
    if (
        not OFFICE_ID.fullmatch(office)
        or office != OFFICE
        or not TERMINAL_ID.fullmatch(tid)
        or leaf not in ("rating", "status", "reply")
        or term is None
        or term.office != OFFICE
        or not term.active
        or len(payload) > MAX_PAYLOAD
    ):
        return Fate("quarantined")
    if leaf == "reply":
        return Fate("replies")
    if leaf == "status":
        try:
            st_ = json.loads(payload)
        except ValueError:
            return Fate("quarantined")
        ok = isinstance(st_, dict) and st_.get("v") == 1
        return Fate("status" if ok else "quarantined")
    if len(payload) != 48:
        return Fate("quarantined")
    f = Fields(*BODY.unpack_from(payload))
    if not f.well_formed():
        return Fate("quarantined")
    key = (tid, f.epoch, f.seq)
    if f.epoch != term.epoch or not hmac.compare_digest(
        rating_tag(term.hub_key, tid, payload[:16]), payload[16:32]
    ):
        return Fate("quarantined", key, rejected=True)
    return Fate("rating", key)


# -- the office under test -----------------------------------------------------------------------


@dataclass
class Env:
    """The terminals the test knows and a template office database they are registered in."""

    template: Path
    workdir: Path
    terminals: dict[str, Term]  # the registered ones (any office, active or not)
    a: Term
    b: Term
    other_office: Term
    revoked: Term
    unknown: Term
    engine: Engine | None = None
    ingestor: Ingestor | None = None
    examples: int = 0

    @contextmanager
    def fresh(self) -> Iterator[None]:
        """A fresh office database (a copy of the template) and a new Ingestor, for one example."""
        self.examples += 1
        db = self.workdir / f"example-{self.examples}.sqlite3"
        shutil.copyfile(self.template, db)
        self.engine = make_engine(f"sqlite:///{db}")
        self.ingestor = Ingestor(self.engine, OFFICE)
        try:
            yield
        finally:
            self.engine.dispose()
            self.engine = self.ingestor = None
            for path in self.workdir.glob(f"{db.name}*"):
                path.unlink()


def _register(engine: Engine, office: str, epoch: int, desk: str) -> Term:
    _, dev = add_terminal(engine, office=office, desk=desk, epoch=epoch)
    return Term(
        dev["terminal_id"],
        epoch,
        bytes.fromhex(dev["hub_key"]),
        bytes.fromhex(dev["district_key"]),
        office,
    )


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    template = tmp_path / "template.sqlite3"
    engine = make_engine(f"sqlite:///{template}")
    a = _register(engine, OFFICE, 1, "quay-1")
    b = _register(engine, OFFICE, 3, "quay-2")  # reprovisioned twice: epoch 3
    other = _register(engine, OTHER_OFFICE, 1, "quay-1")  # registered, but in another office
    revoked = _register(engine, OFFICE, 1, "quay-3")
    with Session(engine) as s:
        row = s.get(Terminal, revoked.tid)
        assert row is not None
        row.active = False
        s.add(row)
        s.commit()
    engine.dispose()
    with sqlite3.connect(template) as c:  # one self-contained file to copy
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    revoked = Term(revoked.tid, 1, revoked.hub_key, revoked.district_key, OFFICE, active=False)
    # Never registered: the generators sign for it, the oracle does not know it.
    unknown = Term("t-0000deadbeef", 1, bytes(range(32)), bytes(32), OFFICE, active=False)
    registered = {t.tid: t for t in (a, b, other, revoked)}
    examples = tmp_path / "examples"
    examples.mkdir()
    yield Env(template, examples, registered, a, b, other, revoked, unknown)


def topic(office: str, tid: str, leaf: str) -> str:
    return f"sipas/v1/{office}/{tid}/{leaf}"


# -- message generators --------------------------------------------------------------------------

u32 = st.integers(0, 2**32 - 1)


@st.composite
def valid_fields(draw: Any, epoch: int, seq: int) -> Fields:
    scale = draw(st.sampled_from((3, 4, 5)))
    return Fields(
        flags=draw(st.integers(0, 31)),
        epoch=epoch,
        seq=seq,
        press_time=draw(u32),
        level=draw(st.integers(1, scale)),
        reason=draw(st.integers(0, 4)),
        scale=scale,
    )


BAD_FIELDS = {
    "version": lambda f: replace(f, version=2),
    "flags": lambda f: replace(f, flags=f.flags | 0x20),
    "reserved": lambda f: replace(f, reserved=1),
    "epoch 0": lambda f: replace(f, epoch=0),
    "seq 0": lambda f: replace(f, seq=0),
    "scale": lambda f: replace(f, scale=6),
    "level 0": lambda f: replace(f, level=0),
    "level over scale": lambda f: replace(f, level=f.scale + 1),
    "reason": lambda f: replace(f, reason=5),
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

KINDS = (
    "valid",
    "valid",
    "replay",
    "bit flip",
    "wrong key",
    "other terminal's key",
    "signed for another terminal",
    "published on another terminal's topic",
    "wrong epoch",
    "bad field",
    "malformed",
    "oversized",
    "bad topic",
    "status",
    "bad status",
    "reply",
)


class Generator:
    """Draws messages for one example; sequence numbers are fresh per terminal within it."""

    def __init__(self, env: Env, data: Any, first_seq: int) -> None:
        self.env, self.data = env, data
        self.next_seq = {env.a.tid: first_seq, env.b.tid: first_seq}
        self.sent_valid: list[tuple[str, bytes]] = []

    def draw(self, strategy: Any, label: str | None = None) -> Any:
        return self.data.draw(strategy, label=label)

    def ours(self) -> Term:
        return self.draw(st.sampled_from((self.env.a, self.env.b)))

    def fresh(self, term: Term, epoch: int | None = None) -> Fields:
        seq = self.next_seq[term.tid]
        self.next_seq[term.tid] = seq + 1
        return self.draw(valid_fields(term.epoch if epoch is None else epoch, seq))

    def valid(self) -> tuple[str, bytes]:
        t = self.ours()
        district = self.draw(st.sampled_from((t.district_key, bytes(32))))  # hub cannot tell
        msg = (topic(OFFICE, t.tid, "rating"), record(self.fresh(t), t.tid, t.hub_key, district))
        self.sent_valid.append(msg)
        return msg

    def message(self) -> tuple[str, bytes]:
        env = self.env
        kind = self.draw(st.sampled_from(KINDS), label="kind")
        event(kind)
        t = self.ours()
        rating_topic = topic(OFFICE, t.tid, "rating")
        if kind == "valid" or (kind == "replay" and not self.sent_valid):
            return self.valid()
        if kind == "replay":
            return self.draw(st.sampled_from(self.sent_valid))
        if kind == "bit flip":
            rec = bytearray(record(self.fresh(t), t.tid, t.hub_key, t.district_key))
            # Region first (fields, hub tag, district tag), so that each is hit often, edges too.
            start = self.draw(st.sampled_from((0, 16, 32)), label="flipped region")
            at = start + self.draw(st.integers(0, 15), label="flipped byte")
            rec[at] ^= 1 << self.draw(st.integers(0, 7), label="flipped bit")
            return rating_topic, bytes(rec)
        if kind == "wrong key":
            key = self.draw(st.binary(min_size=32, max_size=32).filter(lambda k: k != t.hub_key))
            return rating_topic, record(self.fresh(t), t.tid, key)
        if kind == "other terminal's key":
            other = env.b if t is env.a else env.a
            return rating_topic, record(self.fresh(t), t.tid, other.hub_key)
        if kind == "signed for another terminal":  # the right key, another terminal's id
            return rating_topic, record(self.fresh(t), env.unknown.tid, t.hub_key)
        if kind == "published on another terminal's topic":
            other = env.b if t is env.a else env.a
            return topic(OFFICE, other.tid, "rating"), record(self.fresh(t), t.tid, t.hub_key)
        if kind == "wrong epoch":
            epoch = self.draw(st.integers(1, 0xFFFF).filter(lambda e: e != t.epoch))
            return rating_topic, record(self.fresh(t, epoch), t.tid, t.hub_key)
        if kind == "bad field":
            bad = BAD_FIELDS[self.draw(st.sampled_from(sorted(BAD_FIELDS)), label="field")]
            return rating_topic, record(bad(self.fresh(t)), t.tid, t.hub_key)
        if kind == "malformed":
            size = self.draw(st.sampled_from((0, 1, 16, 32, 47, 49, 64, 96)) | st.integers(0, 200))
            leaf = self.draw(st.sampled_from(("rating", "rating", "status")))
            return topic(OFFICE, t.tid, leaf), self.draw(st.binary(min_size=size, max_size=size))
        if kind == "oversized":
            leaf = self.draw(st.sampled_from(("rating", "status", "reply")))
            size = self.draw(st.integers(MAX_PAYLOAD + 1, 3 * MAX_PAYLOAD))
            head = self.draw(st.binary(min_size=1, max_size=64))
            return topic(OFFICE, t.tid, leaf), (head * (size // len(head) + 1))[:size]
        if kind == "bad topic":
            return self.bad_topic(t), self.draw(
                st.sampled_from(
                    (record(self.fresh(t), t.tid, t.hub_key), b'{"v":1,"state":"online"}', b"")
                )
            )
        if kind == "status":
            extra = self.draw(st.dictionaries(st.text(max_size=10), json_values, max_size=5))
            doc = {**extra, "v": 1}
            ascii_only = self.draw(st.booleans())
            return topic(OFFICE, t.tid, "status"), json.dumps(doc, ensure_ascii=ascii_only).encode()
        if kind == "bad status":
            payload = self.draw(
                st.sampled_from((b"{not json", b"", b"null", b"[1]", b'"v"', b"\xff\xfe\x00"))
                | json_values.filter(lambda v: not isinstance(v, dict)).map(
                    lambda v: json.dumps(v).encode()
                )
                | st.fixed_dictionaries({"v": st.sampled_from((0, 2, "1", None, [1]))}).map(
                    lambda d: json.dumps(d).encode()
                )
            )
            return topic(OFFICE, t.tid, "status"), payload
        assert kind == "reply"
        return topic(OFFICE, t.tid, "reply"), self.draw(st.binary(max_size=200))

    def bad_topic(self, t: Term) -> str:
        env = self.env
        choice = self.draw(st.integers(0, 11), label="bad topic")
        if choice == 0:
            return topic(OTHER_OFFICE, t.tid, "rating")
        if choice == 1:
            return topic(OFFICE, env.unknown.tid, "rating")
        if choice == 2:
            return topic(OFFICE, env.other_office.tid, "rating")
        if choice == 3:
            return topic(OTHER_OFFICE, env.other_office.tid, "rating")
        if choice == 4:
            return topic(OFFICE, env.revoked.tid, self.draw(st.sampled_from(("rating", "status"))))
        if choice == 5:
            leaf = self.draw(
                st.sampled_from(("ratings", "RATING", "", "rating/", "#", "+", "status "))
                | st.text(max_size=12).filter(lambda s: s not in ("rating", "status", "reply"))
            )
            return topic(OFFICE, t.tid, leaf)
        if choice == 6:  # almost the right structure
            return self.draw(
                st.sampled_from(
                    (
                        f"sipas/v2/{OFFICE}/{t.tid}/rating",
                        f"sipas/v1/{OFFICE}/{t.tid}",
                        f"sipas/v1/{OFFICE}/{t.tid}/rating/x",
                        f"/sipas/v1/{OFFICE}/{t.tid}/rating",
                        f"sipas/v1/{OFFICE}//{t.tid}/rating",
                        f"sipas/v1/{OFFICE}/{t.tid.upper()}/rating",
                        f"sipas/v1/{OFFICE}/{t.tid}\n/rating",
                        f"sipas/v1/{OFFICE}\n/{t.tid}/rating",
                        f"sipas/v1/{OFFICE.upper()}/{t.tid}/rating",
                        f"sipas/v1/+/{t.tid}/rating",
                        f"sipas/v1/{OFFICE}/+/rating",
                        f"sipas/v1/{OFFICE}/#",
                        f"SIPAS/v1/{OFFICE}/{t.tid}/rating",
                    )
                )
            )
        if choice == 7:  # a well-formed but unknown terminal id
            tid = self.draw(st.from_regex(r"\At-[0-9a-f]{12}\Z"))
            return topic(OFFICE, tid, "rating")
        if choice == 8:  # an office id that breaks the rules
            office = self.draw(st.text(max_size=40).filter(lambda o: o != OFFICE and "/" not in o))
            return topic(office, t.tid, "rating")
        if choice == 9:  # longer than the quarantine keeps
            return topic(OFFICE, t.tid, "rating") + "/" + "x" * self.draw(st.integers(500, 2000))
        return self.draw(st.text(max_size=80), label="garbage topic")


# -- checking one batch --------------------------------------------------------------------------


class Model:
    """What the office database must hold after the batches so far."""

    def __init__(self) -> None:
        self.stored: dict[tuple[str, int, int], bytes] = {}  # rating key -> raw record
        self.quarantine_rows = 0
        self.last_status: dict[str, Any] = {}  # terminal id -> its last heartbeat


def check_batch(env: Env, model: Model, batch: list[tuple[str, bytes]]) -> None:
    assert env.ingestor is not None and env.engine is not None
    res = env.ingestor.process(batch)  # property 1: never raises

    fates = [fate(t, p, env.terminals) for t, p in batch]
    counts = {k: res.counts.get(k, 0) for k in COUNT_KEYS}
    assert sum(counts.values()) == len(batch), (counts, len(batch))
    assert set(res.counts) <= set(COUNT_KEYS), res.counts

    new: dict[tuple[str, int, int], bytes] = {}
    for (_, payload), f in zip(batch, fates, strict=True):
        if f.outcome == "rating" and f.key not in model.stored and f.key not in new:
            new[f.key] = payload
    expected = Counter(f.outcome for f in fates)
    assert counts == {
        "stored": len(new),
        "duplicates": expected["rating"] - len(new),
        "quarantined": expected["quarantined"],
        "status": expected["status"],
        "replies": expected["replies"],
    }, [(t[:80], p[:48], f) for (t, p), f in zip(batch, fates, strict=True)]
    assert {(r.terminal_id, r.epoch, r.seq): bytes(r.raw) for r in res.stored} == new
    model.stored.update(new)

    # Valid records stored exactly once, byte for byte; nothing else stored.
    with Session(env.engine) as s:
        rows = s.exec(select(Rating)).all()
        assert {(r.terminal_id, r.epoch, r.seq): bytes(r.raw) for r in rows} == model.stored
        assert len(rows) == len(model.stored)
        assert all(r.office == OFFICE for r in rows)
        quarantined = s.exec(
            select(Quarantine).where(Quarantine.id > model.quarantine_rows).order_by(Quarantine.id)
        ).all()
        # Refused messages kept in arrival order, payload byte for byte, with a reason.
        want = [
            (t[:QUARANTINE_TOPIC_CHARS], p)
            for (t, p), f in zip(batch, fates, strict=True)
            if f.outcome == "quarantined"
        ]
        assert [(q.topic, bytes(q.payload)) for q in quarantined] == want
        assert all(q.reason and q.reason.strip() for q in quarantined)
        if quarantined:
            model.quarantine_rows = max(q.id or 0 for q in quarantined)
        # A heartbeat is kept as the terminal's last status.
        for (t, p), f in zip(batch, fates, strict=True):
            if f.outcome == "status":
                model.last_status[t.split("/")[3]] = json.loads(p)
        for tid, status in model.last_status.items():
            term = s.get(Terminal, tid)
            assert term is not None and term.last_seen and term.last_status
            assert json.loads(term.last_status) == status

    # Acks: "stored" names every valid record (replays too), one ack per terminal and epoch;
    # "rejected" names exactly the well-formed records whose epoch or tag is wrong.
    stored_acks: Counter[tuple[str, int, int]] = Counter()
    rejected_acks: Counter[tuple[str, int, int]] = Counter()
    groups: list[tuple[str, int]] = []
    for ack_topic, body in res.acks:
        parts = ack_topic.split("/")
        assert parts[:3] == ["sipas", "v1", OFFICE] and parts[4] == "ack", ack_topic
        msg = json.loads(body)
        assert msg["v"] == 1 and isinstance(msg["seqs"], list) and msg["seqs"], msg
        keys = [(parts[3], msg["epoch"], seq) for seq in msg["seqs"]]
        if msg["status"] == "stored":
            groups.append((parts[3], msg["epoch"]))
            stored_acks.update(keys)
        else:
            assert msg["status"] == "rejected" and msg.get("reason"), msg
            rejected_acks.update(keys)
    assert len(groups) == len(set(groups)), f"several stored acks for one terminal: {groups}"
    assert stored_acks == Counter(f.key for f in fates if f.outcome == "rating")
    assert rejected_acks == Counter(f.key for f in fates if f.rejected)


first_seqs = st.one_of(st.just(1), st.integers(1, 2**32 - 200), st.just(2**32 - 120))


def test_ingest_accounts_for_every_message_and_stores_only_valid_ratings(env: Env) -> None:
    @FUZZ
    @given(data=st.data(), first_seq=first_seqs, batches=st.integers(1, 3))
    def run(data: Any, first_seq: int, batches: int) -> None:
        gen = Generator(env, data, first_seq)
        model = Model()
        with env.fresh():
            for _ in range(batches):
                size = data.draw(st.integers(0, 12), label="batch size")
                check_batch(env, model, [gen.message() for _ in range(size)])

    run()


def test_replays_of_a_whole_batch_are_acknowledged_again_and_stored_once(env: Env) -> None:
    @FUZZ
    @given(data=st.data(), first_seq=first_seqs, repeats=st.integers(1, 2))
    def run(data: Any, first_seq: int, repeats: int) -> None:
        gen = Generator(env, data, first_seq)
        model = Model()
        with env.fresh():
            batch = [gen.valid() for _ in range(data.draw(st.integers(1, 8)))]
            for _ in range(repeats):  # the broker redelivers after a hub crash, terminals resend
                check_batch(env, model, batch)
                shuffled = data.draw(st.permutations(batch))
                check_batch(env, model, shuffled + [gen.message() for _ in range(3)])
            # The first delivery stored each record byte for byte; no replay changed it.
            for t, p in batch:
                f = Fields(*BODY.unpack_from(p))
                assert model.stored[(t.split("/")[3], f.epoch, f.seq)] == p

    run()


def test_oracle_agrees_with_the_firmware_codec() -> None:
    """The test's own record layout and HMAC are the firmware's (both from docs/protocol.md)."""
    from provisioning.simulate import firmware_path

    firmware_path()
    from app import codec

    tid, hub_key, district_key = "t-24a1600b3c1d", bytes(range(32)), bytes(range(32, 64))
    f = Fields(flags=9, epoch=3, seq=41, press_time=1_795_000_000, level=2, reason=3, scale=5)
    assert record(f, tid, hub_key, district_key) == codec.encode_rating(
        tid, hub_key, district_key, 9, 3, 41, 1_795_000_000, 2, 3, 5
    )


# -- known bugs: a poison heartbeat stops the whole office's ingest ------------------------------

POISON_STATUS = {
    # json.loads() accepts UTF-16/32 JSON given as bytes; the hub then decodes the payload as UTF-8.
    "UTF-16 JSON": '{"v":1,"state":"online"}'.encode("utf-16"),
    "UTF-32 JSON": '{"v":1,"state":"online"}'.encode("utf-32"),
    # Under MAX_PAYLOAD, yet deep enough for json's recursion limit: RecursionError, no ValueError.
    "nested arrays": b"[" * 4096,
    "nested objects": b'{"":' * 1024,
}


@pytest.mark.parametrize("name", sorted(POISON_STATUS))
def test_poison_status_is_quarantined_without_failing_the_batch(env: Env, name: str) -> None:
    a = env.a
    before = record(Fields(seq=1, epoch=a.epoch), a.tid, a.hub_key)
    after = record(Fields(seq=2, epoch=a.epoch), a.tid, a.hub_key)
    batch = [
        (topic(OFFICE, a.tid, "rating"), before),
        (topic(OFFICE, a.tid, "status"), POISON_STATUS[name]),
        (topic(OFFICE, a.tid, "rating"), after),
    ]
    with env.fresh():
        assert env.ingestor is not None
        res = env.ingestor.process(batch)
    assert res.counts["stored"] == 2
    assert res.counts["quarantined"] + res.counts["status"] == 1
