"""The staff dashboard: static pages (``hub/web/static``) served by the hub itself, so it works on an
office LAN with no internet. The files need no token (they hold no data); every figure the pages show
comes from the authenticated API with the token the user pasted at login.

``GET /`` is the single page, ``GET /static/<file>`` its scripts, styles and dictionaries,
``GET /shared/<file>`` the scripts it shares with the district's dashboard (``hub/web/shared``: API
calls with the token, errors, the language lookup, the header; the district server serves the same
folder at the same path), and
``GET /api/v1/dashboard/context`` the office and its time zone. Who the token belongs to (and so what
the page shows) comes from ``GET /api/v1/me`` (hub/api/audit.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse

from hub.api.auth import ANY_ROLE, require

STATIC = Path(__file__).parent / "static"
SHARED = (
    Path(__file__).parent / "shared"
)  # also served by the district (hub/district/api_reports.py)
OFFICE_TZ = "Asia/Ho_Chi_Minh"

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
# The pages change with the hub's version, not while it runs; a short cache keeps a phone on a
# weak Wi-Fi fast without serving stale scripts after an upgrade for long.
_CACHE = {"Cache-Control": "max-age=300"}


def _file(name: str, folder: Path = STATIC) -> FileResponse:
    path = (folder / name).resolve()
    # only regular files inside the folder ("../" and absolute names end here as 404)
    if not path.is_relative_to(folder.resolve()) or not path.is_file():
        raise HTTPException(404, f"no such dashboard file: {name}")
    kind = _TYPES.get(path.suffix)
    if kind is None:
        raise HTTPException(404, f"no such dashboard file: {name}")
    return FileResponse(path, media_type=kind, headers=_CACHE)


def web_router() -> APIRouter:
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return _file("index.html")

    @router.get("/dashboard", include_in_schema=False)
    def dashboard() -> RedirectResponse:
        return RedirectResponse("/", status_code=307)

    @router.get("/static/{name:path}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        return _file(name)

    @router.get("/shared/{name:path}", include_in_schema=False)
    def shared(name: str) -> FileResponse:
        return _file(name, SHARED)

    @router.get(
        "/api/v1/dashboard/context", tags=["dashboard"], dependencies=[Depends(require(*ANY_ROLE))]
    )
    def context(request: Request) -> dict[str, Any]:
        """What the dashboard needs besides the caller (``/api/v1/me``): the office it shows and
        the office's time zone for dates."""
        return {"office": str(request.app.state.office), "timezone": OFFICE_TZ}

    return router
