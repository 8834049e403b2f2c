"""Integrity: suspected deletions (sequence gaps below a terminal's signed ``last_seq``) and the
per-office summary of what the district refused (findings).

A terminal numbers its ratings 1, 2, 3, ... per epoch and signs its latest number in every
heartbeat with the district key; the hub relays both but can forge neither. A number at or below
the highest signed ``last_seq`` that never reached the district is a rating the hub (or the way to
the district) lost: a **suspected deletion**. Ratings and heartbeats travel in separate streams, so
a gap can be seen before the ratings that fill it arrive; such a range gets ``resolved_at`` when
they do, and the summary shows only open ranges (with the time they were first seen).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import insert, text, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from hub.district.models import (
    Finding,
    Office,
    SuspectedDeletion,
    utcnow,
)

# The suspected deletions of many terminals at once. ``c`` lists (terminal, epoch, the lowest
# sequence number that may have changed); for each, the window looked at runs from just above the
# last number received below that point (``lo``) to the highest signed ``last_seq`` (``hi``), and
# the numbers missing in it are the gaps between consecutive received numbers (with ``hi + 1`` as a
# sentinel after the last). PostgreSQL reads each window with an index range scan (LATERAL);
# SQLite's planner does the same with a plain join. Linear in what is looked at, one statement.
_WINDOWS = """
w AS (
  SELECT c.tid, c.epoch, c.low,
    (SELECT max(h.last_seq) FROM heartbeat h WHERE h.terminal_id = c.tid AND h.epoch = c.epoch)
      AS hi,
    COALESCE((SELECT max(r.seq) FROM rating r
              WHERE r.terminal_id = c.tid AND r.epoch = c.epoch AND r.seq < c.low), 0) + 1 AS lo
  FROM c),
v AS (SELECT tid, epoch, lo, hi FROM w WHERE hi IS NOT NULL AND low <= hi),
"""
# PostgreSQL: the highest signed last_seq looked up once per terminal (the fence keeps the
# planner from copying the subquery into the filter), ``lo`` only for the windows kept.
_WINDOWS_PG = """
w AS (
  SELECT c.tid, c.epoch, c.low,
    (SELECT max(h.last_seq) FROM heartbeat h WHERE h.terminal_id = c.tid AND h.epoch = c.epoch)
      AS hi
  FROM c OFFSET 0),
v AS (
  SELECT w.tid, w.epoch, w.hi,
    COALESCE((SELECT max(r.seq) FROM rating r
              WHERE r.terminal_id = w.tid AND r.epoch = w.epoch AND r.seq < w.low), 0) + 1 AS lo
  FROM w WHERE w.hi >= w.low),
"""
_GAPS_TAIL = """
g AS (SELECT tid, epoch, seq, LAG(seq) OVER (PARTITION BY tid, epoch ORDER BY seq) AS prev FROM s),
gaps AS (
  SELECT g.tid, g.epoch, COALESCE(g.prev, v.lo - 1) + 1 AS a, g.seq - 1 AS b
  FROM g JOIN v ON g.tid = v.tid AND g.epoch = v.epoch
  WHERE g.seq - COALESCE(g.prev, v.lo - 1) > 1)
SELECT v.tid, v.epoch, v.lo, v.hi, gaps.a, gaps.b
FROM v LEFT JOIN gaps ON gaps.tid = v.tid AND gaps.epoch = v.epoch
ORDER BY v.tid, v.epoch, gaps.a
"""
# PostgreSQL: the windows' received numbers read with one index range scan per window (LATERAL).
_GAPS_PG = text(
    "WITH c AS (SELECT * FROM unnest(CAST(:tids AS text[]), CAST(:epochs AS int[]),"
    " CAST(:lows AS bigint[])) AS c(tid, epoch, low)),"
    + _WINDOWS_PG
    + "s AS (SELECT v.tid, v.epoch, x.seq FROM v CROSS JOIN LATERAL ("
    " SELECT r.seq FROM rating r WHERE r.terminal_id = v.tid AND r.epoch = v.epoch"
    " AND r.seq >= v.lo AND r.seq <= v.hi OFFSET 0) x"  # OFFSET 0: an index scan per window
    " UNION ALL SELECT tid, epoch, hi + 1 FROM v)," + _GAPS_TAIL
)
_LOCK_PG = text(
    "SELECT k.terminal_id FROM terminal_key k JOIN unnest(CAST(:tids AS text[]),"
    " CAST(:epochs AS int[])) AS c(tid, epoch) ON k.terminal_id = c.tid AND k.epoch = c.epoch"
    " ORDER BY k.terminal_id, k.epoch FOR UPDATE OF k"
)


def _gaps_sqlite(n: int) -> Any:
    values = ", ".join(f"(:t{i}, :e{i}, :l{i})" for i in range(n))
    return text(
        f"WITH c(tid, epoch, low) AS (VALUES {values}),"
        + _WINDOWS
        + "s AS (SELECT v.tid, v.epoch, r.seq FROM v JOIN rating r ON r.terminal_id = v.tid"
        " AND r.epoch = v.epoch AND r.seq >= v.lo AND r.seq <= v.hi"
        " UNION ALL SELECT tid, epoch, hi + 1 FROM v)," + _GAPS_TAIL
    )


_CHUNK = 500  # terminals per statement


def _windows(
    s: Session, part: list[tuple[tuple[str, int], int]], pg: bool
) -> dict[tuple[str, int], tuple[int, int, list[tuple[int, int]]]]:
    """(terminal, epoch) -> (lo, hi, the missing ranges in [lo, hi]); only windows with a
    signed ``last_seq`` at or above the changed point."""
    if pg:
        res = s.execute(
            _GAPS_PG,
            {
                "tids": [t for (t, _), _ in part],
                "epochs": [e for (_, e), _ in part],
                "lows": [lo for _, lo in part],
            },
        )
    else:
        params: dict[str, Any] = {}
        for i, ((tid, epoch), low) in enumerate(part):
            params.update({f"t{i}": tid, f"e{i}": epoch, f"l{i}": low})
        res = s.execute(_gaps_sqlite(len(part)), params)
    out: dict[tuple[str, int], tuple[int, int, list[tuple[int, int]]]] = {}
    for tid, epoch, lo, hi, a, b in res:
        w = out.setdefault((tid, int(epoch)), (int(lo), int(hi), []))
        if a is not None:
            w[2].append((int(a), int(b)))
    return out


def refresh_gaps(s: Session, office: str, changed: dict[tuple[str, int], int]) -> None:
    """Recompute the suspected deletions of these terminals (``(terminal_id, epoch)`` -> the lowest
    sequence number that may have changed), inside the caller's transaction.

    Only the window from the last received number below that point up to the highest signed
    ``last_seq`` is looked at (an index range scan), so a catch-up of a million ratings stays linear;
    all the terminals of a batch are looked at in one statement (a few for a very large batch), and
    the ranges found are compared with the open ones here (a few hundred rows: cheaper than the
    database's nested loops over CTEs it cannot estimate).
    The terminals' directory rows are locked first (``SELECT ... FOR UPDATE`` on PostgreSQL, in a
    fixed order; SQLite serialises writers anyway), so two batches touching the same terminal
    recompute one after the other and the second sees the first's rows."""
    if not changed:
        return
    now = utcnow()
    items = sorted(changed.items())
    sd: Any = SuspectedDeletion.__table__  # type: ignore[attr-defined]
    pg = s.get_bind().dialect.name == "postgresql"
    for n in range(0, len(items), _CHUNK):
        part = items[n : n + _CHUNK]
        if pg:
            # The terminals' directory rows first, in a fixed order, in a statement of their own
            # (the refresh must see what the batch it waited for committed).
            s.execute(
                _LOCK_PG,
                {"tids": [t for (t, _), _ in part], "epochs": [e for (_, e), _ in part]},
            )
        windows = _windows(s, part, pg)
        if not windows:
            continue
        open_rows: dict[tuple[str, int], list[Any]] = {}
        q = (
            sa_select(
                sd.c.id, sd.c.terminal_id, sd.c.epoch, sd.c.seq_from, sd.c.seq_to, sd.c.detected_at
            )
            .where(sd.c.office == office, sd.c.resolved_at.is_(None))
            .where(sd.c.terminal_id.in_(sorted({t for t, _ in windows})))
        )
        for r in s.execute(q):
            w = windows.get((r.terminal_id, int(r.epoch)))
            if w is not None and r.seq_from >= w[0]:
                open_rows.setdefault((r.terminal_id, int(r.epoch)), []).append(r)
        resolve: list[int] = []
        add: list[dict[str, Any]] = []
        for (tid, epoch), (_lo, hi, found) in windows.items():
            rows = open_rows.get((tid, epoch), [])
            kept = {(r.seq_from, r.seq_to) for r in rows}
            found_set = set(found)
            resolve += [r.id for r in rows if (r.seq_from, r.seq_to) not in found_set]
            for a, b in found:
                if (a, b) in kept:
                    continue
                # A range that shrank keeps the time its larger range was first seen.
                first = [r.detected_at for r in rows if r.seq_from <= b and a <= r.seq_to]
                add.append(
                    {
                        "office": office,
                        "terminal_id": tid,
                        "epoch": epoch,
                        "seq_from": a,
                        "seq_to": b,
                        "last_seq": hi,
                        "detected_at": min(first) if first else now,
                        "resolved_at": None,
                    }
                )
        if resolve:
            s.execute(update(sd).where(sd.c.id.in_(resolve)).values(resolved_at=now))
        if add:
            s.execute(insert(sd), add)


def _iso(t: datetime | None) -> str | None:
    if t is None:
        return None
    return t.isoformat() if t.tzinfo else t.isoformat() + "Z"


def summary(s: Session, offices: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Per office: refused items (forged ratings, forged heartbeats, conflicting records) and open
    suspected deletions, with the details a district auditor needs to ask the office."""
    q = select(Office).order_by(Office.id)
    if offices is not None:
        q = q.where(col(Office.id).in_(list(offices)))
    out = []
    for office in s.exec(q).all():
        findings = s.exec(
            select(Finding).where(Finding.office == office.id).order_by(col(Finding.id))
        ).all()
        gaps = s.exec(
            select(SuspectedDeletion)
            .where(
                SuspectedDeletion.office == office.id,
                SuspectedDeletion.resolved_at == None,  # noqa: E711
            )
            .order_by(
                col(SuspectedDeletion.terminal_id),
                col(SuspectedDeletion.epoch),
                col(SuspectedDeletion.seq_from),
            )
        ).all()
        out.append(
            {
                "office": office.id,
                "name": office.name,
                "forged": [
                    {
                        "kind": f.kind,
                        "terminal_id": f.terminal_id,
                        "epoch": f.epoch,
                        "seq": f.seq,
                        "reason": f.reason,
                        "detected_at": _iso(f.detected_at),
                    }
                    for f in findings
                ],
                "suspected_deletions": [
                    {
                        "terminal_id": g.terminal_id,
                        "epoch": g.epoch,
                        "seq_from": g.seq_from,
                        "seq_to": g.seq_to,
                        "missing": g.seq_to - g.seq_from + 1,
                        "below_signed_last_seq": g.last_seq,
                        "detected_at": _iso(g.detected_at),
                    }
                    for g in gaps
                ],
                "ok": not findings and not gaps,
            }
        )
    return out
