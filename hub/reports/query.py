"""Counts per unit, read from the rollups or (the reference, and the bench's baseline) straight
from the rating table with plain GROUP BY queries. Both give the same :class:`Counts`."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

from hub.reports.rollup import (
    EXCLUDED,
    OFF,
    OFFICIAL,
    RATED_CASE,
    day_bounds,
    slice_sql,
    slices,
)
from hub.reports.stats import is_satisfied

BY = ("office", "desk", "official", "field")
ELECTRONIC = ("terminal", "qr")
CHANNELS = ("terminal", "qr", "paper")
Key = str | None


@dataclass
class Counts:
    """What a report row is computed from."""

    levels: Counter[tuple[int, int]] = field(default_factory=Counter)  # (scale, level) -> valid
    excluded: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    channels: Counter[str] = field(default_factory=Counter)  # valid ratings per channel
    cases: int = 0
    rated: int = 0

    def add(self, other: Counts) -> None:
        self.levels.update(other.levels)
        self.excluded += other.excluded
        self.reasons.update(other.reasons)
        self.channels.update(other.channels)
        self.cases += other.cases
        self.rated += other.rated

    def normal(self) -> tuple[object, ...]:
        """Comparable form (zero counts dropped)."""
        return (
            sorted((k, v) for k, v in self.levels.items() if v),
            self.excluded,
            sorted((k, v) for k, v in self.reasons.items() if v),
            sorted((k, v) for k, v in self.channels.items() if v),
            self.cases,
            self.rated,
        )


@dataclass(frozen=True)
class Filters:
    desk: str | None = None
    official: str | None = None
    field: str | None = None


@dataclass
class HeatCell:
    valid: int = 0
    satisfied: int = 0
    excluded: int = 0


def _in(values: Sequence[str]) -> str:
    return "(" + ", ".join("?" * len(values)) + ")"


# -- from the rollups ------------------------------------------------------------------------------
def _rollup_key(by: str) -> str:
    return "''" if by == "office" else f"NULLIF({by}, '')"  # '' is "none" in the rollups


def _rollup_filters(
    f: Filters, dims: Sequence[str] = ("desk", "official", "field")
) -> tuple[str, list[str]]:
    sql, args = "", []
    for d in dims:
        v = getattr(f, d)
        if v is not None:
            sql += f" AND {d} = ?"
            args.append(v)
    return sql, args


def rollup_counts(
    c: sqlite3.Connection,
    first: date | None,
    last: date | None,
    by: str,
    channels: Sequence[str],
    f: Filters,
) -> dict[Key, Counts]:
    out: dict[Key, Counts] = {}
    where, args = slice_sql(slices(first, last))
    fsql, fargs = _rollup_filters(f)
    key = _rollup_key(by)
    elec = [ch for ch in channels if ch in ELECTRONIC]
    if elec:
        for k, ch, scale, level, v, x in c.execute(
            f"SELECT {key}, channel, scale, level, SUM(n_valid), SUM(n_excl) FROM report_rating "  # noqa: S608
            f"WHERE {where} AND channel IN {_in(elec)}{fsql} GROUP BY 1, 2, 3, 4 "
            "HAVING SUM(n_valid) != 0 OR SUM(n_excl) != 0",
            [*args, *elec, *fargs],
        ):
            cn = out.setdefault(k, Counts())
            cn.levels[(scale, level)] += v
            cn.channels[ch] += v
            cn.excluded += x
        for k, reason, n in c.execute(
            f"SELECT {key}, reason, SUM(n) FROM report_excl "  # noqa: S608
            f"WHERE {where} AND channel IN {_in(elec)}{fsql} GROUP BY 1, 2 HAVING SUM(n) != 0",
            [*args, *elec, *fargs],
        ):
            out.setdefault(k, Counts()).reasons[reason] += n
    for k, cases, rated in c.execute(
        f"SELECT {key}, SUM(cases), SUM(rated) FROM report_case "  # noqa: S608
        f"WHERE {where}{fsql} GROUP BY 1 HAVING SUM(cases) != 0",
        [*args, *fargs],
    ):
        cn = out.setdefault(k, Counts())
        cn.cases += cases
        cn.rated += rated
    return out


def rollup_heat(
    c: sqlite3.Connection,
    first: date | None,
    last: date | None,
    channels: Sequence[str],
    f: Filters,
) -> dict[tuple[int, int], HeatCell]:
    elec = [ch for ch in channels if ch in ELECTRONIC]
    if not elec:
        return {}
    where, args = slice_sql(slices(first, last))
    fsql, fargs = _rollup_filters(f, ("desk", "official"))
    return {
        (wd, h): HeatCell(v, s, x)
        for wd, h, v, s, x in c.execute(
            "SELECT weekday, hour, SUM(n_valid), SUM(n_sat), SUM(n_excl) FROM report_heat "  # noqa: S608
            f"WHERE {where} AND channel IN {_in(elec)}{fsql} GROUP BY 1, 2",
            [*args, *elec, *fargs],
        )
    }


# -- straight from the source tables (reference and baseline) ------------------------------------
_DIRECT_KEY = {
    "office": "''",
    "desk": "NULLIF(r.desk, '')",
    "official": f"NULLIF({OFFICIAL}, '')",
    "field": "NULLIF(ca.field, '')",
}
_CASE_KEY = {
    "office": "''",
    "desk": "NULLIF(ca.desk_id, '')",
    "official": "NULLIF(ca.official_id, '')",
    "field": "NULLIF(ca.field, '')",
}


def _range(col: str, first: date | None, last: date | None) -> tuple[str, list[str]]:
    sql, args = "", []
    if first is not None:
        sql += f" AND {col} >= ?"
        args.append(day_bounds(first, first)[0])
    if last is not None:
        sql += f" AND {col} < ?"
        args.append(day_bounds(last, last)[1])
    return sql, args


def _direct_filters(f: Filters, keys: dict[str, str]) -> tuple[str, list[str]]:
    sql, args = "", []
    for d in ("desk", "official", "field"):
        v = getattr(f, d)
        if v is not None:
            sql += f" AND {keys[d]} = ?"
            args.append(v)
    return sql, args


def direct_counts(
    c: sqlite3.Connection,
    first: date | None,
    last: date | None,
    by: str,
    channels: Sequence[str],
    f: Filters,
) -> dict[Key, Counts]:
    out: dict[Key, Counts] = {}
    rsql, rargs = _range("r.press_time", first, last)
    fsql, fargs = _direct_filters(f, _DIRECT_KEY)
    key = _DIRECT_KEY[by]
    elec = [ch for ch in channels if ch in ELECTRONIC]
    src = 'FROM rating r LEFT JOIN "case" ca ON ca.id = r.case_id'
    if elec:
        for k, ch, scale, level, x, n in c.execute(
            f"SELECT {key}, r.channel, r.scale, r.level, {EXCLUDED}, COUNT(*) {src} "  # noqa: S608
            f"WHERE r.channel IN {_in(elec)}{rsql}{fsql} GROUP BY 1, 2, 3, 4, 5",
            [*elec, *rargs, *fargs],
        ):
            cn = out.setdefault(k, Counts())
            if x:
                cn.excluded += n
            else:
                cn.levels[(scale, level)] += n
                cn.channels[ch] += n
        for k, reason, n in c.execute(
            f"SELECT {key}, e.reason, COUNT(DISTINCT r.id) {src} JOIN exclusion e ON "  # noqa: S608
            "e.rating_id = r.id AND e.reverses IS NULL AND NOT EXISTS "
            "(SELECT 1 FROM exclusion b WHERE b.reverses = e.id) "
            f"WHERE r.channel IN {_in(elec)}{rsql}{fsql} GROUP BY 1, 2",
            [*elec, *rargs, *fargs],
        ):
            out.setdefault(k, Counts()).reasons[reason] += n
    csql, cargs = _range("ca.handed_back_at", first, last)
    cfsql, cfargs = _direct_filters(f, _CASE_KEY)
    for k, cases, rated in c.execute(
        f'SELECT {_CASE_KEY[by]}, COUNT(*), SUM({RATED_CASE}) FROM "case" ca '  # noqa: S608
        f"WHERE 1{csql}{cfsql} GROUP BY 1",
        [*cargs, *cfargs],
    ):
        cn = out.setdefault(k, Counts())
        cn.cases += cases
        cn.rated += rated
    return out


def direct_heat(
    c: sqlite3.Connection,
    first: date | None,
    last: date | None,
    channels: Sequence[str],
    f: Filters,
) -> dict[tuple[int, int], HeatCell]:
    elec = [ch for ch in channels if ch in ELECTRONIC]
    if not elec:
        return {}
    rsql, rargs = _range("r.press_time", first, last)
    fsql, fargs = _direct_filters(Filters(desk=f.desk, official=f.official), _DIRECT_KEY)
    out: dict[tuple[int, int], HeatCell] = {}
    for wd, h, scale, level, x, n in c.execute(
        f"SELECT (CAST(strftime('%w', r.press_time, ?) AS INTEGER) + 6) % 7, "  # noqa: S608
        f"CAST(strftime('%H', r.press_time, ?) AS INTEGER), r.scale, r.level, {EXCLUDED}, "
        f'COUNT(*) FROM rating r LEFT JOIN "case" ca ON ca.id = r.case_id '
        f"WHERE r.channel IN {_in(elec)}{rsql}{fsql} GROUP BY 1, 2, 3, 4, 5",
        [OFF, OFF, *elec, *rargs, *fargs],
    ):
        cell = out.setdefault((wd, h), HeatCell())
        if x:
            cell.excluded += n
        else:
            cell.valid += n
            cell.satisfied += n if is_satisfied(level, scale) else 0
    return out


# -- paper ballots (small tables: always read directly) -------------------------------------------
_PAPER_KEY = {
    "office": "''",
    "desk": "COALESCE(t.desk_id, b.desk_id)",
    "official": "t.official_id",
    "field": "t.field",
}


# A box's minutes corrected by a later record count once: the later record (hub/channels/paper.py).
_PAPER_CURRENT = " AND b.id NOT IN (SELECT supersedes FROM paperbox WHERE supersedes IS NOT NULL)"


def paper_counts(
    c: sqlite3.Connection, first: date | None, last: date | None, by: str, f: Filters
) -> dict[Key, Counts]:
    """Tallies of opened ballot boxes, dated by when the box was opened; invalid ballots are
    counted as excluded ("paper_invalid") where the box can be placed (office, desk)."""
    out: dict[Key, Counts] = {}
    bsql, bargs = _range("b.opened_at", first, last)
    bsql += _PAPER_CURRENT
    fsql, fargs = _direct_filters(f, _PAPER_KEY)
    for k, scale, level, n in c.execute(
        f"SELECT {_PAPER_KEY[by]}, t.scale, t.level, SUM(t.count) FROM papertally t "  # noqa: S608
        f"JOIN paperbox b ON b.id = t.box_id WHERE 1{bsql}{fsql} GROUP BY 1, 2, 3",
        [*bargs, *fargs],
    ):
        cn = out.setdefault(k, Counts())
        cn.levels[(scale, level)] += n
        cn.channels["paper"] += n
    if by in ("office", "desk") and f.official is None and f.field is None:
        key = "''" if by == "office" else "b.desk_id"
        dsql, dargs = ("", []) if f.desk is None else (" AND b.desk_id = ?", [f.desk])
        for k, n in c.execute(
            f"SELECT {key}, SUM(b.invalid_ballots) FROM paperbox b WHERE 1{bsql}{dsql} "  # noqa: S608
            "GROUP BY 1 HAVING SUM(b.invalid_ballots) > 0",
            [*bargs, *dargs],
        ):
            cn = out.setdefault(k, Counts())
            cn.excluded += n
            cn.reasons["paper_invalid"] += n
    return out
