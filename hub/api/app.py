"""The hub's HTTP API (``/api/v1``). Read-only views of what ingest stored."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from hub import registry
from hub.api.auth import READ_ALL, api_routes, require, roles_of
from hub.models import Quarantine, Rating, Terminal
from hub.office import OfficeError


def _session(request: Request) -> Iterator[Session]:
    with Session(request.app.state.engine) as s:
        yield s


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
    auth = [Depends(require(*READ_ALL))]  # every route says who may call it (hub/api/auth.py)
    from hub.api.alerts import alerts_router  # these import this module's dependencies
    from hub.api.audit import router as audit_router
    from hub.api.exclusions import router as exclusions_router
    from hub.api.firmware import admin as firmware_admin
    from hub.api.firmware import public as firmware_public
    from hub.api.office import router as office_router
    from hub.api.ratings import router as ratings_router
    from hub.livefeed import LiveFeed

    app.include_router(office_router)
    app.include_router(firmware_public)  # no token: terminals download updates from it
    app.include_router(firmware_admin)
    app.include_router(alerts_router())
    app.include_router(audit_router)
    app.include_router(ratings_router)  # ratings, their CSV export and live stream
    app.include_router(exclusions_router)  # exclusions and corrections
    app.state.livefeed = LiveFeed()  # the hub service publishes stored ratings on it
    from hub.web import web_router  # the staff dashboard: pages without a token, data with one

    app.include_router(web_router())
    from hub.api.paper import router as paper_router
    from hub.api.qr import admin as qr_admin
    from hub.api.qr import public as qr_public

    app.include_router(qr_public)  # no token: the citizen's page of the QR channel
    app.include_router(qr_admin)
    app.include_router(paper_router)  # paper ballot boxes: minutes and tallies
    from hub.api.reports import router as reports_router

    app.include_router(reports_router)  # satisfaction, heat map, monthly XLSX/CSV
    from hub.api.sync import router as sync_router

    app.include_router(sync_router)  # how the sync to the district goes
    app.state.sync = None  # the hub service sets its SyncSender here when sync is configured

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

    @app.get("/api/v1/terminals", dependencies=auth)
    def terminals(s: SessionDep) -> list[dict[str, Any]]:
        """Every terminal with its health from the last heartbeat (online = heard in 3 minutes)."""
        rows = s.exec(select(Terminal).order_by(col(Terminal.id))).all()
        return [registry.health(t) for t in rows]

    _document_roles(app)
    return app


def _document_roles(app: FastAPI) -> None:
    """Each operation of the OpenAPI document lists the roles that may call it (``x-roles``), read
    from its ``require(...)`` (hub/api/auth.py) whenever the document is built."""
    build = app.openapi
    done: set[int] = set()

    def openapi() -> dict[str, Any]:
        doc = build()
        if id(doc) not in done:
            for route in api_routes(app):
                roles = roles_of(route)
                path = getattr(route, "path_format", route.path)  # {path:path} -> {path}
                ops = doc.get("paths", {}).get(path, {})
                for method in route.methods or ():
                    if roles is not None and method.lower() in ops:
                        ops[method.lower()]["x-roles"] = sorted(roles)
            done.add(id(doc))
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
