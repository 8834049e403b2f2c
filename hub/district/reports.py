"""SIPAS reports across the offices of a district (docs/district.md, "Reports").

The same figures as an office's own reports (docs/reports.md: satisfaction rate, counts per
level, Wilson 95 % interval, response rate, sample adequacy against the seed-003 table, shrinkage
ranking), computed with the hub's own functions (:mod:`hub.reports.stats`, and
:func:`hub.reports.row` for the row itself, so a row here has the hub's shape) over what the hubs
synced, read from the district's rollups (:mod:`hub.district.reports_rollup`).

Units: ``office``; ``desk`` and ``official`` (per office: two offices may both have a "quay-1";
each row names its ``office``); ``field`` (lĩnh vực, summed over the offices asked for); ``month``
(the months of the period, the offices asked for together).

What the district adds to a row: ``office`` and ``office_name``; ``verified`` (valid terminal
ratings: their district tag was checked) and ``attested`` (valid QR ratings: no terminal signs
them, the hub vouches for them). Paper tallies are in ``paper`` as on the hub. A rating whose tag
did not verify never reaches the rating table, so it is in no figure (the integrity page lists it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from hub.district import reports_rollup as ru
from hub.periods import Period, resolve
from hub.reports import REASON_LABELS, UNKNOWN, rank_rows, row
from hub.reports.query import CHANNELS, Counts

BY = ("office", "desk", "official", "field", "month")
TOTAL = {"vi": "Toàn huyện", "en": "District total"}
Key = str | None


def _labels(conn: Connection, table: str) -> dict[tuple[str, str], str]:
    return {
        (o, i): n
        for o, i, n in conn.execute(text(f"SELECT office, id, name FROM {table}"))  # noqa: S608
    }


def office_names(conn: Connection) -> dict[str, str]:
    return {i: n for i, n in conn.execute(text("SELECT id, name FROM office"))}


def _snapshot(engine: Engine) -> Connection:
    """A connection whose reads all see one snapshot (REPEATABLE READ on PostgreSQL; a read
    transaction in SQLite's WAL mode)."""
    conn = engine.connect()
    if conn.dialect.name == "postgresql":
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
    return conn


def counts(
    conn: Connection,
    period: Period,
    dim: str,
    *,
    offices: Sequence[str] | None = None,
    channels: Sequence[str] = CHANNELS,
    direct: bool = False,
) -> dict[tuple[str, str], Counts]:
    """Counts per (office, unit) ('' = none) for one dimension, paper tallies included."""
    reader = ru.direct_counts if direct else ru.rollup_counts
    out = reader(conn, period.first, period.last, dim, channels, offices)
    if "paper" in channels:
        for k, cn in ru.paper_counts(conn, period.first, period.last, dim, offices).items():
            out.setdefault(k, Counts()).add(cn)
    return out


def satisfaction(
    engine: Engine,
    period: Period,
    *,
    by: str = "office",
    offices: Sequence[str] | None = None,
    channels: Sequence[str] = CHANNELS,
    lang: str = "vi",
    rank: bool = True,
    direct: bool = False,
) -> dict[str, Any]:
    """The district's ``/reports/satisfaction``: a row per unit, the total, the shrinkage prior.
    ``offices``: the offices to cover (None: all). ``direct``: without the rollups (reference)."""
    if by not in BY:
        raise ValueError(f"by={by!r} is not one of {', '.join(BY)}")
    if by == "month" and (period.first is None or period.last is None):
        raise ValueError("by=month needs a bounded period (e.g. period=year:2026)")
    if not direct:
        ru.refresh(engine)
    with _snapshot(engine) as conn, conn.begin():
        if not direct:  # the baseline keeps the server's defaults
            ru.no_jit(conn)
        names = office_names(conn)
        units: dict[tuple[str | None, Key], Counts] = {}
        labels: dict[tuple[str | None, Key], str] = {}
        unknown = UNKNOWN.get(lang, UNKNOWN["vi"])
        if by == "month":
            assert period.first is not None and period.last is not None
            m = period.first.replace(day=1)
            while m <= period.last:
                nxt = date(m.year + m.month // 12, m.month % 12 + 1, 1)
                part = resolve(
                    None, max(m, period.first), min(nxt - timedelta(days=1), period.last)
                )
                total_m = Counts()
                for cn in counts(
                    conn, part, "office", offices=offices, channels=channels, direct=direct
                ).values():
                    total_m.add(cn)
                mkey = m.strftime("%Y-%m")
                units[(None, mkey)] = total_m
                labels[(None, mkey)] = m.strftime("%m/%Y")
                m = nxt
        else:
            per = counts(conn, period, by, offices=offices, channels=channels, direct=direct)
            named = {by: _labels(conn, by)} if by in ("desk", "official") else {}
            for (o, u), cn in per.items():
                if by == "office":
                    k: tuple[str | None, Key] = (o, o)
                    label = names.get(o, o)
                elif by == "field":
                    k = (None, u or None)
                    label = u or unknown["field"]
                else:
                    k = (o, u or None)
                    label = named[by].get((o, u), u) if u else unknown[by]
                have = units.get(k)
                if have is None:
                    units[k] = cn
                else:
                    have.add(cn)
                labels[k] = label
    rows = []
    total = Counts()
    for (uo, unit_key), cn in units.items():
        r = row(unit_key, labels[(uo, unit_key)], cn)
        r["office"] = uo
        r["office_name"] = names.get(uo, uo) if uo else None
        r["verified"] = cn.channels.get("terminal", 0)
        r["attested"] = cn.channels.get("qr", 0)
        rows.append(r)
        total.add(cn)
    prior = rank_rows(rows, lambda r: (r["office"] or "",)) if rank and by != "month" else None
    if by == "month":
        rows.sort(key=lambda r: r["key"])
    else:
        rows.sort(key=lambda r: (r["rank"] is None, r["rank"] or 0, r["label"], r["office"] or ""))
    tot = row("total", TOTAL.get(lang, TOTAL["vi"]), total)
    tot["office"] = None
    tot["office_name"] = None
    tot["verified"] = total.channels.get("terminal", 0)
    tot["attested"] = total.channels.get("qr", 0)
    return {
        "from": period.first.isoformat() if period.first else None,
        "to": period.last.isoformat() if period.last else None,
        "period": period.label,
        "by": by,
        "channels": list(channels),
        "offices": None if offices is None else list(offices),
        "rows": rows,
        "total": tot,
        "prior": None if prior is None else {"mean": prior.mean, "strength": prior.strength},
        "reason_labels": {k: REASON_LABELS.get(k, k) for k in sorted(total.reasons)},
        "generated_at": datetime.now(UTC).isoformat(),
    }
