"""The office's own records: desks, officials, the duty log, handed-back cases, exclusions, and the
tagging of a rating with the official on duty and the case just handed back (DESIGN.md 4.4, 6).

Keyword-only functions over a Session; each change is written to the audit log in the same
transaction. The caller commits.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field
from sqlalchemy import exists, not_
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select

from hub.models import (
    AuditLog,
    Case,
    Desk,
    DutyEvent,
    Exclusion,
    Official,
    Rating,
    Terminal,
    utcnow,
)

OFFICE_TZ = ZoneInfo("Asia/Ho_Chi_Minh")

# Link status of a rating (stored with it at ingest)
LINKED = "linked"  # the most recent unrated case handed back at the desk within the window
NO_CASE = "no_case"  # no case handed back at the desk within the window
ALREADY_RATED = "case_already_rated"  # every case in the window already has its rating
LATE = "late"  # the last case at the desk was handed back before the window
NOT_LINKED = "not_linked"  # repeats and test presses never take a case

# Exclusion reasons (DESIGN.md 6). Automatic ones are recorded by the hub at ingest.
AUTO_REASONS = {
    "reason_followup": "lý do cho đánh giá liền trước / the reason for the rating before it",
    "repeat": "bấm lặp trong thời gian khoá / repeated press within the lockout",
    "second_for_case": "hồ sơ đã được đánh giá / the case already has a rating",
    "test": "bấm thử của kỹ thuật viên / technician test press",
    "no_case_required": "không gắn với hồ sơ nào / no case, and this desk requires one",
    "clock_unknown": "thiết bị chưa có giờ chuẩn / terminal clock was not set",
}
# Manual ones: every reason of DESIGN.md 6 (staff also find repeats, second ratings, test presses
# and missing cases the hub could not see), plus free text ("other", with a note).
MANUAL_REASONS = {
    "on_behalf": "cán bộ bấm thay người dân / entered on a citizen's behalf by staff",
    "repeat": AUTO_REASONS["repeat"],
    "second_for_case": AUTO_REASONS["second_for_case"],
    "no_case_required": "không gắn với hồ sơ nào / no case where one is required",
    "test": AUTO_REASONS["test"],
    "technician": "kỹ thuật viên thao tác / technician activity",
    "other": "lý do khác / other (see note)",
}
HUB_ACTOR = "hub"


class OfficeError(ValueError):
    """A request that cannot be carried out; the text says why and what to do."""

    status = 400


class NotFound(OfficeError):
    status = 404


class Conflict(OfficeError):
    status = 409


# -- request schemas (shared by the API and the CLI) -------------------------------------------------
class DeskCreate(BaseModel):
    id: str = Field(pattern=r"^[a-z0-9-]{1,32}$", examples=["quay-1"])
    name: str = Field(min_length=1, max_length=100, examples=["Quầy 1 - Hộ tịch"])
    requires_case: bool = False


class OfficialCreate(BaseModel):
    id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,32}$", examples=["nguyen.van.a"])
    name: str = Field(min_length=1, max_length=100, examples=["Nguyễn Văn A"])


class DutyRequest(BaseModel):
    desk_id: str
    official_id: str | None = None
    at: datetime | None = Field(None, description="default now; without a zone: office time")


class CaseCreate(BaseModel):
    code: str = Field(min_length=1, max_length=64, examples=["H12.34-241123-0001"])
    desk_id: str
    procedure: str | None = Field(None, max_length=300)
    field: str | None = Field(None, max_length=100, examples=["Hộ tịch"])
    official_id: str | None = None
    handed_back_at: datetime | None = Field(None, description="default now; no zone: office time")
    source: str = Field("api", pattern=r"^(api|scanner|one-stop|cli)$")


class ExclusionCreate(BaseModel):
    reason: str = Field(description="one of: " + ", ".join(MANUAL_REASONS))
    note: str | None = Field(None, max_length=500)


def as_utc(t: datetime | None) -> datetime:
    """Aware UTC; a time without a zone is the office's local time (what people type)."""
    if t is None:
        return utcnow()
    if t.tzinfo is None:
        t = t.replace(tzinfo=OFFICE_TZ)
    try:
        return t.astimezone(UTC)
    except OverflowError as e:
        raise OfficeError(f"time {t.isoformat()} is out of range") from e


def audit(
    s: Session, *, actor: str, action: str, entity: str, entity_id: object, **detail: Any
) -> None:
    s.add(
        AuditLog(
            actor=actor,
            action=action,
            entity=entity,
            entity_id=str(entity_id),
            detail=json.dumps(detail, ensure_ascii=False, default=str),
        )
    )


# -- desks and officials ---------------------------------------------------------------------------
def create_desk(s: Session, *, office: str, data: DeskCreate, actor: str) -> Desk:
    if s.get(Desk, data.id) is not None:
        raise Conflict(f"desk {data.id} already exists")
    desk = Desk(office=office, **data.model_dump())
    s.add(desk)
    audit(s, actor=actor, action="create", entity="desk", entity_id=data.id, **data.model_dump())
    return desk


def create_official(s: Session, *, office: str, data: OfficialCreate, actor: str) -> Official:
    if s.get(Official, data.id) is not None:
        raise Conflict(f"official {data.id} already exists")
    off = Official(office=office, **data.model_dump())
    s.add(off)
    audit(s, actor=actor, action="create", entity="official", entity_id=data.id, name=data.name)
    return off


def set_official_active(s: Session, *, official_id: str, active: bool, actor: str) -> Official:
    off = _official(s, official_id)
    off.active = active
    s.add(off)
    audit(
        s,
        actor=actor,
        action="activate" if active else "deactivate",
        entity="official",
        entity_id=official_id,
    )
    return off


def assign_terminal(s: Session, *, terminal_id: str, desk_id: str | None, actor: str) -> Terminal:
    term = s.get(Terminal, terminal_id)
    if term is None:
        raise NotFound(f"terminal {terminal_id} is not registered")
    if desk_id is not None:
        get_desk(s, desk_id)
    audit(
        s,
        actor=actor,
        action="assign",
        entity="terminal",
        entity_id=terminal_id,
        old_desk=term.desk,
        desk=desk_id,
    )
    term.desk = desk_id
    s.add(term)
    return term


def get_desk(s: Session, desk_id: str) -> Desk:
    desk = s.get(Desk, desk_id)
    if desk is None:
        raise NotFound(f"desk {desk_id} does not exist: create it first")
    return desk


def _official(s: Session, official_id: str) -> Official:
    off = s.get(Official, official_id)
    if off is None:
        raise NotFound(f"official {official_id} does not exist: create it first")
    return off


# -- duty log ----------------------------------------------------------------------------------------
def db_time(t: datetime) -> str:
    """A time as the hub's SQLite columns store it (naive UTC text), for hand-written queries."""
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


# The two queries below run for every stored rating: they are written as plain SQLite SQL because
# building them through the ORM cost several times the query itself (measured: 600 vs 2,000+
# ratings/s in bench/ingest_throughput.py).
_ON_DUTY = (
    "SELECT official_id, kind FROM dutyevent WHERE desk_id = ? AND at <= ? "
    "ORDER BY at DESC, id DESC LIMIT 1"
)
_RATED = (
    "EXISTS (SELECT 1 FROM rating r WHERE r.case_id = c.id AND r.link_status IN ('linked', 'late'))"
)
# The cases handed back at the desk within the window, newest first, and whether each is rated.
_IN_WINDOW = (
    f'SELECT c.id, {_RATED} FROM "case" c WHERE c.desk_id = ? AND c.handed_back_at <= ? '
    "AND c.handed_back_at >= ? ORDER BY c.handed_back_at DESC, c.id DESC"
)
# Only when the window has none: the newest unrated case before it, back to LATE_HORIZON.
_LATE = (
    'SELECT c.id FROM "case" c WHERE c.desk_id = ? AND c.handed_back_at < ? '
    f"AND c.handed_back_at >= ? AND NOT {_RATED} ORDER BY c.handed_back_at DESC, c.id DESC LIMIT 1"
)
LATE_HORIZON = timedelta(hours=12)


def on_duty(s: Session, *, desk_id: str, at: datetime) -> str | None:
    """The official on duty at a desk at a given time, from the append-only duty log."""
    row = s.connection().exec_driver_sql(_ON_DUTY, (desk_id, db_time(at))).first()
    return str(row[0]) if row is not None and row[1] == "in" else None


def desk_of(s: Session, *, official_id: str, at: datetime) -> str | None:
    """The desk an official is checked in at, at a given time."""
    ev = s.exec(
        select(DutyEvent)
        .where(DutyEvent.official_id == official_id, DutyEvent.at <= at)
        .order_by(col(DutyEvent.at).desc(), col(DutyEvent.id).desc())
        .limit(1)
    ).first()
    if ev is None or ev.kind != "in" or on_duty(s, desk_id=ev.desk_id, at=at) != official_id:
        return None
    return ev.desk_id


def _duty(
    s: Session, office: str, desk_id: str, official_id: str, kind: str, at: datetime, actor: str
) -> DutyEvent:
    ev = DutyEvent(
        office=office, desk_id=desk_id, official_id=official_id, kind=kind, at=at, actor=actor
    )
    s.add(ev)
    s.flush()
    audit(
        s,
        actor=actor,
        action=f"check-{kind}",
        entity="duty",
        entity_id=ev.id,
        desk=desk_id,
        official=official_id,
        at=at,
    )
    return ev


def check_in(s: Session, *, office: str, req: DutyRequest, actor: str) -> DutyEvent:
    """An official starts serving at a desk. Whoever was on duty there is checked out, and the
    official is checked out of any other desk, at the same moment."""
    if req.official_id is None:
        raise OfficeError("official_id is required to check in")
    get_desk(s, req.desk_id)
    off = _official(s, req.official_id)
    if not off.active:
        raise OfficeError(f"official {off.id} is deactivated")
    at = as_utc(req.at)
    current = on_duty(s, desk_id=req.desk_id, at=at)
    if current == off.id:
        raise Conflict(f"{off.name} is already checked in at desk {req.desk_id}")
    if current is not None:
        _duty(s, office, req.desk_id, current, "out", at, actor)
    elsewhere = desk_of(s, official_id=off.id, at=at)
    if elsewhere is not None:
        _duty(s, office, elsewhere, off.id, "out", at, actor)
    return _duty(s, office, req.desk_id, off.id, "in", at, actor)


def check_out(s: Session, *, office: str, req: DutyRequest, actor: str) -> DutyEvent:
    get_desk(s, req.desk_id)
    at = as_utc(req.at)
    current = on_duty(s, desk_id=req.desk_id, at=at)
    if current is None:
        raise Conflict(f"nobody is checked in at desk {req.desk_id}")
    if req.official_id is not None and req.official_id != current:
        raise OfficeError(f"{req.official_id} is not the official on duty at desk {req.desk_id}")
    return _duty(s, office, req.desk_id, current, "out", at, actor)


# -- cases -------------------------------------------------------------------------------------------
def record_case(s: Session, *, office: str, data: CaseCreate, actor: str) -> tuple[Case, bool]:
    """Record that a case's result was handed back at a desk. Idempotent on the case code: the same
    code again returns the existing record (``created`` False) and changes nothing."""
    existing = s.exec(select(Case).where(Case.office == office, Case.code == data.code)).first()
    if existing is not None:
        return existing, False
    get_desk(s, data.desk_id)
    at = as_utc(data.handed_back_at)
    official = data.official_id or on_duty(s, desk_id=data.desk_id, at=at)
    if official is not None:
        _official(s, official)
    case = Case(
        office=office,
        code=data.code,
        procedure=data.procedure,
        field=data.field,
        desk_id=data.desk_id,
        official_id=official,
        handed_back_at=at,
        source=data.source,
        actor=actor,
    )
    s.add(case)
    s.flush()
    audit(
        s,
        actor=actor,
        action="handed-back",
        entity="case",
        entity_id=case.id,
        code=data.code,
        desk=data.desk_id,
        official=official,
        at=at,
    )
    return case, True


def link_case(
    s: Session, *, desk_id: str, press_time: datetime, window: timedelta
) -> tuple[int | None, str]:
    """The case a rating at this desk belongs to, and how it was linked (see the status constants)."""
    conn = s.connection()
    start = db_time(press_time - window)
    rows = conn.exec_driver_sql(_IN_WINDOW, (desk_id, db_time(press_time), start)).all()
    for cid, rated in rows:  # most recent first
        if not rated:
            return cid, LINKED
    if rows:
        return rows[0][0], ALREADY_RATED
    late = conn.exec_driver_sql(_LATE, (desk_id, start, db_time(press_time - LATE_HORIZON))).first()
    return (late[0], LATE) if late is not None else (None, NO_CASE)


# -- exclusions --------------------------------------------------------------------------------------
def exclude(
    s: Session,
    *,
    rating_id: int,
    reason: str,
    note: str | None,
    actor: str,
    automatic: bool = False,
) -> Exclusion:
    allowed = AUTO_REASONS if automatic else MANUAL_REASONS
    if reason not in allowed:
        raise OfficeError(f"unknown exclusion reason {reason!r}; use one of: {', '.join(allowed)}")
    if not automatic and s.get(Rating, rating_id) is None:
        raise NotFound(f"rating {rating_id} does not exist")
    if not automatic and reason == "other" and not (note or "").strip():
        raise OfficeError("reason 'other' needs a note saying why the rating is left out")
    if not automatic:
        standing = _standing_exclusion(s, rating_id, reason)
        if standing is not None:
            raise Conflict(
                f"rating {rating_id} is already excluded for {reason} (exclusion {standing})"
            )
    ex = Exclusion(rating_id=rating_id, reason=reason, note=note, actor=actor)
    s.add(ex)
    if not automatic:
        s.flush()
        audit(
            s,
            actor=actor,
            action="exclude",
            entity="rating",
            entity_id=rating_id,
            reason=reason,
            note=note,
            exclusion=ex.id,
        )
    return ex


def _standing_exclusion(s: Session, rating_id: int, reason: str) -> int | None:
    back = aliased(Exclusion)
    row = s.exec(
        select(Exclusion.id).where(
            Exclusion.rating_id == rating_id,
            Exclusion.reason == reason,
            col(Exclusion.reverses).is_(None),
            ~exists().where(col(back.reverses) == col(Exclusion.id)),
        )
    ).first()
    return row


def reinstate(s: Session, *, exclusion_id: int, note: str | None, actor: str) -> Exclusion:
    """Take an exclusion back (itself a new, attributed record)."""
    ex = s.get(Exclusion, exclusion_id)
    if ex is None or ex.reverses is not None:
        raise NotFound(f"exclusion {exclusion_id} does not exist")
    if s.exec(select(Exclusion).where(Exclusion.reverses == exclusion_id)).first() is not None:
        raise Conflict(f"exclusion {exclusion_id} was already taken back")
    back = Exclusion(
        rating_id=ex.rating_id, reason=ex.reason, note=note, actor=actor, reverses=exclusion_id
    )
    s.add(back)
    s.flush()
    audit(
        s,
        actor=actor,
        action="reinstate",
        entity="rating",
        entity_id=ex.rating_id,
        exclusion=exclusion_id,
        note=note,
    )
    return back


def valid() -> ColumnElement[bool]:
    """SQL condition on Rating: the rating counts (it has no exclusion that was not taken back)."""
    back = aliased(Exclusion)
    taken_back = select(back.reverses).where(col(back.reverses).is_not(None)).scalar_subquery()
    active = exists().where(
        col(Exclusion.rating_id) == col(Rating.id),
        col(Exclusion.reverses).is_(None),
        col(Exclusion.id).not_in(taken_back),
    )
    return not_(active)


def exclusions_of(s: Session, rating_id: int) -> list[Exclusion]:
    return list(
        s.exec(
            select(Exclusion).where(Exclusion.rating_id == rating_id).order_by(col(Exclusion.id))
        ).all()
    )
