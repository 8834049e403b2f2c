"""``/api/v1/alerts``: list, read, acknowledge, resolve and comment alerts, and a live stream of
them (Server-Sent Events). The alert engine is ``app.state.alerts`` (:class:`hub.alerts.AlertEngine`).
"""

from __future__ import annotations

import asyncio
import json
import queue
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from hub.alerts import AlertEngine, AlertNotFound, AlertOut, AlertStateError, RuleCode
from hub.api.auth import (
    READ_ALL,
    WRITE_OFFICE,
    Principal,
    TokenWatch,
    end_event,
    recheck_seconds,
    require,
)

_ACTOR = (
    "who acts, for the bootstrap token only (shared by tools); a personal token acts as its holder"
)


class AlertAction(BaseModel):
    actor: str | None = Field(
        None, min_length=1, max_length=64, examples=["truong.bo.phan"], description=_ACTOR
    )
    comment: str | None = Field(None, max_length=2000)


class AlertComment(BaseModel):
    actor: str | None = Field(
        None, min_length=1, max_length=64, examples=["truong.bo.phan"], description=_ACTOR
    )
    comment: str = Field(min_length=1, max_length=2000, examples=["Đã gặp công dân để xin lỗi"])


def _alerts(request: Request) -> AlertEngine:
    engine: AlertEngine | None = getattr(request.app.state, "alerts", None)
    if engine is None:
        raise HTTPException(503, "alerts are not running on this hub")
    return engine


AlertsDep = Annotated[AlertEngine, Depends(_alerts)]


def _act(fn: Callable[[], AlertOut]) -> AlertOut:
    try:
        return fn()
    except AlertNotFound as e:
        raise HTTPException(404, str(e)) from None
    except AlertStateError as e:
        raise HTTPException(409, str(e)) from None


def sse(payload: dict[str, Any]) -> str:
    """One Server-Sent Event; its id is the alert event's id, so a client resumes with
    Last-Event-ID after a reconnect."""
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"id: {payload['event_id']}\nevent: alert\ndata: {data}\n\n"


def _name(who: Principal, named: str | None) -> str:
    # The alert's history shows a person; tools on the bootstrap token name the one they act for.
    return named if named and who.token_id is None else who.name


Writer = Annotated[Principal, Depends(require(*WRITE_OFFICE))]
Reader = Annotated[Principal, Depends(require(*READ_ALL))]


def alerts_router(*, ping_seconds: float = 15.0) -> APIRouter:
    router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])
    read = [Depends(require(*READ_ALL))]

    # before "/{alert_id}", which would otherwise take "stream" for an id
    @router.get(
        "/stream",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def stream(
        request: Request,
        alerts: AlertsDep,
        who: Reader,
        last_event_id: Annotated[str | None, Header(description="resume after this event")] = None,
    ) -> StreamingResponse:
        """Every new alert and every change, as ``event: alert`` with the JSON payload that MQTT and
        the webhook also get; a comment line every 15 s keeps proxies from closing the stream.
        The token is re-checked while the stream is open (every few seconds, before the next
        event): once it is revoked or its role no longer allows this, the stream ends with
        ``event: end`` and ``data: {"reason": "token_revoked", "detail": ...}``.
        Browsers: EventSource cannot send the bearer token, read it with fetch() instead."""
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        q = alerts.subscribe(notify=lambda: loop.call_soon_threadsafe(wake.set))
        try:
            after = int(last_event_id) if last_event_id else None
        except ValueError:
            after = None
        return StreamingResponse(
            # app.state.alert_ping_seconds lets a test hear pings without waiting 15 s
            _events(
                alerts,
                q,
                wake,
                after,
                float(getattr(request.app.state, "alert_ping_seconds", ping_seconds)),
                TokenWatch(request.app.state.engine, who, READ_ALL, recheck_seconds(request)),
            ),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @router.get("", response_model=list[AlertOut], dependencies=read)
    def list_alerts(
        alerts: AlertsDep,
        state: Literal["open", "acknowledged", "resolved", "unresolved"] | None = None,
        rule: RuleCode | None = None,
        desk: str | None = None,
        before_id: int | None = Query(None, ge=1, description="cursor: the last id of a page"),
        limit: int = Query(100, ge=1, le=1000),
    ) -> list[AlertOut]:
        """Newest first."""
        return alerts.list(state, limit, rule=rule, desk=desk, before_id=before_id)

    @router.get("/{alert_id}", response_model=AlertOut, dependencies=read)
    def get_alert(alerts: AlertsDep, alert_id: int) -> AlertOut:
        """One alert with its history."""
        return _act(lambda: alerts.get(alert_id))

    @router.post("/{alert_id}/acknowledge", response_model=AlertOut)
    def acknowledge(alerts: AlertsDep, alert_id: int, body: AlertAction, who: Writer) -> AlertOut:
        return _act(lambda: alerts.acknowledge(alert_id, _name(who, body.actor), body.comment))

    @router.post("/{alert_id}/resolve", response_model=AlertOut)
    def resolve(alerts: AlertsDep, alert_id: int, body: AlertAction, who: Writer) -> AlertOut:
        return _act(lambda: alerts.resolve(alert_id, _name(who, body.actor), body.comment))

    @router.post("/{alert_id}/comment", response_model=AlertOut)
    def comment(alerts: AlertsDep, alert_id: int, body: AlertComment, who: Writer) -> AlertOut:
        return _act(lambda: alerts.comment(alert_id, _name(who, body.actor), body.comment))

    return router


async def _events(
    alerts: AlertEngine,
    q: queue.Queue[dict[str, Any] | None],
    wake: asyncio.Event,
    after: int | None,
    ping_seconds: float,
    watch: TokenWatch,
) -> AsyncIterator[str]:
    try:
        yield "retry: 3000\n\n"
        last = after or 0
        if after is not None:  # replay what the client missed; live ones already queue up behind
            for missed in await asyncio.to_thread(alerts.events_since, after):
                if (why := await watch.problem()) is not None:
                    yield end_event(why)
                    return
                last = missed["event_id"]
                yield sse(missed)
        ping_at = time.monotonic() + ping_seconds
        while True:
            try:
                p = q.get_nowait()
            except queue.Empty:
                wake.clear()  # a put after this line schedules wake.set() on this loop
                if (why := await watch.problem()) is not None:  # a clock read unless due
                    yield end_event(why)
                    return
                if q.empty():
                    # wake for an alert, the next token check or the next ping
                    wait = min(ping_at - time.monotonic(), watch.due_in())
                    try:
                        await asyncio.wait_for(wake.wait(), max(wait, 0.0))
                    except TimeoutError:
                        if time.monotonic() >= ping_at:
                            ping_at = time.monotonic() + ping_seconds
                            yield ": ping\n\n"
                continue
            if p is None:  # the hub is shutting down
                return
            if p["event_id"] <= last:
                continue
            if (why := await watch.problem()) is not None:
                yield end_event(why)
                return
            last = p["event_id"]
            ping_at = time.monotonic() + ping_seconds
            yield sse(p)
    finally:
        alerts.unsubscribe(q)
