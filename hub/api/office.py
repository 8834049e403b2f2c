"""API for the office's own records: desks, officials, duty check-in/out, handed-back cases,
terminal placement and the integrity check (exclusions and corrections: hub/api/exclusions.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field
from sqlmodel import Session, col, select

from hub import integrity, registry
from hub import office as ofc
from hub.api.app import SessionDep
from hub.api.auth import (
    ADMIN_ONLY,
    ANY_ROLE,
    OFFICIAL,
    READ_ALL,
    WRITE_OFFICE,
    Principal,
    require,
    scope_official,
)
from hub.models import Case, Desk, DutyEvent, Official, utcnow

router = APIRouter(prefix="/api/v1")
READ = [Depends(require(*READ_ALL))]  # every record of the office: admin, supervisor, auditor


def _writer(who: Annotated[Principal, Depends(require(*WRITE_OFFICE))]) -> str:
    return who.actor


def _admin(who: Annotated[Principal, Depends(require(*ADMIN_ONLY))]) -> str:
    return who.actor


# What a route that changes something records in the audit log as the actor (hub/api/auth.py);
# asking for it also says who may call the route.
Actor = Annotated[str, Depends(_writer)]  # office data: admin, supervisor
AdminActor = Annotated[str, Depends(_admin)]  # terminals: admin
Anyone = Annotated[Principal, Depends(require(*ANY_ROLE))]  # scoped to an official's own records
OnDuty = Annotated[
    Principal, Depends(require(*WRITE_OFFICE, OFFICIAL))
]  # officials: only themselves


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
@router.get("/desks", tags=["office"], dependencies=[Depends(require(*ANY_ROLE))])
def list_desks(s: SessionDep, request: Request) -> list[Desk]:
    """The office's desks (officials too: they check in at one)."""
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
def list_officials(s: SessionDep, request: Request, who: Anyone) -> list[Official]:
    """The office's officials; an official sees only their own entry."""
    q = select(Official).where(Official.office == _office(request)).order_by(col(Official.id))
    if who.role == OFFICIAL:
        q = q.where(Official.id == who.official_id)
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
    actor: AdminActor,
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
    data: TerminalCreate, s: SessionDep, request: Request, actor: AdminActor
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
    terminal_id: str, data: TerminalReplace, request: Request, actor: AdminActor
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
    terminal_id: str, data: TerminalRetire, request: Request, actor: AdminActor
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
def _own_duty(req: ofc.DutyRequest, who: Principal) -> ofc.DutyRequest:
    """An official checks only themselves in or out, and only now: a back-dated entry would move
    ratings from one official to another (a supervisor corrects the log)."""
    if who.role != OFFICIAL:
        return req
    if req.official_id is not None and req.official_id != who.official_id:
        raise HTTPException(403, "an official checks in and out only themselves")
    if req.at is not None:
        raise HTTPException(
            403,
            "an official checks in and out at the current time (leave 'at' out); "
            "ask a supervisor to correct the duty log",
        )
    return req.model_copy(update={"official_id": who.official_id})


@router.post("/duty/check-in", status_code=201, tags=["duty"])
def check_in(req: ofc.DutyRequest, s: SessionDep, request: Request, who: OnDuty) -> DutyEvent:
    """Start serving at a desk (an official: only themselves, only now)."""
    req = _own_duty(req, who)
    with _errors():
        ev = ofc.check_in(s, office=_office(request), req=req, actor=who.actor)
        s.commit()
        s.refresh(ev)
    return ev


@router.post("/duty/check-out", status_code=201, tags=["duty"])
def check_out(req: ofc.DutyRequest, s: SessionDep, request: Request, who: OnDuty) -> DutyEvent:
    """Stop serving at a desk (an official: only themselves, only now)."""
    req = _own_duty(req, who)
    with _errors():
        if who.role == OFFICIAL:
            current = ofc.on_duty(s, desk_id=ofc.get_desk(s, req.desk_id).id, at=utcnow())
            if current is not None and current != who.official_id:
                raise HTTPException(
                    403,
                    f"{current} is on duty at desk {req.desk_id}: you can check out only yourself",
                )
        ev = ofc.check_out(s, office=_office(request), req=req, actor=who.actor)
        s.commit()
        s.refresh(ev)
    return ev


@router.get("/duty/current", tags=["duty"], dependencies=READ)
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
    who: Anyone,
    desk_id: str | None = None,
    official_id: str | None = None,
    since: datetime | None = None,
    limit: int = Query(200, ge=1, le=5000),
) -> list[DutyEvent]:
    """The duty log, newest first (an official: their own only)."""
    official_id = scope_official(who, official_id)
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
        for row, data in enumerate(items, start=1):
            try:
                case, created = ofc.record_case(s, office=_office(request), data=data, actor=actor)
            except ofc.OfficeError as e:
                if len(items) == 1:
                    raise
                # a batch is all or nothing: name the first bad row so the sender can fix it
                raise type(e)(f"row {row} (case {data.code}): {e}; no case was recorded") from e
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
    data: ofc.CaseCreate, s: SessionDep, request: Request, who: OnDuty
) -> dict[str, Any]:
    """A case's result was handed back at a desk (from the one-stop system or a receipt scan).
    The same case code again is accepted and changes nothing (`created`: false). An official may
    record only a case handed back now, by themselves, at the desk where they are on duty (the
    receipt scan at their desk)."""
    if who.role == OFFICIAL:
        if data.handed_back_at is not None or data.official_id not in (None, who.official_id):
            raise HTTPException(
                403, "an official records only their own hand-backs, as they happen"
            )
        if ofc.on_duty(s, desk_id=data.desk_id, at=utcnow()) != who.official_id:
            raise HTTPException(
                403, f"you are not on duty at desk {data.desk_id}: check in there first"
            )
        data = data.model_copy(update={"official_id": who.official_id})
    return _record_cases([data], s, request, who.actor)[0]


@router.post("/cases/batch", status_code=201, tags=["cases"])
def cases_handed_back(
    items: list[ofc.CaseCreate], s: SessionDep, request: Request, actor: Actor
) -> list[dict[str, Any]]:
    """Several hand-backs in one transaction: all are recorded, or none (the error names the case)."""
    if len(items) > 1000:
        raise HTTPException(413, "at most 1000 cases per batch")
    return _record_cases(items, s, request, actor)


@router.get("/cases", tags=["cases"], dependencies=READ)
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


# -- audit and integrity ---------------------------------------------------------------------------
@router.get("/integrity", tags=["integrity"], dependencies=READ)
def verify(request: Request) -> dict[str, Any]:
    """Recheck every stored rating against its signed bytes, the hash chain and the heartbeats."""
    from hub.api.qr import channel  # the QR ratings are checked with the hub's QR key
    from hub.channels import qr

    engine, office = request.app.state.engine, _office(request)
    rep = integrity.merge(
        integrity.verify(engine, office), qr.verify(engine, office, channel(request).keys)
    )
    return {
        "ok": rep.ok,
        "terminals": rep.terminals,
        "ratings": rep.ratings,
        "findings": [f.__dict__ for f in rep.findings],
    }
