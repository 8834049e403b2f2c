"""The rollups give the same answers as the direct queries, whatever arrives in whatever order:
ratings on old days (late arrivals), re-sent ratings (duplicates, refused by the unique key), cases,
exclusions and reinstatements, corrections and their reversals, with refreshes in between (row
deltas) or after a large batch (whole days recomputed, ``BULK`` made small); the heat map per
channel too. Rollups built by an older version of the hub are rebuilt, not misread."""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub import reports
from hub.db import make_engine
from hub.periods import resolve
from hub.reports import rollup
from hub.reports.rollup import rollups_for

pytestmark = pytest.mark.unit

DAYS = [date(2026, 10, 31), date(2026, 11, 1), date(2026, 11, 15), date(2026, 11, 30),
        date(2026, 12, 1), date(2027, 1, 2)]  # fmt: skip
PERIODS = [resolve("month:2026-11"), resolve(None, date(2026, 11, 1), date(2026, 12, 1)),
           resolve(None, None, None), resolve("day:2026-11-30")]  # fmt: skip
HEAT_CHANNELS = [("terminal",), ("qr",), ("terminal", "qr")]

rating_op = st.tuples(
    st.just("rating"),
    st.sampled_from(range(len(DAYS))),
    st.integers(0, 23 * 3600),  # seconds into the UTC day: office days straddle it
    st.sampled_from(["q1", "q2", None]),
    st.sampled_from(["an", "binh", None]),
    st.sampled_from([(3, 1), (3, 2), (3, 3), (5, 3), (5, 1), (4, 4)]),
    st.sampled_from(["terminal", "qr"]),
    st.booleans(),  # link to a recent case
)
ops = st.lists(
    st.one_of(
        rating_op,
        st.tuples(st.just("dup"), st.integers(0, 10**6)),
        st.tuples(
            st.just("case"),
            st.sampled_from(range(len(DAYS))),
            st.integers(0, 80000),
            st.sampled_from(["q1", "q2"]),
            st.sampled_from(["an", "binh", None]),
            st.sampled_from(["Hộ tịch", "Cư trú", None]),
        ),  # fmt: skip
        st.tuples(
            st.just("exclude"),
            st.integers(0, 10**6),
            st.sampled_from(["repeat", "test", "on_behalf"]),
        ),  # fmt: skip
        st.tuples(st.just("reinstate"), st.integers(0, 10**6)),
        st.tuples(st.just("correct"), st.integers(0, 10**6), st.sampled_from(["an", "binh", None])),
        st.tuples(st.just("uncorrect"), st.integers(0, 10**6)),
        st.tuples(st.just("refresh")),
    ),
    max_size=60,
)


def _ts(day: date, sec: int) -> str:
    return f"{day.isoformat()} {sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}.000000"


def _apply(c: sqlite3.Connection, op: tuple[Any, ...], st_: dict[str, Any]) -> None:
    kind = op[0]
    if kind == "rating":
        _, di, sec, desk, off, (scale, level), channel, link = op
        case = st_["cases"][-1] if link and st_["cases"] else None
        st_["seq"] += 1
        c.execute(
            "INSERT OR IGNORE INTO rating (terminal_id, epoch, seq, office, desk, level, scale, "
            "reason, flags, press_time, clock_unknown, repeat, test, prompted, received_at, "
            "official_id, case_id, link_status, channel, raw, chain) VALUES ('t', 1, ?, 'o', ?, ?, "
            "?, 0, 0, ?, 0, 0, 0, 0, ?, ?, ?, ?, ?, ?, '')",
            (st_["seq"], desk, level, scale, _ts(DAYS[di], sec), _ts(DAYS[di], sec), off, case,
             "linked" if case else "no_case", channel, bytes(48)),
        )  # fmt: skip
    elif kind == "dup" and st_["seq"]:
        seq = op[1] % st_["seq"] + 1  # the same key again: the unique key refuses it
        c.execute(
            "INSERT OR IGNORE INTO rating (terminal_id, epoch, seq, office, level, scale, reason, "
            "flags, press_time, clock_unknown, repeat, test, prompted, received_at, link_status, "
            "channel, raw, chain) VALUES ('t', 1, ?, 'o', 1, 3, 0, 0, '2026-11-15 01:00:00.000000',"
            " 0, 0, 0, 0, '2026-11-15 01:00:00.000000', 'no_case', 'terminal', ?, '')",
            (seq, bytes(48)),
        )
    elif kind == "case":
        _, di, sec, desk, off, fld = op
        st_["code"] += 1
        cur = c.execute(
            'INSERT INTO "case" (office, code, field, desk_id, official_id, handed_back_at, '
            "source, actor, recorded_at) VALUES ('o', ?, ?, ?, ?, ?, 'api', 't', ?)",
            (f"C{st_['code']}", fld, desk, off, _ts(DAYS[di], sec % 86400), "2026-01-01"),
        )
        st_["cases"].append(cur.lastrowid)
    elif kind in ("exclude", "correct") and st_["seq"]:
        rid = op[1] % st_["seq"] + 1
        if kind == "exclude":
            c.execute(
                "INSERT INTO exclusion (rating_id, reason, actor, created_at) VALUES (?, ?, 't', '')",
                (rid, op[2]),
            )
        else:
            c.execute(
                "INSERT INTO correction (rating_id, official_id, reason, actor, created_at) "
                "VALUES (?, ?, 'x', 't', '')",
                (rid, op[2]),
            )
    elif kind in ("reinstate", "uncorrect"):
        table = "exclusion" if kind == "reinstate" else "correction"
        rows = c.execute(
            f"SELECT id FROM {table} x WHERE reverses IS NULL AND NOT EXISTS "  # noqa: S608
            f"(SELECT 1 FROM {table} b WHERE b.reverses = x.id) ORDER BY id"
        ).fetchall()
        if rows:
            target = rows[op[1] % len(rows)][0]
            c.execute(
                f"INSERT INTO {table} (rating_id, reverses, reason, actor, created_at"  # noqa: S608
                + (", official_id" if table == "correction" else "")
                + ") SELECT rating_id, id, reason, 't', ''"
                + (", official_id" if table == "correction" else "")
                + f" FROM {table} WHERE id = ?",
                (target,),
            )


@cache
def _template() -> Path:
    path = Path(tempfile.mkdtemp(prefix="sipas-reports-")) / "template.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


def _strip(rep: dict[str, Any]) -> dict[str, Any]:
    rep = dict(rep)
    rep.pop("generated_at", None)
    return rep


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(ops=ops, bulk=st.sampled_from([3, 20_000]))
def test_rollups_equal_direct_queries(
    ops: list[tuple[Any, ...]], bulk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rollup, "BULK", bulk)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hub.sqlite3"
        shutil.copy(_template(), path)  # the hub's schema, made once
        engine = make_engine(f"sqlite:///{path}")
        ro = rollups_for(engine)
        c = sqlite3.connect(path, isolation_level=None)
        state: dict[str, Any] = {"seq": 0, "code": 0, "cases": []}
        try:
            for op in ops:
                if op[0] == "refresh":
                    ro.refresh()
                else:
                    _apply(c, op, state)
            for i, p in enumerate(PERIODS):
                for by in reports.BY if i < 2 else ("official", "field"):
                    a = reports.counts(engine, p, by=by)
                    b = reports.counts(engine, p, by=by, direct=True)
                    assert {k: v.normal() for k, v in a.items()} == {
                        k: v.normal() for k, v in b.items()
                    }, (p.label, by)
                for f in (reports.Filters(), reports.Filters(desk="q1", official="an")):
                    per_channel = []
                    for chans in HEAT_CHANNELS:
                        a_h = reports.heatmap(engine, p, channels=chans, filters=f)
                        b_h = reports.heatmap(engine, p, channels=chans, filters=f, direct=True)
                        assert _strip(a_h) == _strip(b_h), (p.label, chans, f)
                        per_channel.append(a_h)
                    # terminal + QR = both: every rating is in exactly one channel's cells
                    term, qr, both = per_channel
                    for ct, cq, cb in zip(term["cells"], qr["cells"], both["cells"], strict=True):
                        for k in ("valid", "satisfied", "excluded"):
                            assert ct[k] + cq[k] == cb[k], (p.label, ct, cq, cb)
            # and a rebuild from nothing lands on the same rollups
            before = reports.counts(engine, PERIODS[2], by="official")
            ro.rebuild()
            after = reports.counts(engine, PERIODS[2], by="official")
            assert {k: v.normal() for k, v in before.items()} == {
                k: v.normal() for k, v in after.items()
            }
        finally:
            c.close()
            ro.close()
            engine.dispose()


# report_heat as hub versions before the heat map's channel filter built it (rollup schema 2)
_HEAT_V2 = (
    "CREATE TABLE report_heat (grain TEXT NOT NULL, period TEXT NOT NULL, weekday INTEGER NOT NULL, "
    "hour INTEGER NOT NULL, desk TEXT NOT NULL DEFAULT '', official TEXT NOT NULL DEFAULT '', "
    "n_valid INTEGER NOT NULL, n_sat INTEGER NOT NULL, n_excl INTEGER NOT NULL, "
    "UNIQUE (grain, period, weekday, hour, desk, official))"
)


def test_rollups_of_an_older_hub_are_rebuilt_with_the_channel(tmp_path: Path) -> None:
    """A hub upgraded in place: its database holds rollups (schema 2, no channel in report_heat)
    that are up to date with every rating. The new version must rebuild them, not read them, so
    the heat map of QR ratings only shows the QR ratings from the first request on."""
    path = tmp_path / "hub.sqlite3"
    shutil.copy(_template(), path)
    c = sqlite3.connect(path, isolation_level=None)
    state: dict[str, Any] = {"seq": 0, "code": 0, "cases": []}
    # Sunday 15/11/2026 (weekday 6): terminal ratings at 09:xx office time, a QR rating at 14:xx
    for sec, (scale, level), channel in (
        (2 * 3600, (3, 1), "terminal"),
        (2 * 3600 + 60, (3, 3), "terminal"),
        (7 * 3600, (3, 1), "qr"),
    ):
        _apply(c, ("rating", 2, sec, "q1", "an", (scale, level), channel, False), state)
    old = make_engine(f"sqlite:///{path}")
    ro = rollups_for(old)
    ro.refresh()  # the rollups as the old hub left them: watermarks at the newest ids
    ro.close()
    old.dispose()
    c.execute("DROP TABLE report_heat")
    c.execute(_HEAT_V2)
    c.execute(
        "INSERT INTO report_heat VALUES ('m', '2026-11', 6, 3, 'q1', 'an', 5, 5, 0), "
        "('d', '2026-11-15', 6, 3, 'q1', 'an', 5, 5, 0)"
    )  # stale rows of the old layout, at an hour with no rating: a rebuild must drop them
    c.execute("UPDATE report_state SET value = 2 WHERE name = 'schema'")
    c.close()

    engine = make_engine(f"sqlite:///{path}")
    try:
        for chans, want in (
            (("qr",), {(6, 14): (1, 1)}),
            (("terminal",), {(6, 9): (2, 1)}),
            (("terminal", "qr"), {(6, 9): (2, 1), (6, 14): (1, 1)}),
        ):
            for direct in (False, True):
                h = reports.heatmap(engine, PERIODS[0], channels=chans, direct=direct)
                got = {
                    (x["weekday"], x["hour"]): (x["valid"], x["satisfied"])
                    for x in h["cells"]
                    if x["valid"]
                }
                assert got == want, (chans, direct)
                assert h["channels"] == list(chans)
        cols = {r[1] for r in rollups_for(engine).conn().execute("PRAGMA table_info(report_heat)")}
        assert "channel" in cols
    finally:
        rollups_for(engine).close()
        engine.dispose()
