"""Exclusions (a rating left out of the figures, with a reason) and corrections (a rating
re-attributed to another official): attributed, audit-logged records that never change a rating.
Taking one back is another record. (DESIGN.md 6; docs/hub.md "Exclusions", "Corrections".)
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, Field
from sqlalchemy import and_, exists
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from hub import office as ofc
from hub import ratings_query as rq
from hub.api.app import SessionDep
from hub.api.auth import ANY_ROLE, READ_ALL, WRITE_OFFICE, Principal, require
from hub.api.ratings import one_rating
from hub.models import Correction, Exclusion, Rating
from hub.periods import resolve

router = APIRouter(prefix="/api/v1")
Anyone = Annotated[Principal, Depends(require(*ANY_ROLE))]
Writer = Annotated[Principal, Depends(require(*WRITE_OFFICE))]
READ = [Depends(require(*READ_ALL))]

REASONS_HELP = ", ".join(f"{k} ({v})" for k, v in ofc.MANUAL_REASONS.items())


class ReinstateRequest(BaseModel):
    note: str | None = Field(None, max_length=500, examples=["không phải bấm hộ, đã xác minh"])


def _answer(response: Response, more: bool, last_id: int | None) -> None:
    if more and last_id is not None:
        response.headers["X-Next-Before-Id"] = str(last_id)


# -- exclusions ------------------------------------------------------------------------------------
@router.get("/ratings/{rating_id}/exclusions", tags=["exclusions"])
def rating_exclusions(rating_id: int, s: SessionDep, who: Anyone) -> list[rq.ExclusionOut]:
    """The exclusions of one rating, with who took them back (an official: own ratings only)."""
    one_rating(s, rating_id, who)
    return rq.exclusions_out(ofc.exclusions_of(s, rating_id))


@router.post(
    "/ratings/{rating_id}/exclusions",
    status_code=201,
    tags=["exclusions"],
    description=f"Leave a rating out of the figures. Reasons: {REASONS_HELP}; `other` needs a "
    "note. The rating itself is never changed; the exclusion is in the audit log with its actor.",
)
def exclude_rating(
    rating_id: int, data: ofc.ExclusionCreate, s: SessionDep, who: Writer
) -> rq.ExclusionOut:
    ex = ofc.exclude(s, rating_id=rating_id, reason=data.reason, note=data.note, actor=who.actor)
    s.commit()
    return rq.exclusions_out([ex])[0]


@router.post("/exclusions/{exclusion_id}/reinstate", status_code=201, tags=["exclusions"])
def reinstate(
    exclusion_id: int,
    s: SessionDep,
    who: Writer,
    data: ReinstateRequest | None = None,
    note: Annotated[
        str | None, Query(max_length=500, description="older form of the body's note")
    ] = None,
) -> rq.ExclusionOut:
    """Take an exclusion back: the rating counts again unless another exclusion stands. Answers
    the exclusion with ``reinstated`` filled in."""
    back = ofc.reinstate(
        s, exclusion_id=exclusion_id, note=(data.note if data else None) or note, actor=who.actor
    )
    s.commit()
    return _exclusion(s, back.reverses or exclusion_id)


def _exclusion(s: Session, exclusion_id: int) -> rq.ExclusionOut:
    rows = s.exec(
        select(Exclusion)
        .where((col(Exclusion.id) == exclusion_id) | (col(Exclusion.reverses) == exclusion_id))
        .order_by(col(Exclusion.id))
    ).all()
    return rq.exclusions_out(rows)[0]


@router.get("/exclusions", tags=["exclusions"], dependencies=READ)
def list_exclusions(
    s: SessionDep,
    response: Response,
    rating_id: Annotated[int | None, Query(ge=1, lt=2**63)] = None,
    desk: Annotated[str | None, Query(max_length=64)] = None,
    reason: Annotated[str | None, Query(max_length=40)] = None,
    actor: Annotated[str | None, Query(max_length=80, description="'hub': automatic")] = None,
    state: Annotated[
        Literal["standing", "reinstated"] | None,
        Query(description="standing: still leaves the rating out"),
    ] = None,
    from_: Annotated[
        date | None, Query(alias="from", description="recorded from (office time)")
    ] = None,
    to: Annotated[date | None, Query(description="recorded up to (inclusive)")] = None,
    before_id: Annotated[
        int | None, Query(ge=1, lt=2**63, description="cursor: X-Next-Before-Id")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[rq.ExclusionOut]:
    """Who left which rating out, when and why, newest first; each with its reinstatement, if
    any. More pages: ``X-Next-Before-Id`` header, passed back as ``before_id``."""
    q = select(Exclusion).where(col(Exclusion.reverses).is_(None))
    if rating_id is not None:
        q = q.where(Exclusion.rating_id == rating_id)
    if reason:
        q = q.where(Exclusion.reason == reason)
    if actor:
        q = q.where(Exclusion.actor == actor)
    if desk:
        q = q.where(col(Exclusion.rating_id).in_(select(Rating.id).where(Rating.desk == desk)))
    back = aliased(Exclusion)
    taken_back = exists().where(col(back.reverses) == col(Exclusion.id))
    if state == "standing":
        q = q.where(~taken_back)
    elif state == "reinstated":
        q = q.where(taken_back)
    p = resolve(None, from_, to)
    if p.start is not None:
        q = q.where(col(Exclusion.created_at) >= p.start)
    if p.end is not None:
        q = q.where(col(Exclusion.created_at) < p.end)
    if before_id is not None:
        q = q.where(col(Exclusion.id) < before_id)
    rows = list(s.exec(q.order_by(col(Exclusion.id).desc()).limit(limit + 1)).all())
    more, rows = len(rows) > limit, rows[:limit]
    ids = [x.id for x in rows]
    backs = s.exec(select(Exclusion).where(col(Exclusion.reverses).in_(ids))).all() if ids else []
    _answer(response, more, rows[-1].id if rows else None)
    return rq.exclusions_out([*rows, *backs])


# -- corrections -----------------------------------------------------------------------------------
@router.post("/ratings/{rating_id}/corrections", status_code=201, tags=["corrections"])
def correct_rating(
    rating_id: int, data: rq.CorrectionCreate, s: SessionDep, who: Writer
) -> rq.CorrectionOut:
    """Re-attribute a rating to another official (``official_id``), or to nobody (null), when the
    wrong official was checked in. The latest correction that was not reversed wins; reports and
    the ``official`` filter follow it. The rating row is never changed."""
    c = rq.correct(
        s, rating_id=rating_id, official_id=data.official_id, reason=data.reason, actor=who.actor
    )
    s.commit()
    return rq.corrections_out([c])[0]


@router.post("/corrections/{correction_id}/reverse", status_code=201, tags=["corrections"])
def reverse_correction(
    correction_id: int, s: SessionDep, who: Writer, data: rq.CorrectionReverse | None = None
) -> rq.CorrectionOut:
    """Take a correction back: the correction before it, or the official tagged at ingest,
    applies again. Answers the correction with ``reversed`` filled in."""
    back = rq.reverse_correction(
        s, correction_id=correction_id, note=data.note if data else None, actor=who.actor
    )
    s.commit()
    rows = s.exec(
        select(Correction).where(
            (col(Correction.id) == back.reverses) | (col(Correction.id) == back.id)
        )
    ).all()
    return rq.corrections_out(rows)[0]


@router.get("/corrections", tags=["corrections"], dependencies=READ)
def list_corrections(
    s: SessionDep,
    response: Response,
    rating_id: Annotated[int | None, Query(ge=1, lt=2**63)] = None,
    official: Annotated[
        str | None, Query(max_length=64, description="the official a rating was given to")
    ] = None,
    actor: Annotated[str | None, Query(max_length=80)] = None,
    state: Literal["standing", "reversed"] | None = None,
    before_id: Annotated[
        int | None, Query(ge=1, lt=2**63, description="cursor: X-Next-Before-Id")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[rq.CorrectionOut]:
    """Who re-attributed which rating, to whom, when and why, newest first, with the reversal
    if any. More pages: ``X-Next-Before-Id`` header, passed back as ``before_id``."""
    q = select(Correction).where(col(Correction.reverses).is_(None))
    if rating_id is not None:
        q = q.where(Correction.rating_id == rating_id)
    if official:
        q = q.where(Correction.official_id == official)
    if actor:
        q = q.where(Correction.actor == actor)
    back = aliased(Correction)
    reversed_ = exists().where(and_(col(back.reverses) == col(Correction.id)))
    if state == "standing":
        q = q.where(~reversed_)
    elif state == "reversed":
        q = q.where(reversed_)
    if before_id is not None:
        q = q.where(col(Correction.id) < before_id)
    rows = list(s.exec(q.order_by(col(Correction.id).desc()).limit(limit + 1)).all())
    more, rows = len(rows) > limit, rows[:limit]
    ids = [x.id for x in rows]
    backs = s.exec(select(Correction).where(col(Correction.reverses).in_(ids))).all() if ids else []
    _answer(response, more, rows[-1].id if rows else None)
    return rq.corrections_out([*rows, *backs])
