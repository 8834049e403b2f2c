"""Paper ballot boxes (hub/channels/paper.py): record the minutes and tallies of an opened box
(admins and supervisors), list them (everyone who reads the office's figures)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from sqlmodel import Session

from hub.api.app import SessionDep
from hub.api.auth import READ_ALL, WRITE_OFFICE, Principal, require
from hub.channels import paper
from hub.models import PaperBox
from hub.office import as_utc

router = APIRouter(prefix="/api/v1/paper", tags=["paper"])


@router.post("/boxes", status_code=201)
async def record_box(
    data: paper.PaperBoxCreate,
    request: Request,
    who: Annotated[Principal, Depends(require(*WRITE_OFFICE))],
) -> paper.PaperBoxOut:
    """Record the minutes of opening a sealed ballot box and its tallies per level (and per field
    or official where the ballot has one). The tallies must add up to the valid ballots. A
    correction is a new record with ``supersedes``: records are never edited. A seal that was not
    intact raises a critical alert."""
    engine = request.app.state.engine
    office: str = request.app.state.office

    def work() -> tuple[paper.PaperBoxOut, PaperBox]:
        with Session(engine) as s:
            box = paper.record_box(s, office=office, data=data, actor=who.actor)
            s.commit()
            s.refresh(box)
            return paper.box_out(s, box), box

    out, box = await run_in_threadpool(work)  # OfficeError -> 4xx (the app's handler)
    if not box.seal_intact:
        alerts = getattr(request.app.state, "alerts", None)
        await run_in_threadpool(paper.raise_seal_alert, engine, office, box, alerts)
    return out


@router.get("/boxes", dependencies=[Depends(require(*READ_ALL))])
def list_boxes(
    s: SessionDep,
    request: Request,
    desk: str | None = None,
    since: Annotated[
        datetime | None, Query(description="boxes whose period ends from (no zone: office time)")
    ] = None,
    until: Annotated[datetime | None, Query(description="... and up to this time")] = None,
    include_superseded: Annotated[
        bool, Query(description="also records that a later correction replaced")
    ] = False,
    before_id: Annotated[int | None, Query(ge=1, le=2**62, description="cursor: older ids")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[paper.PaperBoxOut]:
    """Opened boxes, newest first, with their tallies (channel "paper": counts, not ratings)."""
    return paper.list_boxes(
        s,
        office=request.app.state.office,
        desk_id=desk,
        start=as_utc(since) if since else None,
        end=as_utc(until) if until else None,
        include_superseded=include_superseded,
        limit=limit,
        before_id=before_id,
    )


@router.get("/boxes/{box_id}", dependencies=[Depends(require(*READ_ALL))])
def get_box(
    box_id: Annotated[int, Path(ge=1, le=2**62)], s: SessionDep, request: Request
) -> paper.PaperBoxOut:
    box = s.get(PaperBox, box_id)
    if box is None or box.office != request.app.state.office:
        raise HTTPException(404, f"paper box record {box_id} does not exist")
    return paper.box_out(s, box)
