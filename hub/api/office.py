"""API for the office's own records: desks, officials, duty check-in/out, handed-back cases,
terminal placement, exclusions, the audit log and the integrity check."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from pydantic import BaseModel, Field
from sqlmodel import Session, col, select

from hub import integrity, registry
from hub import office as ofc
from hub.api.app import SessionDep, _authorised
from hub.models import AuditLog, Case, Desk, DutyEvent, Exclusion, Official, utcnow

router = APIRouter(prefix="/api/v1", dependencies=[Depends(_authorised)])


def _actor(x_sipas_actor: Annotated[str | None, Header(max_length=64)] = None) -> str:
    # One API token for now: the caller names who acts (recorded in the audit log).
    return f"api:{x_sipas_actor or 'admin'}"


Actor = Annotated[str, Depends(_actor)]


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except ofc.OfficeError as e:
        raise HTTPException(e.status, str(e)) from e


def _office(request: Request) -> str:
    return str(request.app.state.office)


def _changed(request: Request) -> None:
    hook: Callable[[], None] | None = getattr(request.app.state, "on_registry_change", None)
    if hook:
        hook()


# -- desks and officials ---------------------------------------------------------------------------
@router.get("/desks", tags=["office"])
def list_desks(s: SessionDep, request: Request) -> list[Desk]:
    return list(
        s.exec(select(Desk).where(Desk.office == _office(request)).order_by(col(Desk.id))).all()
    )


@router.post("/desks", status_code=201, tags=["office"])
def create_desk(data: ofc.DeskCreate, s: SessionDep, request: Request, actor: Actor) -> Desk:
    with _errors():
        desk = ofc.create_desk(s, office=_office(request), data=data, actor=actor)
        s.commit()
        s.refresh(desk)
    _changed(request)
    return desk


@router.get("/officials", tags=["office"])
def list_officials(s: SessionDep, request: Request) -> list[Official]:
    q = select(Official).where(Official.office == _office(request)).order_by(col(Official.id))
    return list(s.exec(q).all())


@router.post("/officials", status_code=201, tags=["office"])
def create_official(
    data: ofc.OfficialCreate, s: SessionDep, request: Request, actor: Actor
) -> Official:
    with _errors():
        off = ofc.create_official(s, office=_office(request), data=data, actor=actor)
        s.commit()
        s.refresh(off)
    return off


@router.post("/officials/{official_id}/deactivate", tags=["office"])
def deactivate_official(official_id: str, s: SessionDep, actor: Actor) -> Official:
    with _errors():
        off = ofc.set_official_active(s, official_id=official_id, active=False, actor=actor)
        s.commit()
        s.refresh(off)
    return off


@router.put("/terminals/{terminal_id}/desk", tags=["terminals"])
def place_terminal(
    terminal_id: str,
    s: SessionDep,
    request: Request,
    actor: Actor,
    desk_id: str | None = Query(None, description="empty: take it off its desk"),
) -> dict[str, Any]:
    with _errors():
        term = ofc.assign_terminal(s, terminal_id=terminal_id, desk_id=desk_id, actor=actor)
        s.commit()
    _changed(request)
    return {"id": term.id, "desk": term.desk}


class TerminalCreate(BaseModel):
    terminal_id: str | None = Field(
        None, pattern=r"^t-[0-9a-f]{12}$", description="from the chip's id"
    )
    desk_id: str | None = None


class TerminalReplace(BaseModel):
    new_terminal_id: str | None = Field(None, pattern=r"^t-[0-9a-f]{12}$")
    force: bool = Field(False, description="replace even though the old one holds unsent ratings")


def _device(request: Request, device: dict[str, Any]) -> dict[str, Any]:
    device.update(getattr(request.app.state, "device_extra", {}))
    return device


@router.post("/terminals", status_code=201, tags=["terminals"])
def register_terminal(
    data: TerminalCreate, s: SessionDep, request: Request, actor: Actor
) -> dict[str, Any]:
    """Register a terminal; the answer is its device configuration, with its secrets (keep it safe).
    Its MQTT account works as soon as this returns."""
    with _errors():
        if data.desk_id is not None:
            ofc.get_desk(s, data.desk_id)
    try:
        term, device = registry.add_terminal(
            request.app.state.engine,
            office=_office(request),
            terminal_id=data.terminal_id,
            desk=data.desk_id,
        )
    except ValueError as e:
        raise HTTPException(409, str(e)) from e
    ofc.audit(
        s, actor=actor, action="register", entity="terminal", entity_id=term.id, desk=term.desk
    )
    s.commit()
    _changed(request)
    return _device(request, device)


@router.post("/terminals/{terminal_id}/replace", status_code=201, tags=["terminals"])
def replace_terminal(
    terminal_id: str, data: TerminalReplace, request: Request, actor: Actor
) -> dict[str, Any]:
    """A new terminal takes the old one's desk; the old one's account stops working."""
    try:
        _, device = registry.replace_terminal(
            request.app.state.engine,
            office=_office(request),
            old_id=terminal_id,
            new_id=data.new_terminal_id,
            actor=actor,
            force=data.force,
        )
    except ValueError as e:
        raise HTTPException(404 if "not registered" in str(e) else 409, str(e)) from e
    _changed(request)
    return _device(request, device)


class TerminalRetire(BaseModel):
    reason: str | None = Field(None, max_length=200)
    force: bool = Field(False, description="retire even though it holds unsent ratings")


@router.post("/terminals/{terminal_id}/retire", tags=["terminals"])
def retire_terminal(
    terminal_id: str, data: TerminalRetire, request: Request, actor: Actor
) -> dict[str, Any]:
    """Take a terminal out of service: its MQTT account is removed from the broker at once and it
    comes off its desk; its ratings and the desk's history stay."""
    try:
        term = registry.retire_terminal(
            request.app.state.engine,
            office=_office(request),
            terminal_id=terminal_id,
            actor=actor,
            reason=data.reason,
            force=data.force,
        )
    except ValueError as e:
        raise HTTPException(404 if "not registered" in str(e) else 409, str(e)) from e
    _changed(request)
    return {"id": term.id, "active": term.active, "desk": term.desk}


# -- duty ------------------------------------------------------------------------------------------
@router.post("/duty/check-in", status_code=201, tags=["duty"])
def check_in(req: ofc.DutyRequest, s: SessionDep, request: Request, actor: Actor) -> DutyEvent:
    with _errors():
        ev = ofc.check_in(s, office=_office(request), req=req, actor=actor)
        s.commit()
        s.refresh(ev)
    return ev


@router.post("/duty/check-out", status_code=201, tags=["duty"])
def check_out(req: ofc.DutyRequest, s: SessionDep, request: Request, actor: Actor) -> DutyEvent:
    with _errors():
        ev = ofc.check_out(s, office=_office(request), req=req, actor=actor)
        s.commit()
        s.refresh(ev)
    return ev


@router.get("/duty/current", tags=["duty"])
def on_duty_now(s: SessionDep, request: Request) -> dict[str, str | None]:
    """Who is on duty at each desk right now."""
    now = utcnow()
    desks = s.exec(
        select(Desk.id).where(Desk.office == _office(request)).order_by(col(Desk.id))
    ).all()
    return {d: ofc.on_duty(s, desk_id=d, at=now) for d in desks}


@router.get("/duty", tags=["duty"])
def duty_log(
    s: SessionDep,
    desk_id: str | None = None,
    official_id: str | None = None,
    since: datetime | None = None,
    limit: int = Query(200, ge=1, le=5000),
) -> list[DutyEvent]:
    q = select(DutyEvent)
    if desk_id:
        q = q.where(DutyEvent.desk_id == desk_id)
    if official_id:
        q = q.where(DutyEvent.official_id == official_id)
    if since:
        q = q.where(DutyEvent.at >= ofc.as_utc(since))
    return list(
        s.exec(q.order_by(col(DutyEvent.at).desc(), col(DutyEvent.id).desc()).limit(limit)).all()
    )


# -- cases -----------------------------------------------------------------------------------------
def _record_cases(
    items: list[ofc.CaseCreate], s: Session, request: Request, actor: str
) -> list[dict[str, Any]]:
    out = []
    created_desks = set()
    with _errors():
        for data in items:
            case, created = ofc.record_case(s, office=_office(request), data=data, actor=actor)
            out.append({"case": case.model_dump(), "created": created})
            if created:
                created_desks.add(case.desk_id)
        s.commit()
    prompt: Callable[[str], None] | None = getattr(request.app.state, "prompt", None)
    for desk in sorted(created_desks):
        if prompt:
            prompt(desk)  # the terminal on that desk invites a rating
    return out


@router.post("/cases", status_code=201, tags=["cases"])
def case_handed_back(
    data: ofc.CaseCreate, s: SessionDep, request: Request, actor: Actor
) -> dict[str, Any]:
    """A case's result was handed back at a desk (from the one-stop system or a receipt scan).
    The same case code again is accepted and changes nothing (`created`: false)."""
    return _record_cases([data], s, request, actor)[0]


@router.post("/cases/batch", status_code=201, tags=["cases"])
def cases_handed_back(
    items: list[ofc.CaseCreate], s: SessionDep, request: Request, actor: Actor
) -> list[dict[str, Any]]:
    """Several hand-backs in one transaction: all are recorded, or none (the error names the case)."""
    if len(items) > 1000:
        raise HTTPException(413, "at most 1000 cases per batch")
    return _record_cases(items, s, request, actor)


@router.get("/cases", tags=["cases"])
def list_cases(
    s: SessionDep,
    request: Request,
    desk_id: str | None = None,
    code: str | None = None,
    since: datetime | None = None,
    limit: int = Query(200, ge=1, le=5000),
) -> list[Case]:
    q = select(Case).where(Case.office == _office(request))
    if desk_id:
        q = q.where(Case.desk_id == desk_id)
    if code:
        q = q.where(Case.code == code)
    if since:
        q = q.where(Case.handed_back_at >= ofc.as_utc(since))
    return list(s.exec(q.order_by(col(Case.handed_back_at).desc()).limit(limit)).all())


# -- exclusions ------------------------------------------------------------------------------------
@router.get("/ratings/{rating_id}/exclusions", tags=["ratings"])
def rating_exclusions(rating_id: int, s: SessionDep) -> list[Exclusion]:
    return ofc.exclusions_of(s, rating_id)


@router.post("/ratings/{rating_id}/exclusions", status_code=201, tags=["ratings"])
def exclude_rating(
    rating_id: int, data: ofc.ExclusionCreate, s: SessionDep, actor: Actor
) -> Exclusion:
    """Leave a rating out of the figures, with a reason (the rating itself is never changed)."""
    with _errors():
        ex = ofc.exclude(s, rating_id=rating_id, reason=data.reason, note=data.note, actor=actor)
        s.commit()
        s.refresh(ex)
    return ex


@router.post("/exclusions/{exclusion_id}/reinstate", status_code=201, tags=["ratings"])
def reinstate(exclusion_id: int, s: SessionDep, actor: Actor, note: str | None = None) -> Exclusion:
    with _errors():
        back = ofc.reinstate(s, exclusion_id=exclusion_id, note=note, actor=actor)
        s.commit()
        s.refresh(back)
    return back


# -- audit and integrity ---------------------------------------------------------------------------
@router.get("/audit", tags=["integrity"])
def audit_log(
    s: SessionDep,
    entity: str | None = None,
    entity_id: str | None = None,
    limit: int = Query(200, ge=1, le=5000),
) -> list[dict[str, Any]]:
    q = select(AuditLog)
    if entity:
        q = q.where(AuditLog.entity == entity)
    if entity_id:
        q = q.where(AuditLog.entity_id == entity_id)
    rows = s.exec(q.order_by(col(AuditLog.id).desc()).limit(limit)).all()
    return [{**r.model_dump(exclude={"detail"}), "detail": json.loads(r.detail)} for r in rows]


@router.get("/integrity", tags=["integrity"])
def verify(request: Request) -> dict[str, Any]:
    """Recheck every stored rating against its signed bytes, the hash chain and the heartbeats."""
    rep = integrity.verify(request.app.state.engine, _office(request))
    return {
        "ok": rep.ok,
        "terminals": rep.terminals,
        "ratings": rep.ratings,
        "findings": [f.__dict__ for f in rep.findings],
    }
