"""Firmware bundles and over-the-air rollouts (docs/protocol.md, "Application bundle and
over-the-air update"; hub/firmware.py does the work).

``GET /api/v1/firmware/{version}/{path}`` needs no token: terminals download from it, the files hold
no secret and the per-terminal signature makes them tamper-evident. It serves only ``manifest.json``
and the names that manifest lists. Importing bundles, starting and cancelling rollouts is for role
admin; the office and district staff may read which versions are here and how rollouts went.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, model_validator
from sqlmodel import Session

from hub import firmware
from hub.api.auth import ADMIN_ONLY, READ_ALL, Principal, require
from hub.models import AuditLog

public = APIRouter(prefix="/api/v1/firmware", tags=["firmware"])
admin = APIRouter(prefix="/api/v1", tags=["firmware"])
_read = [Depends(require(*READ_ALL))]


def _engine(request: Request) -> firmware.RolloutEngine:
    eng: firmware.RolloutEngine | None = getattr(request.app.state, "rollouts", None)
    if eng is None:
        raise HTTPException(503, "firmware updates need the running hub service")
    return eng


Rollouts = Annotated[firmware.RolloutEngine, Depends(_engine)]


class Problem(BaseModel):
    """A refused request: what was wrong (a sentence, or FastAPI's list of invalid fields)."""

    detail: str | list[dict[str, Any]]


def _actor(who: Annotated[Principal, Depends(require(*ADMIN_ONLY))]) -> str:
    return who.actor


@public.get("/{version}/{path:path}", response_class=Response)
def download(version: str, path: str, request: Request) -> Response:
    """A file of an imported bundle, byte for byte (no token)."""
    eng: firmware.RolloutEngine | None = getattr(request.app.state, "rollouts", None)
    body = eng.store.serve(version, path) if eng is not None else None
    if body is None:
        raise HTTPException(404, "no such firmware file")
    kind = "application/json" if path == firmware.MANIFEST else "application/octet-stream"
    return Response(body, media_type=kind, headers={"Cache-Control": "no-cache"})


@admin.get("/firmware", dependencies=_read)
def versions(eng: Rollouts) -> list[dict[str, Any]]:
    """The versions imported on this hub."""
    out = []
    for v in eng.store.versions():
        b = eng.store.get(v)
        if b is not None:
            out.append({"version": v, "app_files": len(b.app), "files": len(b.entries)})
    return out


@admin.post(
    "/firmware",
    status_code=201,
    responses={
        200: {"description": "this version was already imported with the same content"},
        422: {"description": "not a valid bundle (the text says why)", "model": Problem},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def upload(
    request: Request,
    response: Response,
    eng: Rollouts,
    actor: Annotated[str, Depends(_actor)],
) -> dict[str, Any]:
    """Import a bundle sent as a tar.gz body (``manifest.json`` and the files it lists, at the top
    of the archive or in one folder). 201 imported; 200 the same version with the same content was
    already there; 409 the same version with other content; 422 an invalid bundle."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > firmware.MAX_UPLOAD:
            raise HTTPException(413, f"a bundle is at most {firmware.MAX_UPLOAD} bytes")
    out = await run_in_threadpool(_import, eng, bytes(body), actor)
    if not out["created"]:
        response.status_code = 200
    return out


def _import(eng: firmware.RolloutEngine, data: bytes, actor: str) -> dict[str, Any]:
    try:
        bundle, created = eng.store.import_tar(data)
    except firmware.BundleConflict as e:
        raise HTTPException(409, str(e)) from e
    except firmware.BundleError as e:
        raise HTTPException(422, str(e)) from e
    if created:
        with Session(eng.engine) as s:
            s.add(
                AuditLog(
                    actor=actor,
                    action="import",
                    entity="firmware",
                    entity_id=bundle.version,
                    detail=json.dumps({"app_files": len(bundle.app), "files": len(bundle.entries)}),
                )
            )
            s.commit()
    return {"version": bundle.version, "created": created, "app_files": len(bundle.app)}


class RolloutRequest(BaseModel):
    version: str = Field(max_length=32)
    terminal: str | None = Field(None, max_length=32)
    desk: str | None = Field(None, max_length=64)
    all: bool = False
    timeout_s: float | None = Field(None, ge=1, le=86400, description="per terminal")
    allow_downgrade: bool = Field(
        False,
        description="sign the update as a deliberate downgrade: without it a "
        "terminal refuses a version that is not newer than the one it runs",
    )

    @model_validator(mode="after")
    def _one_target(self) -> RolloutRequest:
        if sum((self.terminal is not None, self.desk is not None, self.all)) != 1:
            raise ValueError("give exactly one of terminal, desk, all")
        return self


@admin.post("/rollouts", status_code=202)
def start_rollout(
    req: RolloutRequest, eng: Rollouts, actor: Annotated[str, Depends(_actor)]
) -> dict[str, Any]:
    """Start updating terminals one at a time; 409 while another rollout runs."""
    try:
        rid = eng.start(
            version=req.version,
            terminal=req.terminal,
            desk=req.desk,
            all_=req.all,
            timeout_s=req.timeout_s,
            actor=actor,
            allow_downgrade=req.allow_downgrade,
        )
    except firmware.RolloutBusy as e:
        raise HTTPException(409, str(e)) from e
    except firmware.RolloutError as e:
        raise HTTPException(400, str(e)) from e
    out = eng.get(rid)
    assert out is not None
    return out


@admin.get("/rollouts", dependencies=_read)
def list_rollouts(eng: Rollouts, limit: int = Query(20, ge=1, le=200)) -> list[dict[str, Any]]:
    """Recent rollouts, newest first; ``state`` is running, cancelling, done, stopped, cancelled
    or interrupted, and ``cancel`` says who asked for a cancel and when."""
    return eng.recent(limit)


@admin.post(
    "/rollouts/{rollout_id}/cancel",
    status_code=202,
    responses={
        404: {"description": "no such rollout", "model": Problem},
        409: {
            "description": "nothing to cancel: it already ended (the text says)",
            "model": Problem,
        },
    },
)
def cancel_rollout(
    rollout_id: int, eng: Rollouts, actor: Annotated[str, Depends(_actor)]
) -> dict[str, Any]:
    """Cancel a running rollout. Terminals not yet started are never sent the update. The terminal
    being updated now is never interrupted mid-flash: it finishes (confirms the new version or
    rolls back) on its own, within the rollout's per-terminal timeout, and then the rollout ends
    ``cancelled``; until then its state reads ``cancelling`` and no other rollout can start. The
    audit log records who cancelled and when. 404 unknown id; 409 it already ended, or a cancel
    was already asked for."""
    try:
        return eng.cancel(rollout_id, actor=actor)
    except firmware.RolloutNotFound as e:
        raise HTTPException(404, str(e)) from e
    except firmware.RolloutNotRunning as e:
        raise HTTPException(409, str(e)) from e


@admin.get("/rollouts/{rollout_id}", dependencies=_read)
def get_rollout(rollout_id: int, eng: Rollouts) -> dict[str, Any]:
    """A rollout's state and every terminal's: pending, sent, staged, trial, updated, skipped,
    failed (with the reason), not_started, interrupted. A cancelled rollout's terminals that were
    never sent the update are not_started."""
    out = eng.get(rollout_id)
    if out is None:
        raise HTTPException(404, f"no rollout {rollout_id}")
    return out
