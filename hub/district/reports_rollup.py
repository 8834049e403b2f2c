"""The district's report rollups: counts per office day and month, kept correct as batches arrive
late and out of order (docs/district.md, "Reports").

Which ratings count, and for whom, follows the hub's rules (docs/reports.md) on the synced tables:

- valid: no active exclusion (an exclusion of the same office whose hub id no later exclusion
  ``reverses``);
- official: the rating's, unless a correction of the same office is active: then the latest one
  (by hub id) that was not taken back, which may say "nobody";
- field: the field of the office's case whose code the rating carries (the hub's linked case);
- a case is rated when a valid rating with link status ``linked`` or ``late`` carries its code;
- office time is Asia/Ho_Chi_Minh (fixed +7 h): a day is an office day.

**How late arrivals stay correct.** Every batch marks the office days it may change in
``report_dirty``, in the batch's own transaction (:func:`mark_batch`): the days of the ratings it
stored, of the ratings an exclusion or correction names, of the ratings carrying a new case's code,
and the hand-back days of the cases those ratings link to. A report first runs :func:`refresh`, which
claims dirty days, recomputes their rows from the source tables and re-sums their months, a chunk
per transaction, one refresh at a time (an advisory lock on PostgreSQL; SQLite has one writer).
A day is marked with ``ON CONFLICT DO UPDATE``, which locks the row: a refresh that claims (deletes)
it either waits for the batch to commit and then sees its rows, or has already deleted it and the
batch marks it again. Either way no change is lost, whatever the number of API processes. The
rollups are a cache: :func:`rebuild` marks every day and recomputes.

Reports read whole years from the year rows, whole months from the month rows and the days at the
edges of a period from the day rows (:func:`year_slices` over the hub's
:func:`hub.reports.rollup.slices`). :func:`direct_counts` computes the same
:class:`~hub.reports.query.Counts` straight from the rating table (the reference the property test
compares with, and the benchmark's baseline).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, bindparam, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import TextClause

from hub import protocol
from hub.periods import day_start
from hub.reports.query import Counts
from hub.reports.rollup import slices

DIMS = ("office", "desk", "official", "field")
ELECTRONIC = ("terminal", "qr")
OFFSET_HOURS = 7  # Asia/Ho_Chi_Minh, no daylight saving since 1975 (hub/reports/rollup.py checks)
CHUNK = 64  # dirty office days recomputed per transaction
_LOCK_KEY = 0x51_9A_5D_15  # pg_advisory_xact_lock: one refresh at a time per database
_TS = DateTime(timezone=True)
Key = tuple[str, str]  # (office, unit); unit '' = none


def day_sql(dialect: str, col: str) -> str:
    """The office day (YYYY-MM-DD) of a UTC timestamp column, in SQL."""
    if dialect == "postgresql":
        return f"to_char({col} AT TIME ZONE 'Asia/Ho_Chi_Minh', 'YYYY-MM-DD')"
    return f"date({col}, '+{OFFSET_HOURS * 3600} seconds')"


def _dialect(conn: Connection) -> str:
    return conn.dialect.name


def no_jit(conn: Connection) -> None:
    """PostgreSQL's JIT compiles these many-subquery statements for 100 ms and more each time, for
    queries that then run in a few ms: off for this transaction."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SET LOCAL jit = off"))


# -- the rules, as SQL over ``rating r`` -----------------------------------------------------------
_ACTIVE_EXCL = (
    "e.office = r.office AND e.terminal_id = r.terminal_id AND e.epoch = r.epoch "
    "AND e.seq = r.seq AND e.reverses IS NULL AND NOT EXISTS (SELECT 1 FROM exclusion b "
    "WHERE b.office = e.office AND b.reverses = e.hub_id)"
)
EXCLUDED = f"EXISTS (SELECT 1 FROM exclusion e WHERE {_ACTIVE_EXCL})"
_ACTIVE_CORR = (
    "FROM correction c WHERE c.office = r.office AND c.terminal_id = r.terminal_id "
    "AND c.epoch = r.epoch AND c.seq = r.seq AND c.reverses IS NULL AND NOT EXISTS "
    "(SELECT 1 FROM correction b WHERE b.office = c.office AND b.reverses = c.hub_id)"
)
# No "ORDER BY ... LIMIT 1" below: PostgreSQL would walk the (office, hub_id) index in order and
# filter, i.e. scan the office's rows for every rating; MAX/MIN over the rating's (or code's) own
# index rows is what is meant.
OFFICIAL = (
    f"CASE WHEN EXISTS (SELECT 1 {_ACTIVE_CORR}) THEN (SELECT w.official_id FROM correction w "
    f"WHERE w.office = r.office AND w.hub_id = (SELECT MAX(c.hub_id) {_ACTIVE_CORR})) "
    "ELSE r.official_id END"
)
FIELD = (
    "(SELECT MIN(ca.field) FROM case_file ca WHERE ca.office = r.office AND ca.code = r.case_code)"
)
RATED = (
    "CASE WHEN EXISTS (SELECT 1 FROM rating r WHERE r.office = ca.office AND r.case_code = ca.code "
    f"AND r.link_status IN ('linked', 'late') AND NOT {EXCLUDED}) THEN 1 ELSE 0 END"
)


def _rating_state(dialect: str, where: str) -> str:
    """One row per rating: office, day, desk, official, field, channel, scale, level, x (excluded)."""
    return (
        f"SELECT r.office AS office, {day_sql(dialect, 'r.press_time')} AS day, "
        f"COALESCE(r.desk, '') AS desk, COALESCE({OFFICIAL}, '') AS official, "
        f"COALESCE({FIELD}, '') AS field, r.channel AS channel, r.scale AS scale, "
        f"r.level AS level, CASE WHEN {EXCLUDED} THEN 1 ELSE 0 END AS x FROM rating r WHERE {where}"
    )


def _excl_state(dialect: str, where: str) -> str:
    """One row per excluded rating and distinct reason."""
    return (
        f"SELECT DISTINCT r.id AS id, r.office AS office, "
        f"{day_sql(dialect, 'r.press_time')} AS day, COALESCE(r.desk, '') AS desk, "
        f"COALESCE({OFFICIAL}, '') AS official, COALESCE({FIELD}, '') AS field, "
        f"r.channel AS channel, e.reason AS reason FROM rating r JOIN exclusion e "
        f"ON {_ACTIVE_EXCL} WHERE {where}"
    )


def _case_state(dialect: str, where: str) -> str:
    return (
        f"SELECT ca.office AS office, {day_sql(dialect, 'ca.handed_back_at')} AS day, "
        "COALESCE(ca.desk_id, '') AS desk, COALESCE(ca.official_id, '') AS official, "
        f"COALESCE(ca.field, '') AS field, {RATED} AS rated FROM case_file ca WHERE {where}"
    )


def _unit(dim: str) -> str:
    return "''" if dim == "office" else dim


def _gb(dim: str) -> str:
    """The unit in a GROUP BY list (PostgreSQL refuses a constant there)."""
    return "" if dim == "office" else f", {dim}"


def _q(sql: str, *times: str) -> TextClause:
    """A text query whose named time parameters bind as UTC timestamps (SQLite stores text)."""
    return text(sql).bindparams(*(bindparam(t, type_=_TS) for t in times))


# -- marking: the hook in the batch's transaction ---------------------------------------------------
def _day_of(t: datetime) -> str:
    t = t if t.tzinfo else t.replace(tzinfo=UTC)
    return (t.astimezone(UTC) + timedelta(hours=OFFSET_HOURS)).date().isoformat()


_DAY_TEXT: dict[int, str] = {}


def _press_day(item: Any) -> str | None:
    """The office day a ratings item is stored under (as receive.py decodes it), or None. Reads
    the flags and time straight from the record's hex (a catch-up batch has thousands)."""
    try:
        raw = item["raw"]
        flags = int(raw[2:4], 16)
        if flags & protocol.FLAG_CLOCK_UNKNOWN:
            return _day_of(datetime.fromisoformat(item["press_time"]))
        day = (int.from_bytes(bytes.fromhex(raw[16:24]), "little") + OFFSET_HOURS * 3600) // 86400
        text_ = _DAY_TEXT.get(day)
        if text_ is None:
            text_ = _DAY_TEXT[day] = (date(1970, 1, 1) + timedelta(days=day)).isoformat()
        return text_
    except Exception:  # noqa: BLE001 - a refused item changes nothing
        return None


def _chunks(values: Sequence[Any], n: int = 500) -> Iterable[Sequence[Any]]:
    for i in range(0, len(values), n):
        yield values[i : i + n]


def mark_batch(conn: Connection, office: str, stream: str, items: list[Any]) -> int:
    """Mark the office days this batch may change (call it inside the batch's transaction).
    Over-marking only costs a recompute; under-marking would be a wrong report."""
    d = _dialect(conn)
    days: set[str] = set()
    codes: set[str] = set()
    keys: list[tuple[str, int, int]] = []
    if stream == "ratings":
        for it in items:
            if isinstance(it, dict):
                day = _press_day(it)
                if day is not None:
                    days.add(day)
                    if it.get("case_code"):
                        codes.add(str(it["case_code"])[:100])
    elif stream in ("exclusions", "corrections"):
        for it in items:
            ref = it.get("rating") if isinstance(it, dict) else None
            if isinstance(ref, list) and len(ref) == 3:
                keys.append((str(ref[0])[:64], int(ref[1]), int(ref[2])))
        # a reversal changes the rating of the row it takes back (the same one, from an honest hub)
        back = sorted({it["reverses"] for it in items if isinstance(it, dict)
                       and isinstance(it.get("reverses"), int)})  # fmt: skip
        table = stream[:-1]  # exclusion | correction
        for part in _chunks(back):
            keys += [
                (tid, int(e), int(q))
                for tid, e, q in conn.execute(
                    text(
                        f"SELECT terminal_id, epoch, seq FROM {table} "  # noqa: S608
                        "WHERE office = :o AND hub_id IN :ids"
                    ).bindparams(bindparam("ids", expanding=True)),
                    {"o": office, "ids": list(part)},
                )
            ]
    elif stream == "cases":
        new = [str(it["code"])[:100] for it in items if isinstance(it, dict) and it.get("code")]
        for part in _chunks(sorted(set(new))):
            for (day,) in conn.execute(
                text(
                    f"SELECT DISTINCT {day_sql(d, 'r.press_time')} FROM rating r "  # noqa: S608
                    "WHERE r.office = :o AND r.case_code IN :codes"
                ).bindparams(bindparam("codes", expanding=True)),
                {"o": office, "codes": list(part)},
            ):
                days.add(day)
        for it in items:
            if isinstance(it, dict) and isinstance(it.get("handed_back_at"), str):
                with contextlib.suppress(ValueError):
                    days.add(_day_of(datetime.fromisoformat(it["handed_back_at"])))
    else:
        return 0  # paper (read directly), directory (names), duty, heartbeats: no rollup rows
    if keys:
        for (tid, epoch), seqs in _group(keys).items():
            for part in _chunks(sorted(seqs)):
                for day, code in conn.execute(
                    text(
                        f"SELECT {day_sql(d, 'r.press_time')}, r.case_code FROM rating r "  # noqa: S608
                        "WHERE r.terminal_id = :t AND r.epoch = :e AND r.seq IN :seqs "
                        "AND r.office = :o"
                    ).bindparams(bindparam("seqs", expanding=True)),
                    {"t": tid, "e": epoch, "seqs": list(part), "o": office},
                ):
                    days.add(day)
                    if code:
                        codes.add(code)
    if codes:  # the rated status of these cases may change: their hand-back days
        for part in _chunks(sorted(codes)):
            for (day,) in conn.execute(
                text(
                    f"SELECT DISTINCT {day_sql(d, 'ca.handed_back_at')} FROM case_file ca "  # noqa: S608
                    "WHERE ca.office = :o AND ca.code IN :codes"
                ).bindparams(bindparam("codes", expanding=True)),
                {"o": office, "codes": list(part)},
            ):
                days.add(day)
    mark_days(conn, office, days)
    return len(days)


def _group(keys: list[tuple[str, int, int]]) -> dict[tuple[str, int], set[int]]:
    out: dict[tuple[str, int], set[int]] = {}
    for tid, epoch, seq in keys:
        out.setdefault((tid, epoch), set()).add(seq)
    return out


def mark_days(conn: Connection, office: str, days: Iterable[str]) -> None:
    """``DO UPDATE`` (not ``DO NOTHING``) so the row is locked until this transaction ends; sorted,
    so two batches lock in the same order."""
    rows = [{"o": office, "d": day} for day in sorted(set(days))]
    if rows:
        conn.execute(
            text(
                "INSERT INTO report_dirty (office, day, hits) VALUES (:o, :d, 1) "
                "ON CONFLICT (office, day) DO UPDATE SET hits = report_dirty.hits + 1"
            ),
            rows,
        )


# -- refresh: recompute dirty days -----------------------------------------------------------------
@dataclass
class RefreshStats:
    days: int = 0
    months: int = 0
    transactions: int = 0
    seconds: float = 0.0


def refresh(engine: Engine, *, chunk: int = CHUNK) -> RefreshStats:
    """Bring the rollups up to date with every committed batch."""
    st = RefreshStats()
    t0 = time.perf_counter()
    while True:
        with engine.begin() as conn:
            if not _step(conn, chunk, st):
                break
        st.transactions += 1
    st.seconds = time.perf_counter() - t0
    return st


def _step(conn: Connection, chunk: int, st: RefreshStats) -> bool:
    d = _dialect(conn)
    if conn.execute(text("SELECT 1 FROM report_dirty LIMIT 1")).first() is None:
        return False
    if d == "postgresql":
        no_jit(conn)
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        lock = " FOR UPDATE"
    else:
        lock = ""
    pairs = [
        (o, day)
        for o, day in conn.execute(
            text(f"SELECT office, day FROM report_dirty ORDER BY office, day LIMIT :n{lock}"),
            {"n": chunk},
        )
    ]
    if not pairs:
        return False  # another refresh took them meanwhile
    conn.execute(
        text("DELETE FROM report_dirty WHERE office = :o AND day = :d"),
        [{"o": o, "d": day} for o, day in pairs],
    )
    by_office: dict[str, list[date]] = {}
    for o, day in pairs:
        by_office.setdefault(o, []).append(date.fromisoformat(day))
    months: set[str] = set()
    for o, days in by_office.items():
        # clean days between dirty ones are recomputed too (harmless): fewer, larger statements
        for first, last in _runs(days, gap=_GAP):
            _recompute_days(conn, o, first, last)
        mine = sorted({x.isoformat()[:7] for x in days})
        _months(conn, o, mine[0], mine[-1])
        months.update(_month_range(mine[0], mine[-1]))
    _bump(conn, sorted(months))
    st.days += len(pairs)
    st.months += len(months)
    return True


_GAP = timedelta(days=8)


def _runs(days: Iterable[date], gap: timedelta = timedelta(days=1)) -> list[tuple[date, date]]:
    """Days grouped into ranges whose holes are shorter than ``gap``."""
    out: list[tuple[date, date]] = []
    for x in sorted(days):
        if out and x - out[-1][1] <= gap:
            out[-1] = (out[-1][0], x)
        else:
            out.append((x, x))
    return out


def _recompute_days(conn: Connection, office: str, first: date, last: date) -> None:
    d = _dialect(conn)
    lo, hi = first.isoformat(), last.isoformat()
    for t in ("report_unit", "report_excl", "report_case"):
        conn.execute(
            text(
                f"DELETE FROM {t} WHERE grain = 'd' AND dim = :dim AND period BETWEEN :lo AND :hi "  # noqa: S608
                "AND office = :o"
            ),
            [{"dim": dim, "lo": lo, "hi": hi, "o": office} for dim in DIMS],
        )
    p = {"o": office, "start": day_start(first), "end": day_start(last + timedelta(days=1))}
    rng = "r.office = :o AND r.press_time >= :start AND r.press_time < :end"
    cols = "channel, scale, level"
    conn.execute(
        _q(
            f"WITH st AS ({_rating_state(d, rng)}) INSERT INTO report_unit (grain, dim, period, "  # noqa: S608
            f"office, unit, {cols}, n_valid, n_excl) "
            + " UNION ALL ".join(
                f"SELECT 'd', '{dim}', day, office, {_unit(dim)}, {cols}, SUM(1 - x), SUM(x) "
                f"FROM st GROUP BY day, office{_gb(dim)}, {cols}"
                for dim in DIMS
            ),
            "start",
            "end",
        ),
        p,
    )
    conn.execute(
        _q(
            f"WITH st AS ({_excl_state(d, rng)}) INSERT INTO report_excl (grain, dim, period, "  # noqa: S608
            "office, unit, channel, reason, n) "
            + " UNION ALL ".join(
                f"SELECT 'd', '{dim}', day, office, {_unit(dim)}, channel, reason, COUNT(*) "
                f"FROM st GROUP BY day, office{_gb(dim)}, channel, reason"
                for dim in DIMS
            ),
            "start",
            "end",
        ),
        p,
    )
    crng = "ca.office = :o AND ca.handed_back_at >= :start AND ca.handed_back_at < :end"
    conn.execute(
        _q(
            f"WITH st AS ({_case_state(d, crng)}) INSERT INTO report_case (grain, dim, period, "  # noqa: S608
            "office, unit, cases, rated) "
            + " UNION ALL ".join(
                f"SELECT 'd', '{dim}', day, office, {_unit(dim)}, COUNT(*), SUM(rated) "
                f"FROM st GROUP BY day, office{_gb(dim)}"
                for dim in DIMS
            ),
            "start",
            "end",
        ),
        p,
    )


_MONTH = (
    ("report_unit", "unit, channel, scale, level", "SUM(n_valid), SUM(n_excl)"),
    ("report_excl", "unit, channel, reason", "SUM(n)"),
    ("report_case", "unit", "SUM(cases), SUM(rated)"),
)


def _month_range(lo: str, hi: str) -> list[str]:
    out, (y, m) = [], map(int, lo.split("-"))
    while f"{y:04d}-{m:02d}" <= hi:
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def _months(conn: Connection, office: str, lo: str, hi: str) -> None:
    """The office's month rows from ``lo`` to ``hi`` (YYYY-MM): sums of their day rows (the days
    are always brought up to date first)."""
    for t, keys, sums in _MONTH:
        for dim in DIMS:
            p = {"o": office, "dim": dim, "lo": lo, "hi": hi, "dlo": f"{lo}-01", "dhi": f"{hi}-31"}
            conn.execute(
                text(
                    f"DELETE FROM {t} WHERE grain = 'm' AND dim = :dim "  # noqa: S608
                    "AND period BETWEEN :lo AND :hi AND office = :o"
                ),
                p,
            )
            conn.execute(
                text(
                    f"INSERT INTO {t} SELECT 'm', dim, substr(period, 1, 7), office, {keys}, "  # noqa: S608
                    f"{sums} FROM {t} WHERE grain = 'd' AND dim = :dim "
                    "AND period BETWEEN :dlo AND :dhi AND office = :o "
                    f"GROUP BY dim, substr(period, 1, 7), office, {keys}"
                ),
                p,
            )
            # and the years: sums of their months
            p.update(ylo=lo[:4], yhi=hi[:4], mlo=f"{lo[:4]}-01", mhi=f"{hi[:4]}-12")
            conn.execute(
                text(
                    f"DELETE FROM {t} WHERE grain = 'y' AND dim = :dim "  # noqa: S608
                    "AND period BETWEEN :ylo AND :yhi AND office = :o"
                ),
                p,
            )
            conn.execute(
                text(
                    f"INSERT INTO {t} SELECT 'y', dim, substr(period, 1, 4), office, {keys}, "  # noqa: S608
                    f"{sums} FROM {t} WHERE grain = 'm' AND dim = :dim "
                    "AND period BETWEEN :mlo AND :mhi AND office = :o "
                    f"GROUP BY dim, substr(period, 1, 4), office, {keys}"
                ),
                p,
            )


def _bump(conn: Connection, months: Sequence[str]) -> None:
    if months:
        conn.execute(
            text(
                "INSERT INTO report_version (month, version) VALUES (:m, 1) "
                "ON CONFLICT (month) DO UPDATE SET version = report_version.version + 1"
            ),
            [{"m": m} for m in months],
        )


def month_version(conn: Connection, month: str) -> int:
    v = conn.execute(
        text("SELECT version FROM report_version WHERE month = :m"), {"m": month}
    ).scalar()
    return int(v or 0)


def rebuild(engine: Engine, *, chunk: int = 400) -> RefreshStats:
    """Forget nothing, trust nothing: mark every office day that holds ratings or cases dirty and
    recompute (after a restore, or to check the rollups)."""
    with engine.begin() as conn:
        d = _dialect(conn)
        for t, col in (("rating", "press_time"), ("case_file", "handed_back_at")):
            conn.execute(
                text(
                    f"INSERT INTO report_dirty (office, day, hits) SELECT DISTINCT office, "  # noqa: S608
                    f"{day_sql(d, col)}, 1 FROM {t} WHERE true "
                    "ON CONFLICT (office, day) DO NOTHING"
                )
            )
    return refresh(engine, chunk=chunk)


# -- reading ---------------------------------------------------------------------------------------
def _scope(offices: Sequence[str] | None, alias: str = "") -> tuple[str, dict[str, Any]]:
    if offices is None:
        return "", {}
    return f" AND {alias}office IN :offices", {"offices": list(offices)}


def _expand(sql: str, has_offices: bool, *times: str) -> TextClause:
    q = _q(sql, *times)
    return q.bindparams(bindparam("offices", expanding=True)) if has_offices else q


def year_slices(first: date | None, last: date | None) -> list[tuple[str, str, str]]:
    """Whole years from the year rows, whole months from the month rows, the rest from the days
    (:func:`hub.reports.rollup.slices` does months and days)."""
    if first is None and last is None:
        return [("y", "0000", "9999")]
    lo = first or date(1, 1, 1)
    hi = last or date(9999, 12, 31)
    if hi < lo:
        return []
    y_lo = lo.year if (lo.month, lo.day) == (1, 1) else lo.year + 1
    y_hi = hi.year if (hi.month, hi.day) == (12, 31) else hi.year - 1
    if y_lo > y_hi:
        return slices(lo, hi)
    out = [("y", f"{y_lo:04d}", f"{y_hi:04d}")]
    if lo < date(y_lo, 1, 1):
        out += slices(lo, date(y_lo - 1, 12, 31))
    if hi > date(y_hi, 12, 31):
        out += slices(date(y_hi + 1, 1, 1), hi)
    return out


_LEVELS = 5  # the widest scale (hub/protocol.py: scales 3 to 5)
_PIVOT = ", ".join(
    [f"SUM(CASE WHEN level = {lv} THEN n_valid ELSE 0 END)" for lv in range(1, _LEVELS + 1)]
    + [f"SUM(CASE WHEN channel = '{ch}' THEN n_valid ELSE 0 END)" for ch in ELECTRONIC]
)


def rollup_counts(
    conn: Connection,
    first: date | None,
    last: date | None,
    dim: str,
    channels: Sequence[str],
    offices: Sequence[str] | None,
) -> dict[Key, Counts]:
    out: dict[Key, Counts] = {}
    parts: list[str] = []
    p: dict[str, Any] = {}
    for i, (grain, lo, hi) in enumerate(year_slices(first, last)):
        parts.append(f"(grain = :g{i} AND period BETWEEN :lo{i} AND :hi{i})")
        p.update({f"g{i}": grain, f"lo{i}": lo, f"hi{i}": hi})
    if not parts:
        return out
    where = "dim = :dim AND (" + " OR ".join(parts) + ")"
    p["dim"] = dim
    scope, sp = _scope(offices)
    p.update(sp)
    elec = [ch for ch in channels if ch in ELECTRONIC]
    if elec:
        p["chs"] = elec
        # One row per unit and scale, its levels and channels as columns: a year of 2,000
        # officials is ~2,000 rows to turn into counts, not one per channel and level (~12,000).
        for o, u, scale, x, *vals in conn.execute(
            _expand(
                f"SELECT office, unit, scale, SUM(n_excl), {_PIVOT} "  # noqa: S608
                f"FROM report_unit WHERE {where}{scope} AND channel IN :chs "
                "GROUP BY office, unit, scale",
                offices is not None,
            ).bindparams(bindparam("chs", expanding=True)),
            p,
        ):
            cn = _get(out, (o, u))
            levels = cn.levels
            for lv, v in enumerate(vals[:_LEVELS], 1):
                if v:
                    levels[(scale, lv)] += v
            for ch, v in zip(ELECTRONIC, vals[_LEVELS:], strict=True):
                if v:
                    cn.channels[ch] += v
            cn.excluded += x
        for o, u, reason, n in conn.execute(
            _expand(
                "SELECT office, unit, reason, SUM(n) FROM report_excl "  # noqa: S608
                f"WHERE {where}{scope} AND channel IN :chs GROUP BY office, unit, reason",
                offices is not None,
            ).bindparams(bindparam("chs", expanding=True)),
            p,
        ).all():
            _get(out, (o, u)).reasons[reason] += int(n)
        p.pop("chs")
    for o, u, cases, rated in conn.execute(
        _expand(
            "SELECT office, unit, SUM(cases), SUM(rated) FROM report_case "  # noqa: S608
            f"WHERE {where}{scope} GROUP BY office, unit",
            offices is not None,
        ),
        p,
    ).all():
        cn = _get(out, (o, u))
        cn.cases += int(cases)
        cn.rated += int(rated)
    return _drop_empty(out)


def _get(out: dict[Key, Counts], k: Key) -> Counts:
    cn = out.get(k)
    if cn is None:
        cn = out[k] = Counts()
    return cn


def _drop_empty(out: dict[Key, Counts]) -> dict[Key, Counts]:
    return {
        k: cn
        for k, cn in out.items()
        if any(cn.levels.values()) or cn.excluded or cn.cases or any(cn.reasons.values())
    }


def _range(col: str, first: date | None, last: date | None) -> tuple[str, dict[str, Any]]:
    sql, p = "", {}
    if first is not None:
        sql += f" AND {col} >= :start"
        p["start"] = day_start(first)
    if last is not None:
        sql += f" AND {col} < :end"
        p["end"] = day_start(last + timedelta(days=1))
    return sql, p


def direct_counts(
    conn: Connection,
    first: date | None,
    last: date | None,
    dim: str,
    channels: Sequence[str],
    offices: Sequence[str] | None,
) -> dict[Key, Counts]:
    """The same counts with plain GROUP BY queries over the rating and case tables."""
    d = _dialect(conn)
    out: dict[Key, Counts] = {}
    times = [t for t, v in (("start", first), ("end", last)) if v is not None]
    scope, sp = _scope(offices, "r.")
    rsql, rp = _range("r.press_time", first, last)
    elec = [ch for ch in channels if ch in ELECTRONIC]
    u = _unit(dim)
    if elec:
        p = {**sp, **rp, "chs": elec}
        where = f"r.channel IN :chs{rsql}{scope}"
        for o, unit, ch, scale, level, v, x in conn.execute(
            _expand(
                f"SELECT office, {u}, channel, scale, level, SUM(1 - x), SUM(x) FROM "  # noqa: S608
                f"({_rating_state(d, where)}) st GROUP BY office{_gb(dim)}, channel, scale, level",
                offices is not None,
                *times,
            ).bindparams(bindparam("chs", expanding=True)),
            p,
        ):
            cn = _get(out, (o, unit))
            cn.levels[(int(scale), int(level))] += int(v)
            cn.channels[ch] += int(v)
            cn.excluded += int(x)
        for o, unit, reason, n in conn.execute(
            _expand(
                f"SELECT office, {u}, reason, COUNT(*) FROM ({_excl_state(d, where)}) st "  # noqa: S608
                f"GROUP BY office{_gb(dim)}, reason",
                offices is not None,
                *times,
            ).bindparams(bindparam("chs", expanding=True)),
            p,
        ):
            _get(out, (o, unit)).reasons[reason] += int(n)
    cscope, csp = _scope(offices, "ca.")
    csql, cp = _range("ca.handed_back_at", first, last)
    for o, unit, cases, rated in conn.execute(
        _expand(
            f"SELECT office, {u}, COUNT(*), SUM(rated) FROM "  # noqa: S608
            f"({_case_state(d, f'1 = 1{csql}{cscope}')}) st GROUP BY office{_gb(dim)}",
            offices is not None,
            *times,
        ),
        {**csp, **cp},
    ):
        cn = _get(out, (o, unit))
        cn.cases += int(cases)
        cn.rated += int(rated or 0)
    return _drop_empty(out)


_PAPER_UNIT = {
    "office": "''",
    "desk": "COALESCE(t.desk_id, b.desk_id, '')",
    "official": "COALESCE(t.official_id, '')",
    "field": "COALESCE(t.field, '')",
}
# a box record counts unless a later record of the same office corrects it (hub/channels/paper.py)
_CURRENT_BOX = (
    "b.opened_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM paper_box n "
    "WHERE n.office = b.office AND n.supersedes = b.hub_id)"
)


def paper_counts(
    conn: Connection,
    first: date | None,
    last: date | None,
    dim: str,
    offices: Sequence[str] | None,
) -> dict[Key, Counts]:
    """Tallies of opened ballot boxes (small tables: always read directly), dated by the box's
    opening; invalid ballots are excluded ("paper_invalid") where the box can be placed."""
    out: dict[Key, Counts] = {}
    times = [t for t, v in (("start", first), ("end", last)) if v is not None]
    bsql, bp = _range("b.opened_at", first, last)
    scope, sp = _scope(offices, "b.")
    for o, unit, scale, level, n in conn.execute(
        _expand(
            f"SELECT b.office, {_PAPER_UNIT[dim]}, t.scale, t.level, SUM(t.count) "  # noqa: S608
            f"FROM paper_tally t JOIN paper_box b ON b.id = t.box_id WHERE {_CURRENT_BOX}"
            f"{bsql}{scope} GROUP BY 1, 2, 3, 4",
            offices is not None,
            *times,
        ),
        {**bp, **sp},
    ):
        if not n:
            continue
        cn = _get(out, (o, unit))
        cn.levels[(int(scale), int(level))] += int(n)
        cn.channels["paper"] += int(n)
    if dim in ("office", "desk"):
        unit = "''" if dim == "office" else "COALESCE(b.desk_id, '')"
        for o, u, n in conn.execute(
            _expand(
                f"SELECT b.office, {unit}, SUM(b.invalid_ballots) FROM paper_box b "  # noqa: S608
                f"WHERE {_CURRENT_BOX}{bsql}{scope} GROUP BY 1, 2",
                offices is not None,
                *times,
            ),
            {**bp, **sp},
        ):
            if n:
                cn = _get(out, (o, u))
                cn.excluded += int(n)
                cn.reasons["paper_invalid"] += int(n)
    return out
