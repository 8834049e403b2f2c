"""Rollups of the ratings, kept correct by watermarks and dirty days (docs/reports.md, "Speed").

Reports over a million ratings must answer in well under a second on a Raspberry Pi, so they read
small summary tables instead of the rating table:

- ``report_rating``: valid and excluded ratings per office day (and per month) × desk × official
  (after corrections) × field (through the linked case) × channel × scale × level;
- ``report_excl``: excluded ratings per reason, same keys without scale and level;
- ``report_heat``: per day (and month) × weekday × hour × desk × official × channel: valid,
  satisfied, excluded;
- ``report_case``: cases handed back per day (and month) × desk × official × field, and how many of
  them have a valid rating (response rate).

The ingest hot path is not touched. Instead, ``refresh`` (run before every report) looks at what
was stored since the last refresh, by id watermarks on the append-only tables (rating, exclusion,
correction, case): a late or re-sent rating, a new exclusion or reinstatement, a correction or a new
case marks the office days it touches as dirty; dirty days are recomputed from the source rows, and
their months re-summed from the days. Duplicates never reach the rating table (unique key), so they
cannot be counted twice. The rollups are a cache: ``rebuild`` drops and recomputes them, and the
property test in tests/unit/test_reports_rollup.py checks them against :mod:`hub.reports.direct`.

Office days are computed in SQL with the office zone's fixed UTC offset (Asia/Ho_Chi_Minh has had
no daylight saving since 1975); a zone with daylight saving is refused.

``SCHEMA_VERSION`` is bumped whenever a rollup table's layout changes: a database whose rollups were
built by another version has them dropped and rebuilt on first use (they are a cache).
"""

from __future__ import annotations

import sqlite3
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine

from hub.office import OFFICE_TZ
from hub.reports.stats import is_satisfied

SCHEMA_VERSION = 3  # 3: report_heat per channel
_DIMS = ("desk", "official", "field")
# Key columns hold '' for "none" (NULL would defeat the unique keys the upserts need).
_K = "TEXT NOT NULL DEFAULT ''"
_DDL = (
    "CREATE TABLE IF NOT EXISTS report_state (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS report_dirty (kind TEXT NOT NULL, period TEXT NOT NULL, "
    "PRIMARY KEY (kind, period)) WITHOUT ROWID",
    f"CREATE TABLE IF NOT EXISTS report_rating (grain TEXT NOT NULL, period TEXT NOT NULL, "
    f"desk {_K}, official {_K}, field {_K}, channel TEXT NOT NULL, scale INTEGER NOT NULL, "
    "level INTEGER NOT NULL, n_valid INTEGER NOT NULL, n_excl INTEGER NOT NULL, "
    "UNIQUE (grain, period, desk, official, field, channel, scale, level))",
    f"CREATE TABLE IF NOT EXISTS report_excl (grain TEXT NOT NULL, period TEXT NOT NULL, "
    f"desk {_K}, official {_K}, field {_K}, channel TEXT NOT NULL, reason TEXT NOT NULL, "
    "n INTEGER NOT NULL, UNIQUE (grain, period, desk, official, field, channel, reason))",
    "CREATE TABLE IF NOT EXISTS report_heat (grain TEXT NOT NULL, period TEXT NOT NULL, "
    f"weekday INTEGER NOT NULL, hour INTEGER NOT NULL, desk {_K}, official {_K}, "
    "channel TEXT NOT NULL, n_valid INTEGER NOT NULL, n_sat INTEGER NOT NULL, "
    "n_excl INTEGER NOT NULL, UNIQUE (grain, period, weekday, hour, desk, official, channel))",
    "CREATE TABLE IF NOT EXISTS report_case (grain TEXT NOT NULL, period TEXT NOT NULL, "
    f"desk {_K}, official {_K}, field {_K}, cases INTEGER NOT NULL, rated INTEGER NOT NULL, "
    "UNIQUE (grain, period, desk, official, field))",
)
_TABLES = ("report_rating", "report_excl", "report_heat", "report_case")
_SOURCES = ("rating", "exclusion", "correction", "case")
_TARGET = tuple(f"target_{s}" for s in _SOURCES)
_CHUNK_DAYS = 31  # days recomputed per transaction in a bulk refresh (ingest waits at most this)
BULK = 20_000  # more changed rows than this: recompute whole days instead of row deltas
_UPSERT = {
    "report_rating": (
        "INSERT INTO report_rating VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT "
        "(grain, period, desk, official, field, channel, scale, level) DO UPDATE SET "
        "n_valid = n_valid + excluded.n_valid, n_excl = n_excl + excluded.n_excl"
    ),
    "report_excl": (
        "INSERT INTO report_excl VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT "
        "(grain, period, desk, official, field, channel, reason) DO UPDATE SET n = n + excluded.n"
    ),
    "report_heat": (
        "INSERT INTO report_heat VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT "
        "(grain, period, weekday, hour, desk, official, channel) DO UPDATE SET "
        "n_valid = n_valid + excluded.n_valid, n_sat = n_sat + excluded.n_sat, "
        "n_excl = n_excl + excluded.n_excl"
    ),
    "report_case": (
        "INSERT INTO report_case VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT "
        "(grain, period, desk, official, field) DO UPDATE SET "
        "cases = cases + excluded.cases, rated = rated + excluded.rated"
    ),
}


def sql_offset(tz: ZoneInfo = OFFICE_TZ) -> str:
    """The SQLite date modifier turning stored UTC into office time, e.g. '+25200 seconds'."""
    offsets = {
        tz.utcoffset(datetime(y, m, 1)) for y in (2000, 2025, 2030, 2040) for m in (1, 4, 7, 10)
    }
    if len(offsets) != 1:
        raise ValueError(f"time zone {tz.key} has daylight saving: reports need a fixed offset")
    (off,) = offsets
    assert off is not None
    return f"{int(off.total_seconds()):+d} seconds"


OFF = sql_offset()

# SQL fragments over ``rating r`` shared with hub.reports.direct (the same rules in both paths).
ACTIVE_EXCLUSION = (
    "e.rating_id = r.id AND e.reverses IS NULL "
    "AND NOT EXISTS (SELECT 1 FROM exclusion b WHERE b.reverses = e.id)"
)
EXCLUDED = f"EXISTS (SELECT 1 FROM exclusion e WHERE {ACTIVE_EXCLUSION})"
_ACTIVE_CORRECTION = (
    "FROM correction c WHERE c.rating_id = r.id AND c.reverses IS NULL "
    "AND NOT EXISTS (SELECT 1 FROM correction b WHERE b.reverses = c.id)"
)
# The latest correction that was not taken back wins; it may say "nobody" (NULL).
OFFICIAL = (
    f"CASE WHEN EXISTS (SELECT 1 {_ACTIVE_CORRECTION}) "
    f"THEN (SELECT c.official_id {_ACTIVE_CORRECTION} ORDER BY c.id DESC LIMIT 1) "
    "ELSE r.official_id END"
)
RATED_CASE = (
    "EXISTS (SELECT 1 FROM rating r WHERE r.case_id = ca.id "
    f"AND r.link_status IN ('linked', 'late') AND NOT {EXCLUDED})"
)


def db_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def day_bounds(first: date, last: date) -> tuple[str, str]:
    """UTC text bounds [start, end) of office days first..last."""
    from hub.periods import day_start

    return db_time(day_start(first)), db_time(day_start(last + timedelta(days=1)))


# -- slices of a period: whole months from the month rollup, the rest from days --------------------
Slice = tuple[str, str, str]  # grain, low, high (inclusive, as text)


def _month_end(d: date) -> date:
    nxt = date(d.year + d.month // 12, d.month % 12 + 1, 1)
    return nxt - timedelta(days=1)


def slices(first: date | None, last: date | None) -> list[Slice]:
    if first is None and last is None:
        return [("m", "0000-00", "9999-99")]
    if first is not None and last is not None and last < first:
        return []
    # the first whole month at or after `first`, the last whole month at or before `last`
    if first is None:
        m_lo = "0000-00"
    elif first.day == 1:
        m_lo = first.strftime("%Y-%m")
    else:
        m_lo = (_month_end(first) + timedelta(days=1)).strftime("%Y-%m")
    if last is None:
        m_hi = "9999-99"
    elif last == _month_end(last):
        m_hi = last.strftime("%Y-%m")
    else:
        m_hi = (last.replace(day=1) - timedelta(days=1)).strftime("%Y-%m")
    if m_lo > m_hi:  # no whole month inside: days only
        assert first is not None and last is not None
        return [("d", first.isoformat(), last.isoformat())]
    out: list[Slice] = [("m", m_lo, m_hi)]
    if first is not None and first.strftime("%Y-%m") < m_lo:
        out.append(("d", first.isoformat(), f"{first.strftime('%Y-%m')}-31"))
    if last is not None and last.strftime("%Y-%m") > m_hi:
        out.append(("d", f"{last.strftime('%Y-%m')}-01", last.isoformat()))
    return out


def slice_sql(sl: Sequence[Slice]) -> tuple[str, list[str]]:
    if not sl:
        return "0", []
    parts, args = [], []
    for grain, lo, hi in sl:
        parts.append("(grain = ? AND period BETWEEN ? AND ?)")
        args += [grain, lo, hi]
    return "(" + " OR ".join(parts) + ")", args


# As of watermarks (named parameters :wr, :we, :wc, :wk): the state the rollups hold once they
# have taken in the rows up to those ids. Refreshes are exact because they compute a changed rating
# before (old watermarks) and after (new ones) and apply the difference.
_EXCL_AT = (
    "e.rating_id = r.id AND e.id <= :we AND e.reverses IS NULL "
    "AND NOT EXISTS (SELECT 1 FROM exclusion b WHERE b.reverses = e.id AND b.id <= :we)"
)
_CORR_AT = (
    "FROM correction c WHERE c.rating_id = r.id AND c.id <= :wc AND c.reverses IS NULL "
    "AND NOT EXISTS (SELECT 1 FROM correction b WHERE b.reverses = c.id AND b.id <= :wc)"
)
_OFFICIAL_AT = (
    f"CASE WHEN EXISTS (SELECT 1 {_CORR_AT}) "
    f"THEN (SELECT c.official_id {_CORR_AT} ORDER BY c.id DESC LIMIT 1) ELSE r.official_id END"
)
_RATED_AT = (
    "EXISTS (SELECT 1 FROM rating r WHERE r.case_id = ca.id AND r.id <= :wr "
    f"AND r.link_status IN ('linked', 'late') AND NOT EXISTS (SELECT 1 FROM exclusion e "
    f"WHERE {_EXCL_AT}))"
)
_RATING_STATE = (
    "SELECT date(r.press_time, :off), CAST(strftime('%H', r.press_time, :off) AS INTEGER), "
    f"COALESCE(r.desk, ''), COALESCE({_OFFICIAL_AT}, ''), COALESCE(ca.field, ''), r.channel, "
    f"r.scale, r.level, (SELECT group_concat(e.reason, char(31)) FROM exclusion e "
    f'WHERE {_EXCL_AT}) FROM {{src}} LEFT JOIN "case" ca ON ca.id = r.case_id '
    "WHERE r.id <= :wr {where}"
)
_CASE_STATE = (
    "SELECT date(ca.handed_back_at, :off), COALESCE(ca.desk_id, ''), "
    f"COALESCE(ca.official_id, ''), COALESCE(ca.field, ''), {_RATED_AT} FROM {{src}} "
    "WHERE ca.id <= :wk {where}"
)


@dataclass
class RefreshStats:
    mode: str = "none"  # none | delta | bulk
    ratings: int = 0  # ratings whose contribution was recomputed (delta)
    cases: int = 0
    days: int = 0  # days recomputed (bulk)
    months: int = 0
    seconds: float = 0.0
    new: dict[str, int] = field(default_factory=dict)


class _Acc:
    """Signed contributions to the rollup tables, for both grains (day and month)."""

    def __init__(self) -> None:
        self.t: dict[str, dict[tuple[object, ...], list[int]]] = {n: {} for n in _TABLES}

    def _add(self, table: str, key: tuple[object, ...], vals: tuple[int, ...]) -> None:
        for k in (("d", *key), ("m", str(key[0])[:7], *key[1:])):
            cur = self.t[table].get(k)
            if cur is None:
                self.t[table][k] = list(vals)
            else:
                for i, v in enumerate(vals):
                    cur[i] += v

    def rating(self, st: tuple[Any, ...], sign: int) -> None:
        day, hour, desk, off, fld, channel, scale, level, reasons = st
        wd = date.fromisoformat(day).weekday()
        if reasons is None:
            self._add("report_rating", (day, desk, off, fld, channel, scale, level), (sign, 0))
            sat = sign if is_satisfied(level, scale) else 0
            self._add("report_heat", (day, wd, hour, desk, off, channel), (sign, sat, 0))
        else:
            self._add("report_rating", (day, desk, off, fld, channel, scale, level), (0, sign))
            self._add("report_heat", (day, wd, hour, desk, off, channel), (0, 0, sign))
            for reason in set(reasons.split("\x1f")):
                self._add("report_excl", (day, desk, off, fld, channel, reason), (sign,))

    def case(self, st: tuple[Any, ...], sign: int) -> None:
        day, desk, off, fld, rated = st
        self._add("report_case", (day, desk, off, fld), (sign, sign if rated else 0))

    def write(self, c: sqlite3.Connection, grains: tuple[str, ...] = ("d", "m")) -> None:
        months: set[str] = set()
        for table, rows in self.t.items():
            c.executemany(
                _UPSERT[table],
                [(*k, *v) for k, v in rows.items() if k[0] in grains and any(v)],
            )
            months.update(str(k[1])[:7] for k in rows)
        bump_months(c, months)


def bump_months(c: sqlite3.Connection, months: Iterable[str]) -> None:
    """A month's figures changed: what was made from them (a cached export) is stale."""
    c.executemany(
        "INSERT INTO report_state (name, value) VALUES (?, 1) "
        "ON CONFLICT (name) DO UPDATE SET value = value + 1",
        [(f"v:{m}",) for m in sorted(months)],
    )


def month_version(c: sqlite3.Connection, month: str) -> int:
    row = c.execute("SELECT value FROM report_state WHERE name = ?", (f"v:{month}",)).fetchone()
    return int(row[0]) if row else 0


_lock = threading.Lock()


def _connect(engine: Engine) -> sqlite3.Connection:
    url = engine.url
    if url.get_backend_name() != "sqlite" or not url.database:
        raise ValueError("the report rollups need the hub's SQLite database")
    conn = sqlite3.connect(url.database, timeout=30, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA temp_store=MEMORY")
    return conn


class Rollups:
    """One hub database's rollups. Thread-safe; one refresh at a time per process, and SQLite's
    write lock (BEGIN IMMEDIATE) keeps processes apart."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._local = threading.local()

    def conn(self) -> sqlite3.Connection:
        c: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if c is None:
            c = _connect(self.engine)
            self._local.conn = c
            self._ensure(c)
        return c

    def close(self) -> None:
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None

    def _txn(self, c: sqlite3.Connection, fn: Any, *a: Any) -> Any:
        c.execute("BEGIN IMMEDIATE")
        try:
            out = fn(c, *a)
            c.execute("COMMIT")
            return out
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def _ensure(self, c: sqlite3.Connection) -> None:
        def work(c: sqlite3.Connection) -> None:
            for stmt in _DDL:
                c.execute(stmt)
            row = c.execute("SELECT value FROM report_state WHERE name = 'schema'").fetchone()
            if row is None or row[0] != SCHEMA_VERSION:
                for t in _TABLES:
                    c.execute(f"DROP TABLE IF EXISTS {t}")  # noqa: S608 (fixed names)
                for stmt in _DDL:
                    c.execute(stmt)
                self._reset(c)

        with _lock:
            self._txn(c, work)

    def _reset(self, c: sqlite3.Connection) -> None:
        for t in (*_TABLES, "report_dirty"):
            c.execute(f"DELETE FROM {t}")  # noqa: S608 (fixed names)
        # month versions survive a reset (and move on): a cached export is never taken for new
        c.execute("DELETE FROM report_state WHERE name NOT LIKE 'v:%'")
        c.execute("UPDATE report_state SET value = value + 1 WHERE name LIKE 'v:%'")
        c.executemany(
            "INSERT INTO report_state (name, value) VALUES (?, 0)",
            [(s,) for s in (*_SOURCES, *_TARGET)],
        )
        c.execute("INSERT INTO report_state (name, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))

    def rebuild(self) -> RefreshStats:
        """Forget the rollups and compute them again from the source tables."""
        c = self.conn()
        with _lock:
            self._txn(c, self._reset)
        return self.refresh()

    def refresh(self) -> RefreshStats:
        """Bring the rollups up to date with everything committed so far."""
        t0 = time.perf_counter()
        c = self.conn()
        st = RefreshStats()
        with _lock:
            while self._txn(c, self._step, st):
                pass
        st.seconds = time.perf_counter() - t0
        return st

    def _step(self, c: sqlite3.Connection, st: RefreshStats) -> bool:
        """One transaction of work; True if there is more."""
        state = dict(c.execute("SELECT name, value FROM report_state").fetchall())
        if c.execute("SELECT 1 FROM report_dirty LIMIT 1").fetchone():
            return self._bulk_chunk(c, state, st)  # a bulk refresh under way: go on with it
        old = {s: state[s] for s in _SOURCES}
        new = {
            s: c.execute(f'SELECT COALESCE(MAX(id), 0) FROM "{s}"').fetchone()[0]  # noqa: S608
            for s in _SOURCES
        }
        if new == old:
            return False
        st.new = {s: new[s] - old[s] for s in _SOURCES if new[s] != old[s]}
        if sum(st.new.values()) > BULK:
            self._bulk_start(c, old, new, st)
            return True
        self._delta(c, old, new, st)
        c.executemany(
            "UPDATE report_state SET value = ? WHERE name = ?", [(new[s], s) for s in _SOURCES]
        )
        return False

    @staticmethod
    def _params(w: dict[str, int]) -> dict[str, object]:
        return {
            "wr": w["rating"], "we": w["exclusion"], "wc": w["correction"], "wk": w["case"],
            "off": OFF,
        }  # fmt: skip

    def _affected(self, c: sqlite3.Connection, old: dict[str, int], new: dict[str, int]) -> None:
        """Temp tables _aff (rating ids) and _affc (case ids) touched between old and new."""
        c.execute("CREATE TEMP TABLE IF NOT EXISTS _aff (id INTEGER PRIMARY KEY)")
        c.execute("CREATE TEMP TABLE IF NOT EXISTS _affc (id INTEGER PRIMARY KEY)")
        c.execute("DELETE FROM _aff")
        c.execute("DELETE FROM _affc")
        ins = "INSERT OR IGNORE INTO _aff "
        c.execute(
            ins + "SELECT id FROM rating WHERE id > ? AND id <= ?", (old["rating"], new["rating"])
        )
        for src in ("exclusion", "correction"):
            c.execute(
                ins + f"SELECT rating_id FROM {src} WHERE id > ? AND id <= ?",  # noqa: S608
                (old[src], new[src]),
            )
        c.execute(
            'INSERT OR IGNORE INTO _affc SELECT id FROM "case" WHERE id > ? AND id <= ?',
            (old["case"], new["case"]),
        )
        c.execute(
            "INSERT OR IGNORE INTO _affc SELECT cid FROM (SELECT (SELECT r.case_id FROM rating r "
            "WHERE r.id = a.id) AS cid FROM _aff a) WHERE cid IS NOT NULL"
        )

    def _delta(
        self, c: sqlite3.Connection, old: dict[str, int], new: dict[str, int], st: RefreshStats
    ) -> None:
        self._affected(c, old, new)
        acc = _Acc()
        # CROSS JOIN: SQLite keeps this order, so it walks the few changed ids and looks each up
        # (the planner knows nothing of a temp table and might scan a million ratings instead)
        rq = _RATING_STATE.format(src="_aff a CROSS JOIN rating r ON r.id = a.id", where="")
        cq = _CASE_STATE.format(src='_affc a CROSS JOIN "case" ca ON ca.id = a.id', where="")
        for w, sign in ((old, -1), (new, 1)):
            for row in c.execute(rq, self._params(w)):
                acc.rating(row, sign)
            for row in c.execute(cq, self._params(w)):
                acc.case(row, sign)
        acc.write(c)
        st.mode = "delta"
        st.ratings = c.execute("SELECT COUNT(*) FROM _aff").fetchone()[0]
        st.cases = c.execute("SELECT COUNT(*) FROM _affc").fetchone()[0]

    def _bulk_start(
        self, c: sqlite3.Connection, old: dict[str, int], new: dict[str, int], st: RefreshStats
    ) -> None:
        """Many changes: mark the days they touch and recompute those days as of ``new``, a
        chunk of days per transaction (a year of ratings must not hold ingest up for long)."""
        self._affected(c, old, new)
        ins = "INSERT OR IGNORE INTO report_dirty (kind, period) "
        c.execute(
            ins + "SELECT DISTINCT 'd', date(r.press_time, ?) FROM _aff a JOIN rating r "
            "ON r.id = a.id",
            (OFF,),
        )
        c.execute(
            ins + "SELECT DISTINCT 'd', date(ca.handed_back_at, ?) FROM _affc a "
            'JOIN "case" ca ON ca.id = a.id',
            (OFF,),
        )
        c.executemany(
            "UPDATE report_state SET value = ? WHERE name = ?",
            [(new[s], f"target_{s}") for s in _SOURCES],
        )
        st.mode = "bulk"

    def _bulk_chunk(self, c: sqlite3.Connection, state: dict[str, int], st: RefreshStats) -> bool:
        target = {s: state[f"target_{s}"] for s in _SOURCES}
        st.mode = "bulk"
        days = [
            date.fromisoformat(p)
            for (p,) in c.execute(
                "SELECT period FROM report_dirty WHERE kind = 'd' ORDER BY period LIMIT ?",
                (_CHUNK_DAYS,),
            )
        ]
        if days:
            for first, last in _runs(days):
                self._recompute_days(c, first, last, target)
            st.days += len(days)
            c.executemany(
                "DELETE FROM report_dirty WHERE kind = 'd' AND period = ?",
                [(d.isoformat(),) for d in days],
            )
            c.executemany(
                "INSERT OR IGNORE INTO report_dirty (kind, period) VALUES ('m', ?)",
                [(m,) for m in sorted({d.isoformat()[:7] for d in days})],
            )
            return True
        months = [p for (p,) in c.execute("SELECT period FROM report_dirty WHERE kind = 'm'")]
        for m in months:
            self._month(c, m)
        bump_months(c, months)
        st.months += len(months)
        c.execute("DELETE FROM report_dirty")
        c.executemany(
            "UPDATE report_state SET value = ? WHERE name = ?",
            [(target[s], s) for s in _SOURCES],
        )
        return True  # then the delta from the target to whatever arrived meanwhile

    def _recompute_days(
        self, c: sqlite3.Connection, first: date, last: date, w: dict[str, int]
    ) -> None:
        lo, hi = first.isoformat(), last.isoformat()
        for t in _TABLES:
            c.execute(
                f"DELETE FROM {t} WHERE grain = 'd' AND period BETWEEN ? AND ?",  # noqa: S608
                (lo, hi),
            )
        start, end = day_bounds(first, last)
        p = {**self._params(w), "start": start, "end": end}
        acc = _Acc()
        for row in c.execute(
            _RATING_STATE.format(
                src="rating r", where="AND r.press_time >= :start AND r.press_time < :end"
            ),
            p,
        ):
            acc.rating(row, 1)
        for row in c.execute(
            _CASE_STATE.format(
                src='"case" ca',
                where="AND ca.handed_back_at >= :start AND ca.handed_back_at < :end",
            ),
            p,
        ):
            acc.case(row, 1)
        acc.write(c, grains=("d",))

    def _month(self, c: sqlite3.Connection, month: str) -> None:
        lo, hi = f"{month}-01", f"{month}-31"
        for t, keys, sums in (
            ("report_rating", "desk, official, field, channel, scale, level", "n_valid, n_excl"),
            ("report_excl", "desk, official, field, channel, reason", "n"),
            ("report_heat", "weekday, hour, desk, official, channel", "n_valid, n_sat, n_excl"),
            ("report_case", "desk, official, field", "cases, rated"),
        ):
            total = ", ".join(f"SUM({s})" for s in sums.split(", "))
            c.execute(f"DELETE FROM {t} WHERE grain = 'm' AND period = ?", (month,))  # noqa: S608
            c.execute(
                f"INSERT INTO {t} (grain, period, {keys}, {sums}) "  # noqa: S608
                f"SELECT 'm', ?, {keys}, {total} FROM {t} "
                f"WHERE grain = 'd' AND period BETWEEN ? AND ? GROUP BY {keys}",
                (month, lo, hi),
            )


def _runs(days: Iterable[date]) -> list[tuple[date, date]]:
    """Consecutive days grouped: [d1, d2, d3, d7] -> [(d1, d3), (d7, d7)]."""
    out: list[tuple[date, date]] = []
    for d in sorted(days):
        if out and d - out[-1][1] == timedelta(days=1):
            out[-1] = (out[-1][0], d)
        else:
            out.append((d, d))
    return out


_instances: weakref.WeakKeyDictionary[Engine, Rollups] = weakref.WeakKeyDictionary()
_instances_lock = threading.Lock()


def rollups_for(engine: Engine) -> Rollups:
    """The process's Rollups object for an engine (one per database)."""
    with _instances_lock:
        r = _instances.get(engine)
        if r is None:
            r = _instances[engine] = Rollups(engine)
        return r
