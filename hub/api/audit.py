"""Who does what: the caller (``/me``), the audit log, and the API tokens (listed and revoked here;
created only with ``sipas-hub tokens create``, so a token is never sent over the network)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel
from sqlmodel import col, select

from hub import office as ofc
from hub.api.app import SessionDep
from hub.api.auth import ADMIN_ONLY, ANY_ROLE, READ_ALL, Principal, require, revoke_token
from hub.models import ApiToken, AuditLog

router = APIRouter(prefix="/api/v1")


class Me(BaseModel):
    name: str
    role: str
    official_id: str | None
    token_id: int | None


@router.get("/me", tags=["auth"])
def me(who: Annotated[Principal, Depends(require(*ANY_ROLE))]) -> Me:
    """Who this token belongs to: its role decides what the dashboard shows."""
    return Me(name=who.name, role=who.role, official_id=who.official_id, token_id=who.token_id)


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    entity: str
    entity_id: str
    detail: dict[str, Any]


@router.get("/audit", tags=["audit"], dependencies=[Depends(require(*READ_ALL))])
def audit_log(
    s: SessionDep,
    entity: str | None = Query(
        None, examples=["official"], description="desk, official, duty, ..."
    ),
    entity_id: str | None = None,
    actor: str | None = Query(None, examples=["api:truong-bo-phan"]),
    since: datetime | None = Query(
        None, description="from this time (without a zone: office time)"
    ),
    before_id: int | None = Query(
        None, ge=1, description="cursor: the last id of the previous page"
    ),
    limit: int = Query(200, ge=1, le=5000),
) -> list[AuditEntry]:
    """Every change made to the office's records, newest first."""
    q = select(AuditLog)
    if entity:
        q = q.where(AuditLog.entity == entity)
    if entity_id:
        q = q.where(AuditLog.entity_id == entity_id)
    if actor:
        q = q.where(AuditLog.actor == actor)
    if since:
        q = q.where(AuditLog.at >= ofc.as_utc(since))
    if before_id is not None:
        q = q.where(col(AuditLog.id) < before_id)
    rows = s.exec(q.order_by(col(AuditLog.id).desc()).limit(limit)).all()
    return [
        AuditEntry(**r.model_dump(exclude={"detail"}), detail=json.loads(r.detail)) for r in rows
    ]


class TokenOut(BaseModel):
    id: int
    name: str
    role: str
    official_id: str | None
    prefix: str
    created_at: datetime
    created_by: str
    last_used_at: datetime | None
    revoked_at: datetime | None


@router.get("/tokens", tags=["auth"], dependencies=[Depends(require(*ADMIN_ONLY))])
def list_tokens(s: SessionDep) -> list[TokenOut]:
    """Every API token (never the token itself: only its first characters)."""
    rows = s.exec(select(ApiToken).order_by(col(ApiToken.id))).all()
    return [TokenOut.model_validate(r, from_attributes=True) for r in rows]


@router.post("/tokens/{token_id}/revoke", tags=["auth"])
def revoke(
    token_id: int,
    s: SessionDep,
    request: Request,
    who: Annotated[Principal, Depends(require(*ADMIN_ONLY))],
) -> TokenOut:
    """Stop a token at once (a lost phone, someone who left); revoking it again changes nothing.
    New tokens: ``sipas-hub tokens create`` on the hub."""
    before = s.get(ApiToken, token_id)
    if before is None:
        raise HTTPException(404, f"no token with id {token_id}")
    was_revoked = before.revoked_at is not None
    row = revoke_token(request.app.state.engine, token_id)
    if not was_revoked:
        ofc.audit(
            s, actor=who.actor, action="revoke", entity="token", entity_id=token_id, name=row.name
        )
        s.commit()
    return TokenOut.model_validate(row, from_attributes=True)
