"""Paper ballots (seed 002): the minutes (biên bản) of opening a sealed ballot box and its tallies.

Staff enter what the minutes say (when the box was opened, who witnessed it, whether the lock and
seal were intact, how many ballots were found and how many were invalid, the desk or the whole
office, the period the box covers) and the count per level, and per field or official where the
ballot has one. The hub checks that the tallies add up to the valid ballots, stores the box and its
tallies in ``paperbox`` / ``papertally`` (channel "paper") and writes the audit log.

- **No edit in place.** A mistake is corrected by recording the box again with ``supersedes`` set
  to the record it replaces (and a note saying why); reports count only records that no later
  record supersedes (:func:`current`), and both stay in the database and the audit log.
- **Broken seal.** Recorded as found (the ballots are still counted: the minutes are the evidence),
  a note is required, a critical alert is raised, and the box carries ``seal_broken`` so reports
  can flag it.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from pydantic import BaseModel, Field, field_validator
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select

from hub import office as ofc
from hub.models import Desk, Official, PaperBox, PaperTally, utcnow

CHANNEL = "paper"
MAX_BALLOTS = 1_000_000


class TallyIn(BaseModel):
    level: int = Field(ge=1, le=5, description="1 is the most satisfied, as on the terminals")
    count: int = Field(ge=0, le=MAX_BALLOTS)
    field: str | None = Field(None, min_length=1, max_length=100, examples=["Hộ tịch"])
    official_id: str | None = Field(None, max_length=32, description="where the ballot names one")


class PaperBoxCreate(BaseModel):
    desk_id: str | None = Field(None, description="the box's desk; none: the whole office")
    opened_at: datetime = Field(description="when the box was opened (no zone: office time)")
    period_start: datetime | date = Field(
        description="first ballot day or time the box covers (a date: from 00:00 office time)"
    )
    period_end: datetime | date = Field(
        description="last day or time the box covers (a date: through 23:59:59 office time, or "
        "up to the opening if the box was opened that day)"
    )
    witnesses: list[str] = Field(
        min_length=2, max_length=20, description="names of those present at the opening"
    )
    seal_intact: bool = Field(description="lock and seal found intact before opening")
    ballots: int = Field(ge=0, le=MAX_BALLOTS, description="ballots found in the box")
    invalid_ballots: int = Field(0, ge=0, le=MAX_BALLOTS)
    scale: int = Field(ge=3, le=5, description="levels on the ballot")
    tallies: list[TallyIn] = Field(max_length=1000)
    note: str | None = Field(None, max_length=2000)
    supersedes: int | None = Field(None, ge=1, description="the box record this one corrects")

    @field_validator("period_start", "period_end", mode="before")
    @classmethod
    def _day(cls, v: object) -> object:
        # "2026-10-31" is a day (pydantic would read it as that day's midnight)
        if isinstance(v, str) and len(v) == 10:
            try:
                return date.fromisoformat(v)
            except ValueError:
                return v
        return v

    @field_validator("witnesses")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        names = [n.strip() for n in v]
        if any(not n or len(n) > 100 or "\n" in n for n in names):
            raise ValueError("each witness is one name of 1 to 100 characters")
        return names


class TallyOut(BaseModel):
    level: int
    count: int
    field: str | None
    official_id: str | None
    scale: int


class PaperBoxOut(BaseModel):
    id: int
    channel: str = CHANNEL
    office: str
    desk_id: str | None
    opened_at: datetime
    period_start: datetime
    period_end: datetime
    witnesses: list[str]
    seal_intact: bool
    seal_broken: bool = Field(description="reports flag the figures of such a box")
    ballots: int
    invalid_ballots: int
    valid_ballots: int
    scale: int | None
    note: str | None
    supersedes: int | None
    superseded_by: int | None = Field(description="set: a later record corrects this one")
    actor: str
    recorded_at: datetime
    tallies: list[TallyOut]


def _start(t: datetime | date) -> datetime:
    if not isinstance(t, datetime):
        t = datetime.combine(t, time(0), tzinfo=ofc.OFFICE_TZ)
    return ofc.as_utc(t)


def _end(t: datetime | date) -> datetime:
    if not isinstance(t, datetime):
        t = datetime.combine(t + timedelta(days=1), time(0), tzinfo=ofc.OFFICE_TZ)
        t -= timedelta(seconds=1)
    return ofc.as_utc(t)


def _aware(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


def current() -> ColumnElement[bool]:
    """SQL condition on PaperBox: no later record supersedes it (what reports count)."""
    newer = select(PaperBox.supersedes).where(col(PaperBox.supersedes).is_not(None))
    return col(PaperBox.id).not_in(newer.scalar_subquery())


def record_box(s: Session, *, office: str, data: PaperBoxCreate, actor: str) -> PaperBox:
    """Check the minutes and tallies and store them (the caller commits); OfficeError says what
    is wrong."""
    if data.desk_id is not None:
        desk = s.get(Desk, data.desk_id)
        if desk is None or desk.office != office:
            raise ofc.NotFound(f"desk {data.desk_id} does not exist: create it first")
    opened = ofc.as_utc(data.opened_at)
    start, end = _start(data.period_start), _end(data.period_end)
    if (
        not isinstance(data.period_end, datetime)
        and data.period_end == opened.astimezone(ofc.OFFICE_TZ).date()
    ):
        end = opened  # "through the day it was opened": up to the opening
    if start > end:
        raise ofc.OfficeError("period_start is after period_end: the period the box covers")
    if end > opened:
        raise ofc.OfficeError("the box cannot cover ballots after it was opened (period_end)")
    if opened > utcnow() + timedelta(minutes=5):
        raise ofc.OfficeError("opened_at is in the future")
    if data.invalid_ballots > data.ballots:
        raise ofc.OfficeError(
            f"invalid_ballots ({data.invalid_ballots}) is more than the ballots found "
            f"({data.ballots})"
        )
    if not data.seal_intact and not (data.note and data.note.strip()):
        raise ofc.OfficeError(
            "the seal was not intact: say in note what was found (the minutes must record it)"
        )
    seen: Counter[tuple[int, str | None, str | None]] = Counter()
    for t in data.tallies:
        if t.level > data.scale:
            raise ofc.OfficeError(f"level {t.level} is not on a {data.scale}-level ballot")
        seen[(t.level, t.field, t.official_id)] += 1
        if t.official_id is not None:
            off = s.get(Official, t.official_id)
            if off is None or off.office != office:
                raise ofc.NotFound(f"official {t.official_id} does not exist: create it first")
    twice = [k for k, n in seen.items() if n > 1]
    if twice:
        level, field, official = twice[0]
        where = ", ".join(x for x in (field, official) if x)
        raise ofc.OfficeError(
            f"level {level}{f' ({where})' if where else ''} is tallied twice: give one count each"
        )
    valid = data.ballots - data.invalid_ballots
    total = sum(t.count for t in data.tallies)
    if total != valid:
        raise ofc.OfficeError(
            f"the tallies add up to {total}, but the minutes record {data.ballots} ballots of "
            f"which {data.invalid_ballots} invalid, so {valid} valid: check the counts"
        )
    old: PaperBox | None = None
    if data.supersedes is not None:
        old = s.get(PaperBox, data.supersedes)
        if old is None or old.office != office:
            raise ofc.NotFound(f"paper box record {data.supersedes} does not exist")
        later = s.exec(select(PaperBox.id).where(PaperBox.supersedes == old.id)).first()
        if later is not None:
            raise ofc.Conflict(
                f"paper box record {old.id} was already corrected by record {later}: "
                f"correct that one instead"
            )
        if not (data.note and data.note.strip()):
            raise ofc.OfficeError("a correction needs a note saying what was wrong")
    box = PaperBox(
        office=office,
        desk_id=data.desk_id,
        opened_at=opened,
        period_start=start,
        period_end=end,
        witnesses="\n".join(data.witnesses),
        seal_intact=data.seal_intact,
        ballots=data.ballots,
        invalid_ballots=data.invalid_ballots,
        note=data.note,
        supersedes=data.supersedes,
        actor=actor,
    )
    s.add(box)
    s.flush()
    assert box.id is not None
    for t in data.tallies:
        s.add(
            PaperTally(
                box_id=box.id,
                office=office,
                desk_id=data.desk_id,
                official_id=t.official_id,
                field=t.field,
                scale=data.scale,
                level=t.level,
                count=t.count,
            )
        )
    ofc.audit(
        s,
        actor=actor,
        action="correct" if old is not None else "record",
        entity="paperbox",
        entity_id=box.id,
        desk=data.desk_id,
        opened_at=opened,
        period=[start, end],
        seal_intact=data.seal_intact,
        ballots=data.ballots,
        invalid_ballots=data.invalid_ballots,
        valid_ballots=valid,
        scale=data.scale,
        tallies=[t.model_dump(exclude_none=True) for t in data.tallies],
        supersedes=data.supersedes,
        note=data.note,
    )
    return box


def box_out(s: Session, box: PaperBox) -> PaperBoxOut:
    assert box.id is not None
    tallies = s.exec(
        select(PaperTally).where(PaperTally.box_id == box.id).order_by(col(PaperTally.id))
    ).all()
    later = s.exec(select(PaperBox.id).where(PaperBox.supersedes == box.id)).first()
    return PaperBoxOut(
        id=box.id,
        office=box.office,
        desk_id=box.desk_id,
        opened_at=_aware(box.opened_at),
        period_start=_aware(box.period_start),
        period_end=_aware(box.period_end),
        witnesses=box.witnesses.split("\n"),
        seal_intact=box.seal_intact,
        seal_broken=not box.seal_intact,
        ballots=box.ballots,
        invalid_ballots=box.invalid_ballots,
        valid_ballots=box.ballots - box.invalid_ballots,
        scale=tallies[0].scale if tallies else None,
        note=box.note,
        supersedes=box.supersedes,
        superseded_by=later,
        actor=box.actor,
        recorded_at=_aware(box.recorded_at),
        tallies=[
            TallyOut(
                level=t.level,
                count=t.count,
                field=t.field,
                official_id=t.official_id,
                scale=t.scale,
            )
            for t in tallies
        ],
    )


def list_boxes(
    s: Session,
    *,
    office: str,
    desk_id: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    include_superseded: bool = False,
    limit: int = 100,
    before_id: int | None = None,
) -> list[PaperBoxOut]:
    """Newest first; a box is in [start, end] when its period ends in it."""
    q = select(PaperBox).where(PaperBox.office == office)
    if not include_superseded:
        q = q.where(current())
    if desk_id is not None:
        q = q.where(PaperBox.desk_id == desk_id)
    if start is not None:
        q = q.where(col(PaperBox.period_end) >= start)
    if end is not None:
        q = q.where(col(PaperBox.period_end) <= end)
    if before_id is not None:
        q = q.where(col(PaperBox.id) < before_id)
    rows = s.exec(q.order_by(col(PaperBox.id).desc()).limit(limit)).all()
    return [box_out(s, b) for b in rows]


def seal_alert(alerts: Any, box: PaperBox) -> None:
    """A critical alert for a box whose seal was not intact (rule "forgery": tampering; detail
    kind "paper_seal"), through the hub's alert engine so that it is stored and delivered."""
    from hub.alerts import _Candidate, _where

    where_vi, where_en = _where(box.desk_id, None) if box.desk_id else ("toàn đơn vị", "the office")
    opened = _aware(box.opened_at).astimezone(ofc.OFFICE_TZ).strftime("%d/%m/%Y %H:%M")
    alerts._raise(
        [
            _Candidate(
                rule="forgery",
                key=f"{box.office}:forgery:paperbox:{box.id}",
                severity="critical",
                title_vi=f"Hòm phiếu {where_vi} mở lúc {opened}: niêm phong không còn nguyên vẹn",
                title_en=f"Ballot box of {where_en} opened {opened}: the seal was not intact",
                desk=box.desk_id,
                detail={
                    "kind": "paper_seal",
                    "box_id": box.id,
                    "opened_at": _aware(box.opened_at).isoformat(),
                    "witnesses": box.witnesses.split("\n"),
                    "ballots": box.ballots,
                    "note": box.note,
                },
            )
        ]
    )


def raise_seal_alert(engine: Engine, office: str, box: PaperBox, alerts: Any = None) -> None:
    """The running hub's alert engine when there is one (API), else a short-lived one writing to
    the same database (CLI); the hub's alert stream shows it from the table."""
    if alerts is not None:
        seal_alert(alerts, box)
        return
    from hub.alerts import AlertEngine

    engine_ = AlertEngine(engine, office)
    try:
        seal_alert(engine_, box)
    finally:
        engine_.close()
