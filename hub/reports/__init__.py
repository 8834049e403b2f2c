"""SIPAS reports of an office (DESIGN.md §6; formulas and choices in docs/reports.md).

``satisfaction`` answers "how satisfied were citizens" per office, desk, official (after
corrections) or field (through the linked case), for any period of office time, with counts per
level, the Wilson 95 % interval, the response rate, sample adequacy, shrunk rates and ranks, and the
exclusions per reason next to every figure. ``heatmap`` gives hour × weekday cells.

Channels: ``terminal`` and ``qr`` ratings from the rating table; ``paper`` tallies of opened ballot
boxes (dated by the box's opening) are added to the level counts and rates and also shown on their
own (``paper``), so a reader sees how much of a figure is tallies.

Mixed scales: a rating counts as satisfied by its own scale (levels 1-2 on every scale), so a unit
whose terminals have 3 and 5 buttons gets (satisfied on either) / (valid on either); ``scale`` is
then null and ``by_scale`` has the counts per scale.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine

from hub.office import AUTO_REASONS, MANUAL_REASONS
from hub.periods import Period
from hub.reports.query import (
    BY,
    CHANNELS,
    Counts,
    Filters,
    HeatCell,
    Key,
    direct_counts,
    direct_heat,
    paper_counts,
    rollup_counts,
    rollup_heat,
)
from hub.reports.rollup import Rollups, rollups_for
from hub.reports.stats import SATISFIED_LEVELS, Prior, adequacy, estimate_prior, shrink, wilson

__all__ = [
    "BY",
    "CHANNELS",
    "REASON_LABELS",
    "Filters",
    "counts",
    "heatmap",
    "parse_channels",
    "satisfaction",
]

NO_FILTERS = Filters()  # frozen: safe as a default
REASON_LABELS: dict[str, str] = {
    **AUTO_REASONS,
    **MANUAL_REASONS,
    "paper_invalid": "phiếu giấy không hợp lệ / invalid paper ballots",
}
UNKNOWN = {
    "vi": {
        "desk": "(không rõ quầy)",
        "official": "(chưa gắn công chức)",
        "field": "(không rõ lĩnh vực)",
    },
    "en": {"desk": "(no desk)", "official": "(no official)", "field": "(no field)"},
}
TOTAL_LABEL = {"vi": "Tổng cộng", "en": "Total"}


def parse_channels(text: str | None) -> tuple[str, ...]:
    """``terminal,qr,paper`` (default: all three)."""
    from hub.office import OfficeError

    if not text:
        return CHANNELS
    out = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    bad = [p for p in out if p not in CHANNELS]
    if bad or not out:
        raise OfficeError(f"unknown channel {', '.join(bad) or text!r}: use {','.join(CHANNELS)}")
    return out


def counts(
    engine: Engine,
    period: Period,
    *,
    by: str = "office",
    channels: Sequence[str] = CHANNELS,
    filters: Filters = NO_FILTERS,
    direct: bool = False,
) -> dict[Key, Counts]:
    """Counts per unit (the key: desk id, official id, field or '' for the office)."""
    if by not in BY:
        from hub.office import OfficeError

        raise OfficeError(f"by={by!r} is not one of {', '.join(BY)}")
    ro = rollups_for(engine)
    if not direct:
        ro.refresh()
    c = ro.conn()
    c.execute("BEGIN")  # one snapshot for every query of the report
    try:
        reader = direct_counts if direct else rollup_counts
        out = reader(c, period.first, period.last, by, channels, filters)
        if "paper" in channels:
            for k, cn in paper_counts(c, period.first, period.last, by, filters).items():
                out.setdefault(k, Counts()).add(cn)
    finally:
        c.execute("COMMIT")
    return out


def _labels(ro: Rollups, by: str, keys: Sequence[Key], office: str, lang: str) -> dict[Key, str]:
    names: dict[Key, str] = {}
    c = ro.conn()
    if by == "desk":
        names.update(c.execute("SELECT id, name FROM desk").fetchall())
    elif by == "official":
        names.update(c.execute("SELECT id, name FROM official").fetchall())
    out: dict[Key, str] = {}
    for k in keys:
        if by == "office":
            out[k] = office
        elif k is None:
            out[k] = UNKNOWN.get(lang, UNKNOWN["vi"])[by]
        else:
            out[k] = names.get(k, k)
    return out


def row(key: Key, label: str, cn: Counts) -> dict[str, Any]:
    """One report row (the API contract's ROW) from its counts; shrinkage and rank come later.
    (One pass over the counts: a district year by official builds 2,000 of these per call.)"""
    valid = satisfied = 0
    levels: dict[str, int] = {}
    by_scale: dict[str, dict[str, int]] = {}
    for (s, lv), n in sorted(cn.levels.items()):
        valid += n
        if not n:
            continue
        if lv in SATISFIED_LEVELS.get(s, ()):
            satisfied += n
        k = str(lv)
        levels[k] = levels.get(k, 0) + n
        per = by_scale.get(str(s))
        if per is None:
            per = by_scale[str(s)] = {}
        per[k] = n
    scales = list(by_scale)
    if len(levels) > 1:
        levels = dict(sorted(levels.items()))
    lo, hi = wilson(satisfied, valid)
    return {
        "key": key,
        "label": label,
        "valid": valid,
        "excluded": cn.excluded,
        "excluded_by_reason": dict(sorted(cn.reasons.items())),
        "levels": levels,
        "shares": {k: v / valid for k, v in levels.items()} if valid else {},
        "scale": int(scales[0]) if len(scales) == 1 else None,
        "by_scale": by_scale,
        "satisfied": satisfied,
        "rate": satisfied / valid if valid else None,
        "ci_low": lo,
        "ci_high": hi,
        "cases": cn.cases,
        "rated_cases": cn.rated,
        "response_rate": cn.rated / cn.cases if cn.cases else None,
        "shrunk_rate": None,
        "rank": None,
        "adequacy": adequacy(valid, cn.cases),
        "paper": cn.channels.get("paper", 0),
        "channels": {ch: cn.channels.get(ch, 0) for ch in CHANNELS},
    }


def rank_rows(
    rows: list[dict[str, Any]], tiebreak: Callable[[dict[str, Any]], tuple[str, ...]] = lambda r: ()
) -> Prior | None:
    """Shrunk rate and rank (1 = best) of the rows that have valid ratings, in place; the prior
    (None when no row has any). Ties: higher raw rate, more ratings, label, then ``tiebreak``
    (the district adds the office: two offices may both have a "quay-1")."""
    prior = estimate_prior([(r["satisfied"], r["valid"]) for r in rows])
    if prior is None:
        return None
    for r in rows:
        if r["valid"]:
            r["shrunk_rate"] = shrink(r["satisfied"], r["valid"], prior)
    ranked = sorted(
        (r for r in rows if r["valid"]),
        key=lambda r: (-r["shrunk_rate"], -(r["rate"] or 0), -r["valid"], r["label"], *tiebreak(r)),
    )
    for i, r in enumerate(ranked, 1):
        r["rank"] = i
    return prior


def satisfaction(
    engine: Engine,
    period: Period,
    *,
    by: str = "office",
    channels: Sequence[str] = CHANNELS,
    filters: Filters = NO_FILTERS,
    office: str = "office",
    lang: str = "vi",
    rank: bool = True,
    direct: bool = False,
) -> dict[str, Any]:
    """The satisfaction report (the API's ``/reports/satisfaction``). ``rank=False`` leaves out
    shrinkage and ranks (an official's own view: they would reveal the office's figures)."""
    per = counts(engine, period, by=by, channels=channels, filters=filters, direct=direct)
    ro = rollups_for(engine)
    labels = _labels(ro, by, list(per), office, lang)
    rows = [row(k, labels[k], cn) for k, cn in per.items()]
    total = Counts()
    for cn in per.values():
        total.add(cn)
    prior = rank_rows(rows) if rank and by != "office" else None
    rows.sort(key=lambda r: (r["rank"] is None, r["rank"] or 0, r["label"]))
    return {
        "from": period.first.isoformat() if period.first else None,
        "to": period.last.isoformat() if period.last else None,
        "period": period.label,
        "by": by,
        "channels": list(channels),
        "rows": rows,
        "total": row("total", TOTAL_LABEL.get(lang, TOTAL_LABEL["vi"]), total),
        "prior": None if prior is None else {"mean": prior.mean, "strength": prior.strength},
        "reason_labels": {k: REASON_LABELS.get(k, k) for k in sorted(total.reasons)},
        "generated_at": datetime.now(UTC).isoformat(),
    }


def heat_channels(channels: Sequence[str]) -> tuple[str, ...]:
    """The channels a heat map can show: paper ballots have no time of day, so ``paper`` is
    left out of a list and refused alone (docs/decisions.md)."""
    from hub.office import OfficeError

    out = tuple(ch for ch in channels if ch != "paper")
    if not out:
        raise OfficeError(
            "paper ballots have no time of day (they are tallies per opened box), so the heat map "
            "cannot show them: ask for channel=terminal, qr or terminal,qr; paper figures are in "
            "the satisfaction report (channel=paper)"
        )
    return out


def heatmap(
    engine: Engine,
    period: Period,
    *,
    channels: Sequence[str] = ("terminal", "qr"),
    filters: Filters = NO_FILTERS,
    direct: bool = False,
) -> dict[str, Any]:
    """Hour × weekday (0 = Monday) of office time: valid, satisfied, excluded ratings of the
    asked channels (terminal and QR; paper ballots have no time of day: see heat_channels)."""
    chans = heat_channels(channels)
    ro = rollups_for(engine)
    if not direct:
        ro.refresh()
    c = ro.conn()
    c.execute("BEGIN")
    try:
        got = (direct_heat if direct else rollup_heat)(c, period.first, period.last, chans, filters)
        excl = rollup_counts if not direct else direct_counts
        ex = excl(c, period.first, period.last, "office", chans, filters)
    finally:
        c.execute("COMMIT")
    cells = []
    for wd in range(7):
        for h in range(24):
            cell = got.get((wd, h), HeatCell())
            cells.append(
                {
                    "weekday": wd,
                    "hour": h,
                    "valid": cell.valid,
                    "satisfied": cell.satisfied,
                    "excluded": cell.excluded,
                    "rate": cell.satisfied / cell.valid if cell.valid else None,
                }
            )
    tot = ex.get("", Counts())
    return {
        "from": period.first.isoformat() if period.first else None,
        "to": period.last.isoformat() if period.last else None,
        "period": period.label,
        "channels": list(chans),
        "cells": cells,
        "valid": sum(x["valid"] for x in cells),
        "excluded": tot.excluded,
        "excluded_by_reason": dict(sorted(tot.reasons.items())),
    }
