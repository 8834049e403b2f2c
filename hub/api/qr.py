"""HTTP side of the QR channel (hub/channels/qr.py).

- ``/q/<desk token>``: the citizen's page (GET) and its submission (POST, JSON from the page's
  script or a plain form post without JavaScript). No token, not in the OpenAPI document: it is a
  page for the public, not part of the API.
- ``/api/v1/qr/desks`` and ``/api/v1/qr/desks/{desk}/sticker``: each desk's QR URL and its sticker
  (PNG or PDF), for admins and supervisors (the URL is what lets anyone rate the desk).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ValidationError
from sqlmodel import col, select

from hub.api.app import SessionDep
from hub.api.auth import WRITE_OFFICE, require
from hub.channels import qr, sticker
from hub.models import Desk
from hub.web_qr import CSP, STATIC, STATIC_TYPES, TEXT, message, page

MAX_BODY = 4096
_PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",  # the official on duty changes during the day
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the desk token is in the URL
}


def channel(request: Request) -> qr.QrChannel:
    """The hub's QR channel (the service puts it in ``app.state.qr``). An app made without the
    service (tests, tools) gets one with the default settings, its keys beside a SQLite file."""
    ch: qr.QrChannel | None = getattr(request.app.state, "qr", None)
    if ch is None:
        engine = request.app.state.engine
        db = engine.url.database if engine.url.get_backend_name() == "sqlite" else None
        data_dir = Path(db).parent if db and db != ":memory:" else None
        ch = qr.QrChannel(
            engine,
            request.app.state.office,
            qr.QrConfig(),
            qr.QrKeys.load(data_dir),
        )
        request.app.state.qr = ch
    return ch


def _lang(lang: str | None, request: Request) -> str:
    if lang in ("vi", "en"):
        return lang
    return "vi"  # Vietnamese by default, whatever the phone's language: it is a Vietnamese office


def _client(request: Request, ch: qr.QrChannel) -> str:
    if ch.config.trust_forwarded:
        fwd = request.headers.get("x-forwarded-for")
        if fwd:
            return fwd.split(",")[0].strip()[:64]
    return request.client.host if request.client else "unknown"


def _html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers=_PAGE_HEADERS)


def _not_found(lang: str) -> HTMLResponse:
    t = TEXT[lang]
    return _html(
        message(
            lang=lang,
            title=t["not_found_title"],
            text=qr.QrError("not_found", 404).text(lang),
            ok=False,
            back=False,
        ),
        404,
    )


# -- the citizen's page (no token) -----------------------------------------------------------------
public = APIRouter(include_in_schema=False)


@public.get("/q/static/{name}")
def qr_static(name: str) -> FileResponse:
    path = STATIC / name
    kind = STATIC_TYPES.get(path.suffix)
    if kind is None or "/" in name or not path.is_file():
        raise HTTPException(404, "no such file")
    return FileResponse(path, media_type=kind, headers={"Cache-Control": "max-age=300"})


@public.get("/q/{token}")
def qr_page(token: str, request: Request, lang: str | None = None) -> HTMLResponse:
    ln = _lang(lang, request)
    ch = channel(request)
    try:
        view = ch.view(token)
    except qr.QrError:
        return _not_found(ln)
    return _html(
        page(
            lang=ln,
            office=ch.office,
            desk_name=view.name,
            official=view.official,
            scale=view.scale,
        )
    )


_FIELDS = ("level", "reason", "phone")


def _parse(body: bytes, form: bool) -> dict[str, Any]:
    if form:
        pairs = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        data: dict[str, Any] = {k: v[0] for k, v in pairs.items() if k in (*_FIELDS, "lang")}
        data["reason"] = data.get("reason") or 0
        data["phone"] = data.get("phone") or None
        return data
    try:
        data = json.loads(body or b"{}")
    except ValueError as e:
        raise qr.QrError("level", 400) from e
    if not isinstance(data, dict):
        raise qr.QrError("level", 400)
    return data


@public.post("/q/{token}")
async def qr_submit(token: str, request: Request, lang: str | None = None) -> Response:
    form = "application/x-www-form-urlencoded" in request.headers.get("content-type", "")
    body = await request.body()
    ln = _lang(lang, request)
    ch = channel(request)

    def answer(err: qr.QrError | None) -> Response:
        t = TEXT[ln]
        if not form:
            if err is None:
                return JSONResponse({"ok": True, "detail": t["thanks"]}, status_code=201)
            return JSONResponse({"ok": False, "code": err.code, "detail": err.text(ln)}, err.status)
        if err is None:
            return _html(message(lang=ln, title=t["thanks"], text=t["thanks_more"], ok=True), 201)
        if err.code == "not_found":
            return _not_found(ln)
        title = t["refused_title"]
        return _html(message(lang=ln, title=title, text=err.text(ln), ok=False), err.status)

    if len(body) > MAX_BODY:
        return answer(qr.QrError("level", 413))
    try:
        data = _parse(body, form)
        if isinstance(data.get("lang"), str) and data["lang"] in ("vi", "en") and lang is None:
            ln = data["lang"]
        try:
            sub = qr.Submission.model_validate(data)
        except ValidationError as e:
            bad = {str(err["loc"][0]) for err in e.errors() if err["loc"]}
            code = next((f for f in _FIELDS if f in bad), "level")
            raise qr.QrError(code, 422) from e
        row = await run_in_threadpool(ch.submit, token, sub, _client(request, ch))
    except qr.QrError as e:
        return answer(e)
    # as after ingest's commit: alert rules (a negative rating) and the live ratings streams
    alerts = getattr(request.app.state, "alerts", None)
    if alerts is not None:
        await run_in_threadpool(alerts.on_ratings, [row])
    feed = getattr(request.app.state, "livefeed", None)
    if feed is not None:
        feed.publish([row.id])
    return answer(None)


# -- for the office: URLs and stickers ---------------------------------------------------------------
admin = APIRouter(prefix="/api/v1/qr", tags=["qr"])
Writer = Depends(require(*WRITE_OFFICE))


class QrDesk(BaseModel):
    desk_id: str
    name: str
    url: str
    warning: str | None = None


@admin.get("/desks", dependencies=[Writer])
def qr_desks(s: SessionDep, request: Request) -> list[QrDesk]:
    """Every desk's QR URL (what its sticker encodes), with a warning when no phone could reach it."""
    ch = channel(request)
    desks = s.exec(select(Desk).where(Desk.office == ch.office).order_by(col(Desk.id))).all()
    return [
        QrDesk(
            desk_id=d.id,
            name=d.name,
            url=ch.url(d.id),
            warning=qr.unreachable_warning(ch.config.base_url),
        )
        for d in desks
    ]


@admin.get(
    "/desks/{desk_id}/sticker",
    dependencies=[Writer],
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "application/pdf": {}}}},
)
def qr_sticker(
    desk_id: str,
    s: SessionDep,
    request: Request,
    format: Annotated[Literal["png", "pdf"], Query(description="png or pdf")] = "png",
    lang: Annotated[Literal["vi", "en"], Query()] = "vi",
) -> Response:
    """The desk's sticker (A6, 300 dpi): office, desk name, QR code and short instructions."""
    ch = channel(request)
    desk = s.get(Desk, desk_id)
    if desk is None or desk.office != ch.office:
        raise HTTPException(404, f"desk {desk_id} does not exist: create it first")
    try:
        img = sticker.render(
            url=ch.url(desk.id),
            desk_name=desk.name,
            office=ch.office,
            lang=lang,
            wifi_name=ch.config.wifi_name,
        )
    except sticker.StickerError as e:
        raise HTTPException(409, str(e)) from e
    data = sticker.encode(img, format, title=f"SIPAS QR {desk.id}")
    kind = "image/png" if format == "png" else "application/pdf"
    name = f"qr-{desk.id}.{format}"
    return Response(
        data, media_type=kind, headers={"Content-Disposition": f'inline; filename="{name}"'}
    )
