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

from sqlalchemy import func, text
from sqlmodel import Session, col, select

from hub.district.models import (
    Finding,
    Heartbeat,
    Office,
    Rating,
    SuspectedDeletion,
    TerminalKey,
    utcnow,
)

_GAPS = text(
    "SELECT prev + 1 AS seq_from, seq - 1 AS seq_to FROM ("
    " SELECT seq, LAG(seq, 1, :start) OVER (ORDER BY seq) AS prev FROM rating"
    " WHERE terminal_id = :t AND epoch = :e AND seq >= :lo AND seq <= :hi) g"
    " WHERE seq - prev > 1 ORDER BY seq"
)


def _gaps(s: Session, terminal_id: str, epoch: int, lo: int, hi: int) -> list[tuple[int, int]]:
    """Missing sequence numbers in [lo, hi] as ranges, given that lo - 1 is received (or is 0)."""
    params = {"t": terminal_id, "e": epoch, "lo": lo, "hi": hi, "start": lo - 1}
    out = [(int(a), int(b)) for a, b in s.execute(_GAPS, params).all()]
    top = s.exec(
        select(func.max(Rating.seq)).where(
            Rating.terminal_id == terminal_id,
            Rating.epoch == epoch,
            Rating.seq >= lo,
            Rating.seq <= hi,
        )
    ).one()
    last_received = lo - 1 if top is None else int(top)
    if last_received < hi:
        out.append((last_received + 1, hi))
    return out


def refresh_gaps(s: Session, office: str, changed: dict[tuple[str, int], int]) -> None:
    """Recompute the suspected deletions of these terminals (``(terminal_id, epoch)`` -> the lowest
    sequence number that may have changed), inside the caller's transaction.

    Only the window from the last received number below that point up to the highest signed
    ``last_seq`` is looked at (an index range scan), so a catch-up of a million ratings stays linear.
    The terminal's directory row is locked first (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite
    serialises writers anyway), in a fixed order, so two batches touching the same terminal
    recompute one after the other and the second sees the first's rows."""
    now = utcnow()
    for (tid, epoch), low in sorted(changed.items()):
        s.exec(
            select(TerminalKey.terminal_id)
            .where(TerminalKey.terminal_id == tid, TerminalKey.epoch == epoch)
            .with_for_update()
        ).first()
        hi = s.exec(
            select(func.max(Heartbeat.last_seq)).where(
                Heartbeat.terminal_id == tid, Heartbeat.epoch == epoch
            )
        ).one()
        if hi is None or low > hi:
            continue
        below = s.exec(
            select(func.max(Rating.seq)).where(
                Rating.terminal_id == tid, Rating.epoch == epoch, Rating.seq < low
            )
        ).one()
        lo = (int(below) if below is not None else 0) + 1
        found = _gaps(s, tid, epoch, lo, int(hi))
        open_rows = s.exec(
            select(SuspectedDeletion).where(
                SuspectedDeletion.terminal_id == tid,
                SuspectedDeletion.epoch == epoch,
                SuspectedDeletion.resolved_at == None,  # noqa: E711
                SuspectedDeletion.seq_from >= lo,
            )
        ).all()
        kept = {(r.seq_from, r.seq_to) for r in open_rows}
        for r in open_rows:
            if (r.seq_from, r.seq_to) not in found:
                r.resolved_at = now
                s.add(r)
        for a, b in found:
            if (a, b) in kept:
                continue
            # A range that shrank keeps the time its larger range was first seen.
            first = [r.detected_at for r in open_rows if r.seq_from <= b and a <= r.seq_to]
            s.add(
                SuspectedDeletion(
                    office=office,
                    terminal_id=tid,
                    epoch=epoch,
                    seq_from=a,
                    seq_to=b,
                    last_seq=int(hi),
                    detected_at=min(first) if first else now,
                )
            )
    s.flush()


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
