"""The hub's HTTP API (``/api/v1``). Read-only views of what ingest stored."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import not_
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from hub import registry
from hub.models import Quarantine, Rating, RatingPublic, Terminal
from hub.office import OfficeError, as_utc
from hub.office import valid as office_valid

_bearer = HTTPBearer(auto_error=False)


def _session(request: Request) -> Iterator[Session]:
    with Session(request.app.state.engine) as s:
        yield s


def _authorised(
    request: Request, cred: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    token: str = request.app.state.token
    if cred is None or not hmac.compare_digest(cred.credentials.encode(), token.encode()):
        raise HTTPException(
            401,
            "missing or wrong API token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )


SessionDep = Annotated[Session, Depends(_session)]


def create_app(
    engine: Engine,
    *,
    token: str,
    office: str = "office-1",
    stats: Callable[[], dict[str, Any]] | None = None,
) -> FastAPI:
    if not token:
        raise ValueError("the API needs a token (SIPAS_HUB_API_TOKEN)")
    app = FastAPI(
        title="SIPAS hub",
        version="0.1.0",
        docs_url="/api/v1/docs",
        openapi_url="/api/v1/openapi.json",
    )

    @app.exception_handler(OverflowError)
    async def _out_of_range(_request: Request, exc: OverflowError) -> JSONResponse:
        # A number or date the database cannot hold (an id of 2**70, the year 1): the caller's error.
        return JSONResponse({"detail": f"a number or date is out of range: {exc}"}, status_code=400)

    @app.exception_handler(OfficeError)
    async def _office_error(_request: Request, exc: OfficeError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    app.state.engine = engine
    app.state.token = token
    app.state.office = office
    auth = [Depends(_authorised)]
    from hub.api.alerts import alerts_router  # these import this module's dependencies
    from hub.api.firmware import admin as firmware_admin
    from hub.api.firmware import public as firmware_public
    from hub.api.office import router as office_router

    app.include_router(office_router)
    app.include_router(firmware_public)  # no token: terminals download updates from it
    app.include_router(firmware_admin)
    app.include_router(alerts_router())

    @app.get("/api/v1/health", dependencies=auth)
    def health(s: SessionDep) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ratings": s.exec(select(func.count()).select_from(Rating)).one(),
            "quarantined": s.exec(select(func.count()).select_from(Quarantine)).one(),
            "terminals": s.exec(select(func.count()).select_from(Terminal)).one(),
        }
        if stats:
            out.update(stats())
        return out

    @app.get("/api/v1/ratings", dependencies=auth, response_model=list[RatingPublic])
    def ratings(
        s: SessionDep,
        terminal: str | None = None,
        desk: str | None = None,
        official: str | None = None,
        link_status: str | None = None,
        valid: bool | None = Query(
            None, description="true: only ratings that count; false: only excluded"
        ),
        since: datetime | None = Query(
            None, description="press time from (ISO 8601; without a zone: office time)"
        ),
        after_id: int = Query(0, ge=0, description="cursor: the last id of the previous page"),
        limit: int = Query(100, ge=1, le=1000),
    ) -> list[RatingPublic]:
        q = select(Rating).where(Rating.id > after_id)  # type: ignore[operator]
        if terminal:
            q = q.where(Rating.terminal_id == terminal)
        if desk:
            q = q.where(Rating.desk == desk)
        if official:
            q = q.where(Rating.official_id == official)
        if link_status:
            q = q.where(Rating.link_status == link_status)
        if valid is not None:
            q = q.where(office_valid() if valid else not_(office_valid()))
        if since:
            q = q.where(Rating.press_time >= as_utc(since))
        rows = s.exec(q.order_by(Rating.id).limit(limit)).all()  # type: ignore[arg-type]
        return [
            RatingPublic(
                **r.model_dump(exclude={"raw"}),
                hub_tag=r.raw[16:32].hex(),
                district_tag=r.raw[32:48].hex(),
            )
            for r in rows
        ]

    @app.get("/api/v1/terminals", dependencies=auth)
    def terminals(s: SessionDep) -> list[dict[str, Any]]:
        """Every terminal with its health from the last heartbeat (online = heard in 3 minutes)."""
        rows = s.exec(select(Terminal).order_by(col(Terminal.id))).all()
        return [registry.health(t) for t in rows]

    return app
