"""The district's fast ratings path (hub/district/bulk.py, the set-based gap check in
hub/district/integrity.py): the same batches give the same answers, stored rows and findings on
PostgreSQL (COPY, or the ON CONFLICT path when a key is already there) and on SQLite
(executemany), and the fast checks refuse exactly what the reference check refuses."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from hub.district import bulk, integrity, receive
from hub.district.db import make_engine, migrate
from hub.district.models import Office, TerminalKey
from tests.fixtures.district import Term

pytest_plugins = ["tests.fixtures.district_db"]  # pg_url

pytestmark = pytest.mark.integration
OFFICE = "ubnd-phuong-1"


def _setup(engine: Engine, terms: list[Term], elsewhere: tuple[Term, ...] = ()) -> None:
    """The offices and the terminals' district keys (``elsewhere``: of another office)."""
    migrate(engine)
    with Session(engine) as s:
        s.add(Office(id=OFFICE, name="UBND phường 1"))
        s.add(Office(id="xa-khac", name="UBND xã khác"))
        for t in [*terms, *elsewhere]:
            s.add(
                TerminalKey(
                    terminal_id=t.terminal_id,
                    epoch=t.epoch,
                    office="xa-khac" if t in elsewhere else OFFICE,
                    district_key=t.district_key.hex(),
                    issued_by="test",
                )
            )
        s.commit()


def _send(engine: Engine, stream: str, start: int, items: list[Any]) -> tuple[int, Any]:
    to = start + len(items)
    data = json.dumps(
        {"v": 1, "office": OFFICE, "stream": stream, "from": start, "to": to, "items": items}
    ).encode()
    key = f"{OFFICE}:{stream}:{start}-{to}"
    return receive.receive(engine, receive.parse(data, stream=stream, key=key, office=OFFICE))


def _state(engine: Engine) -> dict[str, Any]:
    with engine.connect() as c:
        ratings = [
            tuple(bytes(v) if isinstance(v, memoryview) else v for v in r)
            for r in c.execute(
                text(
                    "SELECT terminal_id, epoch, seq, raw, flags, level, scale, reason, "
                    "clock_unknown, repeat, test, prompted, followup, verified, channel, desk, "
                    "official_id, case_code, link_status, batch FROM rating "
                    "ORDER BY terminal_id, epoch, seq"
                )
            )
        ]
        findings = sorted(
            (
                (k, t, e, q, why, bytes(raw) if raw is not None else None)
                for k, t, e, q, why, raw in c.execute(
                    text("SELECT kind, terminal_id, epoch, seq, reason, raw FROM finding")
                )
            ),
            key=repr,  # NULLs sort differently in the two databases
        )
        gaps = [
            tuple(r)
            for r in c.execute(
                text(
                    "SELECT terminal_id, epoch, seq_from, seq_to, last_seq, "
                    "resolved_at IS NULL FROM suspected_deletion "
                    "ORDER BY terminal_id, epoch, seq_from, seq_to, resolved_at IS NULL"
                )
            )
        ]
    return {"ratings": ratings, "findings": findings, "gaps": gaps}


def _scenario(a: Term, b: Term, qr: Term, stranger: Term) -> list[tuple[str, int, list[Any]]]:
    """Batches with everything a receive path must tell apart."""
    altered = bytearray(a.record(3, level=3))
    altered[12] = 1  # the level changed, the tags left as they were
    conflicting = b.item(2, level=3)  # a valid record under a key stored with level 1 first
    qr_raw = bytearray(qr.record(1, level=2))
    qr_raw[32:48] = bytes(16)
    unknown_clock = a.item(
        7, raw=a.record(7, flags=1).hex(), press_time="2026-06-02T03:04:05+07:00"
    )
    return [
        ("heartbeats", 0, [a.heartbeat(9), b.heartbeat(6)]),  # the signed last numbers go ahead
        (
            "ratings",
            0,
            [
                a.item(1),
                a.item(2, level=2),
                a.item(2, level=2),  # the same record twice in one batch
                a.item(3, raw=bytes(altered).hex()),  # altered: refused, 3 stays missing
                a.item(5),
                b.item(1),
                b.item(2, level=1),
                b.item(2, level=2),  # another record under the same key in the same batch
                qr.item(1, raw=bytes(qr_raw).hex(), channel="qr", terminal_id="qr-quay-1"),
                stranger.item(1),  # no key at the district
                unknown_clock,
                {"terminal_id": a.terminal_id, "epoch": 1, "seq": 8, "raw": "zz"},
                "not an object",
            ],
        ),
        (
            "ratings",
            13,
            [
                a.item(1),  # already stored: a repeat
                conflicting,  # a conflicting record under a stored key
                a.item(4),
                b.item(3),
                b.item(6),
            ],
        ),
        ("ratings", 18, [a.item(6), a.item(8), a.item(9), b.item(4), b.item(5)]),  # no dups: COPY
        ("heartbeats", 2, [a.heartbeat(12)]),
        ("ratings", 23, [a.item(11), a.item(12)]),
    ]


def test_postgresql_bulk_path_and_sqlite_path_store_and_find_the_same(
    pg_url: str, tmp_path: Path
) -> None:
    a = Term("t-" + secrets.token_hex(6), secrets.token_bytes(32))
    b = Term("t-" + secrets.token_hex(6), secrets.token_bytes(32))
    other_office = Term("t-" + secrets.token_hex(6), secrets.token_bytes(32))
    stranger = Term("t-" + secrets.token_hex(6), secrets.token_bytes(32))
    qr = Term("qr-quay-1", bytes(32))
    engines = {"postgresql": make_engine(pg_url), "sqlite": make_engine(f"sqlite:///{tmp_path}/d")}
    batches = _scenario(a, b, qr, stranger)
    batches.append(("ratings", 25, [other_office.item(1)]))  # another office's terminal
    answers: dict[str, list[Any]] = {}
    try:
        for name, engine in engines.items():
            _setup(engine, [a, b], (other_office,))
            answers[name] = [_send(engine, *x) for x in batches]
            answers[name].append(_send(engine, *batches[1]))  # a resend: the first answer
        pg, lite = answers["postgresql"], answers["sqlite"]
        assert pg == lite
        first = pg[1][1]
        assert first["stored"] == 7 and first["duplicates"] == 1  # a7 (clock unknown) stored too
        assert [r["index"] for r in first["rejected"]] == [3, 7, 9, 11, 12]
        reasons = {r["index"]: r["reason"] for r in first["rejected"]}
        assert "district tag does not verify" in reasons[3]
        assert "different record" in reasons[7]
        assert "unknown terminal" in reasons[9]
        assert pg[2][1]["stored"] == 3 and pg[2][1]["duplicates"] == 1
        assert [r["index"] for r in pg[2][1]["rejected"]] == [1]
        assert pg[3] == (200, {"stored": 5, "duplicates": 0, "rejected": [], "to": 23})
        assert "belongs to office xa-khac" in pg[6][1]["rejected"][0]["reason"]
        assert pg[-1] == pg[1]  # the resend
        states = {name: _state(e) for name, e in engines.items()}
        assert states["postgresql"] == states["sqlite"]
        st = states["postgresql"]
        stored = {(r[0], r[2]) for r in st["ratings"]}
        assert (a.terminal_id, 3) not in stored and (a.terminal_id, 10) not in stored
        assert {(r[0], r[2]): r[5] for r in st["ratings"]}[(b.terminal_id, 2)] == 1  # first wins
        assert [r for r in st["ratings"] if r[0] == "qr-quay-1"][0][13] is False  # not verified
        open_gaps = [(g[0], g[2], g[3]) for g in st["gaps"] if g[5]]
        assert sorted(open_gaps) == sorted([(a.terminal_id, 3, 3), (a.terminal_id, 10, 10)])
        assert any(not g[5] for g in st["gaps"])  # ranges that closed stay as history
        kinds = sorted(f[0] for f in st["findings"])
        assert kinds == ["conflicting_rating"] * 2 + ["forged_rating"] * 5
    finally:
        for e in engines.values():
            e.dispose()


def test_the_fast_checks_refuse_exactly_what_the_reference_check_refuses() -> None:
    """Every single-byte change of a record (body or tags) and every malformed field: the fast
    path and receive._rating_row agree on the row or on the reason."""
    t = Term("t-" + secrets.token_hex(6), secrets.token_bytes(32))
    key = type("K", (), {"office": OFFICE, "district_key": t.district_key.hex()})()
    keys: dict[tuple[str, int], Any] = {(t.terminal_id, 1): key}
    batch = receive.Batch(OFFICE, "ratings", "k", 0, 1, [], "")
    good = t.record(5, level=2)
    items: list[Any] = [t.item(5, level=2)]
    for i in range(48):
        for flip in (1, 0x80):
            raw = bytearray(good)
            raw[i] ^= flip
            items.append(t.item(5, raw=bytes(raw).hex()))
    items += [
        {**t.item(5), "epoch": 2},
        t.item(6, raw=good.hex()),
        t.item(5, raw=good.hex()[:-2]),
        t.item(5, raw=None),
        t.item(5, terminal_id="t-XYZ"),
        {**t.item(5), "seq": True},
        t.item(5, channel="bluetooth"),
        t.item(5, channel=None),
        t.item(5, received_at=12),
        t.item(5, raw=t.record(5, flags=1).hex(), press_time=None),
        t.item(5, raw=t.record(5, flags=0x20).hex()),
        t.item(5, desk="x" * 100, official_id=7),
        [1, 2],
    ]

    def reference(item: Any) -> Any:
        try:
            row = receive._rating_row(item, batch, keys)
        except ValueError as e:
            return ("refused", str(e))
        return tuple(row[c] for c in bulk.COLUMNS[:-1])

    slow: list[int] = []

    def fallback(item: Any) -> dict[str, Any]:
        slow.append(items.index(item))
        return receive._rating_row(item, batch, keys)

    rows, where, refused = bulk.rows_of(items, OFFICE, "k", keys, fallback)
    fast: dict[int, Any] = {i: ("refused", why) for i, why in refused}
    fast.update({i: r[:-1] for i, r in zip(where, rows, strict=True)})
    assert len(fast) == len(items)
    for i, item in enumerate(items):
        assert fast[i] == reference(item), (i, item)
    accepted = sorted(i for i, v in fast.items() if v[0] != "refused")
    # the record itself, its 32 hub-tag variants (the district does not check the hub tag),
    # channel null (= terminal) and over-long attribution (cut, as before)
    assert len(accepted) == 1 + 32 + 2
    assert 0 not in slow and not set(range(33, 65)) & set(slow)  # the fast path took those


def test_a_batch_above_the_maximum_is_413_and_stores_nothing() -> None:
    n = receive.MAX_ITEMS + 1
    data = json.dumps(
        {"v": 1, "office": OFFICE, "stream": "ratings", "from": 0, "to": n, "items": [{}] * n}
    ).encode()
    with pytest.raises(receive.BatchError) as e:
        receive.parse(data, stream="ratings", key=f"{OFFICE}:ratings:0-{n}", office=OFFICE)
    assert e.value.status == 413 and str(receive.MAX_ITEMS) in e.value.detail


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_gaps_of_many_terminals_in_one_batch(
    dialect: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """Several statements when a batch has more terminals than one statement takes."""
    monkeypatch.setattr(integrity, "_CHUNK", 3)
    url = f"sqlite:///{tmp_path}/d" if dialect == "sqlite" else request.getfixturevalue("pg_url")
    engine = make_engine(url)
    terms = [Term("t-" + secrets.token_hex(6), secrets.token_bytes(32)) for _ in range(8)]
    try:
        _setup(engine, terms)
        _send(engine, "heartbeats", 0, [t.heartbeat(6) for t in terms])
        res = _send(engine, "ratings", 0, [t.item(s) for t in terms for s in (1, 2, 4)])
        assert res[1]["stored"] == 24
        with Session(engine) as s:
            open_ = s.execute(
                text(
                    "SELECT seq_from, seq_to FROM suspected_deletion WHERE resolved_at IS NULL "
                    "ORDER BY terminal_id, seq_from"
                )
            ).all()
        assert [tuple(r) for r in open_] == [(3, 3), (5, 6)] * 8
        _send(engine, "ratings", 24, [t.item(s) for t in terms for s in (3, 5, 6)])
        with Session(engine) as s:
            n_open = s.execute(
                text("SELECT count(*) FROM suspected_deletion WHERE resolved_at IS NULL")
            ).scalar()
        assert n_open == 0
    finally:
        engine.dispose()
