"""The district's rollups against the direct query (hypothesis): random batches of ratings, cases,
exclusions, corrections and their reversals arrive late, out of order and twice, across a month's
end, with refreshes anywhere; every report from the rollups equals the plain GROUP BY."""

from __future__ import annotations

import gzip
import itertools
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from hub.district import receive, reports
from hub.district import reports_rollup as ru
from hub.district.db import make_engine, migrate
from hub.periods import resolve
from tests.fixtures.district import Term, add_office, batch, new_terminal

pytestmark = pytest.mark.integration
# 22:00 on 30 June .. 02:00 on 2 July office time, in 2-hour steps (UTC = office time - 7 h)
TIMES = [int(datetime(2026, 6, 30, 15, tzinfo=UTC).timestamp()) + 7200 * i for i in range(14)]
PERIODS = ["month:2026-06", "month:2026-07", "day:2026-07-01", "year:2026", "quarter:2026-Q3"]
_n = itertools.count()


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    path: Path = tmp_path_factory.mktemp("rollup") / "district.sqlite3"
    e = make_engine(f"sqlite:///{path}")
    migrate(e)
    yield e
    e.dispose()


def _send(engine: Engine, office: str, stream: str, start: int, items: list[Any]) -> None:
    body, headers = batch(office, stream, start, items)
    b = receive.parse(
        gzip.decompress(body), stream=stream, key=headers["Idempotency-Key"], office=office
    )
    status, answer = receive.receive(engine, b)
    assert status == 200, answer


rating_st = st.tuples(
    st.integers(0, 1),  # office
    st.integers(0, len(TIMES) - 1),  # press time
    st.integers(1, 3),  # level
    st.sampled_from(["an", "binh", None]),  # official at press time
    st.sampled_from(["quay-1", "quay-2"]),
    st.integers(0, 4),  # case code number (0: none)
)
op_st = st.one_of(
    st.tuples(
        st.just("case"),
        st.integers(1, 4),
        st.sampled_from(["Hộ tịch", "Cư trú", None]),
        st.integers(0, len(TIMES) - 1),
    ),  # fmt: skip
    st.tuples(st.just("exclude"), st.integers(0, 30), st.sampled_from(["repeat", "test"])),
    st.tuples(st.just("unexclude"), st.integers(0, 30)),
    st.tuples(st.just("correct"), st.integers(0, 30), st.sampled_from(["an", "binh", None])),
    st.tuples(st.just("uncorrect"), st.integers(0, 30)),
    st.tuples(st.just("refresh")),
    st.tuples(st.just("resend")),
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ratings=st.lists(rating_st, min_size=1, max_size=14),
    ops=st.lists(op_st, max_size=14),
    order=st.randoms(use_true_random=False),
    chunk=st.integers(1, 5),
)
def test_rollups_equal_the_direct_query(
    engine: Engine, ratings: list[Any], ops: list[Any], order: Any, chunk: int
) -> None:
    run = next(_n)
    offices = [f"o{run}-a", f"o{run}-b"]
    terms: list[Term] = []
    for o in offices:
        add_office(engine, o)
        terms.append(new_terminal(engine, o))
    seqs = [0, 0]
    items: list[tuple[int, dict[str, Any]]] = []
    keys: list[tuple[int, Term, int]] = []
    for oi, ti, level, official, desk, code in ratings:
        t = terms[oi]
        seqs[oi] += 1
        seq = seqs[oi]
        it = t.item(seq, level, desk=desk, official_id=official,
                    case_code=f"HS-{code}" if code else None)  # fmt: skip
        it["raw"] = t.record(seq, level, t=TIMES[ti] - seq).hex()
        items.append((oi, it))
        keys.append((oi, t, seq))
    # batches of a few ratings each, sent in a random order (late and out of order)
    batches: list[tuple[str, str, list[Any]]] = []
    for oi in (0, 1):
        mine = [it for o, it in items if o == oi]
        for i in range(0, len(mine), chunk):
            batches.append((offices[oi], "ratings", mine[i : i + chunk]))
    ids = {
        "case": itertools.count(1),
        "exclusion": itertools.count(1),
        "correction": itertools.count(1),
    }
    active: dict[str, list[tuple[int, int, int]]] = {"exclusion": [], "correction": []}
    for op in ops:
        kind = op[0]
        if kind in ("refresh", "resend"):
            batches.append((kind, kind, []))
            continue
        if kind == "case":
            _, n, field, ti = op
            for oi in (0, 1):
                at = datetime.fromtimestamp(TIMES[ti], UTC).isoformat()
                item = {"id": next(ids["case"]), "code": f"HS-{n}", "desk_id": "quay-1",
                        "field": field, "official_id": "an", "handed_back_at": at}  # fmt: skip
                batches.append((offices[oi], "cases", [item]))
            continue
        oi, t, seq = keys[op[1] % len(keys)]
        stream = "exclusion" if "exclude" in kind else "correction"
        item: dict[str, Any] = {
            "id": next(ids[stream]),
            "rating": [t.terminal_id, t.epoch, seq],
            "created_at": "2026-07-03T00:00:00+00:00",
            "reverses": None,
        }
        if kind == "exclude":
            item["reason"] = op[2]
            active[stream].append((oi, item["id"], seq))
        elif kind == "correct":
            item.update(official_id=op[2], reason="nhầm")
            active[stream].append((oi, item["id"], seq))
        else:
            mine = [a for a in active[stream] if a[0] == oi]
            if not mine:
                continue
            target = mine[op[1] % len(mine)]
            active[stream].remove(target)
            item.update(reverses=target[1], reason="hủy")
            if stream == "correction":
                item["official_id"] = None
        batches.append((offices[oi], stream + "s", [item]))
    head, tail = batches[:1], batches[1:]
    order.shuffle(tail)
    sent: list[tuple[str, str, int, list[Any]]] = []
    pos: dict[tuple[str, str], int] = {}
    for office, stream, its in head + tail:
        if stream == "refresh":
            ru.refresh(engine, chunk=3)
            continue
        if stream == "resend":
            if sent:
                _send(engine, *sent[order.randrange(len(sent))])
            continue
        start = pos.get((office, stream), 0)
        pos[(office, stream)] = start + len(its)
        sent.append((office, stream, start, its))
        _send(engine, office, stream, start, its)
    spans = [resolve(x) for x in PERIODS] + [
        resolve(None, date(2025, 12, 15), date(2027, 1, 10)),  # years, months and days
        resolve(None, date(2026, 6, 30), None),
        resolve(None, None, date(2026, 7, 1)),
        resolve(),
    ]
    for p in spans:
        period = p.label
        for dim in ru.DIMS:
            ru.refresh(engine)
            with engine.connect() as conn:
                got = reports.counts(conn, p, dim, offices=offices)
                want = reports.counts(conn, p, dim, offices=offices, direct=True)
            assert {k: v.normal() for k, v in got.items()} == {
                k: v.normal() for k, v in want.items()
            }, (period, dim)
    # one office asked for: the other's rows stay out
    with engine.connect() as conn:
        only = reports.counts(conn, resolve("year:2026"), "office", offices=offices[:1])
    assert set(only) <= {(offices[0], "")}


def test_rebuild_gives_the_same_rows(engine: Engine) -> None:
    """The rollups are a cache: recomputing everything changes no figure."""
    add_office(engine, "rb")
    t = new_terminal(engine, "rb")
    _send(engine, "rb", "ratings", 0, [t.item(s, 1 + s % 3) for s in range(1, 9)])
    p = resolve("year:2026")
    before = reports.satisfaction(engine, p, by="official", offices=["rb"])
    stats = ru.rebuild(engine)
    assert stats.days >= 1
    after = reports.satisfaction(engine, p, by="official", offices=["rb"])
    assert before["rows"] == after["rows"]
