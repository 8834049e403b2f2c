"""How the sync to the district goes (hub/sync.py, docs/sync.md): ``GET /api/v1/sync``."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from hub import sync
from hub.api.auth import READ_ALL, require

router = APIRouter(prefix="/api/v1", tags=["sync"])


class StreamStatus(BaseModel):
    stream: str = Field(examples=["ratings"])
    watermark: int = Field(description="the last hub id the district has acknowledged")
    head: int = Field(description="the hub's last id (directory: its snapshot version)")
    behind_items: int = Field(description="items the district does not have yet")
    behind_s: float = Field(description="how long the oldest of them has waited, in seconds")
    pending_to: int | None = Field(description="the batch in flight or being retried: up to here")
    attempts: int = Field(description="failed attempts in a row")
    failing_since: datetime | None
    last_success_at: datetime | None
    last_attempt_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    next_attempt_at: datetime | None = Field(description="set while backing off after a failure")
    sent: int = Field(description="items the district acknowledged (all time)")
    rejected: int = Field(description="items the district rejected as forged or invalid")


class SyncStatus(BaseModel):
    configured: bool = Field(description="false: SIPAS_HUB_DISTRICT_URL/_TOKEN are not set")
    running: bool = Field(description="the hub's sync thread is running")
    district_url: str | None
    office: str
    ok: bool = Field(description="no stream is failing")
    failing_since: datetime | None
    alert_after_s: float = Field(description="an alert once failing lasts this long")
    last_success_at: datetime | None
    behind_items: int
    behind_s: float
    streams: list[StreamStatus]


@router.get("/sync", dependencies=[Depends(require(*READ_ALL))])
def sync_status(request: Request) -> SyncStatus:
    """Per stream: how far behind the district is (items and seconds), the last success, the last
    error and the next attempt."""
    sender: sync.SyncSender | None = getattr(request.app.state, "sync", None)
    state = request.app.state
    st = sync.status(
        state.engine,
        state.office,
        district_url=sender.url if sender else None,
        alert_after_s=sender.alert_after_s if sender else 0.0,
    )
    return SyncStatus(running=bool(sender and sender.running), **st)
