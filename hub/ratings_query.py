"""Querying stored ratings with their annotations, and corrections (re-attributing a rating).

- :func:`effective_official` is the official a rating belongs to after corrections, as SQL: the
  latest correction of the rating that was not reversed wins; with none, the official tagged at
  ingest. Reports use it too, so that "by official" means the same everywhere.
- :class:`RatingFilter` turns the API's filters into SQL conditions; :func:`page` reads one page in
  id order (keyset: stable while ratings keep arriving); :func:`annotate` adds each rating's
  exclusions, winning correction and linked case.
- :func:`correct` / :func:`reverse_correction` record corrections (attributed, audit-logged,
  never changing the rating row), like :func:`hub.office.exclude` / :func:`hub.office.reinstate`.
"""

from __future__ import annotations

import base64
import binascii
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import and_, case, exists, false, literal_column, not_, or_
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, SQLModel, col, select

from hub import office as ofc
from hub.models import Case, Correction, Desk, Exclusion, Official, Rating, RatingPublic
from hub.periods import Period

Order = Literal["asc", "desc"]
LONG_PERIOD = timedelta(days=31)
# "+column" is SQLite's way of saying "not through an index on it"; the type keeps the UTC binding.
_UNINDEXED_PRESS_TIME = literal_column(
    "+rating.press_time", type_=SQLModel.metadata.tables["rating"].c.press_time.type
)
CHANNELS = ("terminal", "qr")  # channels with individual ratings; paper ballots are tallies
LINK_STATUSES = (ofc.LINKED, ofc.NO_CASE, ofc.ALREADY_RATED, ofc.LATE, ofc.NOT_LINKED)


# -- corrections as SQL ----------------------------------------------------------------------------
def _reversed_ids() -> Any:
    back = aliased(Correction)
    # NOT IN over a NULL would be unknown for every row: only the reversal rows' targets
    return select(back.reverses).where(col(back.reverses).is_not(None))


def _standing(c: Any) -> ColumnElement[bool]:
    """Correction ``c`` counts: it is not itself a reversal and nobody reversed it."""
    return and_(col(c.reverses).is_(None), col(c.id).not_in(_reversed_ids()))


def effective_official() -> ColumnElement[str | None]:
    """SQL value on Rating: the official the rating belongs to after corrections."""
    c = aliased(Correction)
    latest = (
        select(c.official_id)
        .where(col(c.rating_id) == col(Rating.id), _standing(c))
        .order_by(col(c.id).desc())
        .limit(1)
        .scalar_subquery()
    )
    corrected = exists().where(col(c.rating_id) == col(Rating.id), _standing(c))
    return case((corrected, latest), else_=col(Rating.official_id))


def official_is(official_id: str) -> ColumnElement[bool]:
    """SQL condition on Rating: it belongs to this official after corrections. Written so that the
    common case (no correction) uses the index on rating.official_id."""
    c = aliased(Correction)
    corrected = select(c.rating_id).where(_standing(c))
    won = aliased(Correction)
    later = aliased(Correction)
    winners = select(won.rating_id).where(
        _standing(won),
        won.official_id == official_id,
        ~exists().where(
            col(later.rating_id) == col(won.rating_id),
            col(later.id) > col(won.id),
            _standing(later),
        ),
    )
    return or_(
        and_(col(Rating.official_id) == official_id, col(Rating.id).not_in(corrected)),
        col(Rating.id).in_(winners),
    )


# -- filters ---------------------------------------------------------------------------------------
@dataclass
class RatingFilter:
    period: Period | None = None
    since: datetime | None = None  # the older API's "press time from"
    desk: str | None = None
    official: str | None = None  # after corrections
    field: str | None = None  # through the linked case
    level: int | None = None
    channels: tuple[str, ...] | None = None
    link_status: str | None = None
    valid: bool | None = None
    terminal: str | None = None
    test: bool | None = None

    def long_period(self) -> bool:
        """More than a month, or open-ended: reading in id order beats sorting the period."""
        p = self.period
        if p is None or (p.start is None and p.end is None):
            return False
        return p.start is None or p.end is None or p.end - p.start > LONG_PERIOD

    def where(self, *, time_index: bool = True) -> list[ColumnElement[bool]]:
        """The conditions. ``time_index=False`` keeps SQLite off the press-time index, so that a
        page in id order over a long period reads ids in order instead of sorting the period."""
        out: list[ColumnElement[bool]] = []
        p = self.period
        pressed: Any = col(Rating.press_time) if time_index else _UNINDEXED_PRESS_TIME
        if p is not None and p.start is not None:
            out.append(pressed >= p.start)
        if p is not None and p.end is not None:
            out.append(pressed < p.end)
        if self.since is not None:
            out.append(col(Rating.press_time) >= ofc.as_utc(self.since))
        if self.desk:
            out.append(col(Rating.desk) == self.desk)
        if self.official:
            out.append(official_is(self.official))
        if self.field:  # per rating, a lookup by primary key: pages stop early
            out.append(
                exists().where(col(Case.id) == col(Rating.case_id), col(Case.field) == self.field)
            )
        if self.level is not None:
            out.append(col(Rating.level) == self.level)
        if self.channels is not None:
            out.append(col(Rating.channel).in_(self.channels) if self.channels else false())
        if self.link_status:
            out.append(col(Rating.link_status) == self.link_status)
        if self.valid is not None:
            out.append(ofc.valid() if self.valid else not_(ofc.valid()))
        if self.terminal:
            out.append(col(Rating.terminal_id) == self.terminal)
        if self.test is not None:
            out.append(col(Rating.test) == self.test)
        return out


def parse_channels(text: str | None) -> tuple[str, ...] | None:
    """``terminal,qr`` -> the channels to list. Paper ballots are counted as tallies per box (no
    individual ratings): asking only for them is an error that says where they are."""
    if not text:
        return None
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [n for n in names if n not in (*CHANNELS, "paper")]
    if unknown:
        raise ofc.OfficeError(
            f"unknown channel {unknown[0]!r}: use terminal, qr (paper ballots are tallies)"
        )
    wanted = tuple(n for n in names if n != "paper")
    if not wanted:
        raise ofc.OfficeError(
            "paper ballots are counted as tallies per opened box, not as individual ratings: "
            "see the reports (channel=paper) or the paper ballot boxes"
        )
    return wanted


# -- cursors ---------------------------------------------------------------------------------------
def encode_cursor(last_id: int, order: Order) -> str:
    return base64.urlsafe_b64encode(f"r1:{order}:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str, order: Order) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        tag, was, last = text.split(":")
        last_id = int(last)
        if tag != "r1" or was not in ("asc", "desc") or not 0 <= last_id < 2**63:
            raise ValueError(text)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ofc.OfficeError(
            "cursor is not one this API gave out: start again without it"
        ) from None
    if was != order:
        raise ofc.OfficeError(f"this cursor pages with order={was}: keep that order or drop it")
    return last_id


def page(
    s: Session, f: RatingFilter, *, after: int | None, order: Order, limit: int
) -> tuple[list[Rating], bool]:
    """Up to ``limit`` ratings after the id ``after`` (in ``order``), and whether more follow.
    Ids only grow (one writer, no deletes), so a rating committed while a client pages through
    lands either in a page still to come (asc) or before the first (desc): never a duplicate or a
    gap in what the client walks."""
    q = select(Rating).where(*f.where(time_index=not f.long_period()))
    if after is not None:
        q = q.where(col(Rating.id) > after if order == "asc" else col(Rating.id) < after)
    q = q.order_by(col(Rating.id).asc() if order == "asc" else col(Rating.id).desc())
    rows = list(s.exec(q.limit(limit + 1)).all())
    return rows[:limit], len(rows) > limit


def walk(
    engine: Any, f: RatingFilter, *, after: int | None, order: Order, chunk: int = 1000
) -> Iterator[tuple[Session, list[int]]]:
    """The ids of every matching rating, read once (an export is one consistent snapshot; one
    sort, not one per chunk), then handed out a chunk at a time with a short session each."""
    with Session(engine) as s:
        q = select(Rating.id).where(*f.where())
        if after is not None:
            q = q.where(col(Rating.id) > after if order == "asc" else col(Rating.id) < after)
        ids = array("q", (int(i or 0) for i in s.exec(q.order_by(col(Rating.id).asc())).all()))
    if order == "desc":
        ids.reverse()
    for i in range(0, len(ids), chunk):
        with Session(engine) as s:
            yield s, list(ids[i : i + chunk])


# -- what the API returns --------------------------------------------------------------------------
class ReinstatedOut(BaseModel):
    id: int
    actor: str
    note: str | None
    created_at: datetime


class ExclusionOut(BaseModel):
    id: int
    rating_id: int
    reason: str
    label: str = Field(description="the reason in words (Vietnamese / English)")
    note: str | None
    actor: str = Field(description="'hub' for the automatic ones")
    created_at: datetime
    reinstated: ReinstatedOut | None = Field(None, description="taken back: by whom, when, why")


class CorrectionOut(BaseModel):
    id: int
    rating_id: int
    official_id: str | None
    reason: str
    actor: str
    created_at: datetime
    reversed: ReinstatedOut | None = None


class RatingOut(RatingPublic):
    effective_official_id: str | None = Field(
        description="the official the rating belongs to after corrections (official_id: tagged "
        "at ingest)"
    )
    valid: bool = Field(description="counts in the figures: no exclusion that was not taken back")
    exclusions: list[ExclusionOut]
    correction: CorrectionOut | None = Field(description="the correction in force, if any")
    case_code: str | None = None
    field: str | None = None


def reason_label(reason: str) -> str:
    return ofc.AUTO_REASONS.get(reason) or ofc.MANUAL_REASONS.get(reason) or reason


def exclusions_out(rows: Sequence[Exclusion]) -> list[ExclusionOut]:
    """Exclusions with their reinstatement folded in (``rows`` may hold both kinds)."""
    backs = {x.reverses: x for x in rows if x.reverses is not None}
    out = []
    for x in rows:
        if x.reverses is not None or x.id is None:
            continue
        back = backs.get(x.id)
        out.append(
            ExclusionOut(
                id=x.id,
                rating_id=x.rating_id,
                reason=x.reason,
                label=reason_label(x.reason),
                note=x.note,
                actor=x.actor,
                created_at=x.created_at,
                reinstated=None
                if back is None or back.id is None
                else ReinstatedOut(
                    id=back.id, actor=back.actor, note=back.note, created_at=back.created_at
                ),
            )
        )
    return out


def corrections_out(rows: Sequence[Correction]) -> list[CorrectionOut]:
    backs = {x.reverses: x for x in rows if x.reverses is not None}
    out = []
    for x in rows:
        if x.reverses is not None or x.id is None:
            continue
        back = backs.get(x.id)
        out.append(
            CorrectionOut(
                id=x.id,
                rating_id=x.rating_id,
                official_id=x.official_id,
                reason=x.reason,
                actor=x.actor,
                created_at=x.created_at,
                reversed=None
                if back is None or back.id is None
                else ReinstatedOut(
                    id=back.id, actor=back.actor, note=back.reason, created_at=back.created_at
                ),
            )
        )
    return out


@dataclass
class Names:
    desks: dict[str, str]
    officials: dict[str, str]


def names(s: Session) -> Names:
    """Desk and official names (a hub has tens of them), for the CSV export."""
    return Names(
        desks={d.id: d.name for d in s.exec(select(Desk)).all()},
        officials={o.id: o.name for o in s.exec(select(Official)).all()},
    )


@dataclass
class Notes:
    """What annotates a set of ratings: exclusions, corrections and linked cases (code, field)."""

    exclusions: dict[int, list[ExclusionOut]]
    corrections: dict[int, CorrectionOut]  # the one in force
    cases: dict[int, tuple[str, str | None]]

    def official(self, rating_id: int, tagged: str | None) -> str | None:
        won = self.corrections.get(rating_id)
        return won.official_id if won else tagged

    def valid(self, rating_id: int) -> bool:
        return all(x.reinstated is not None for x in self.exclusions.get(rating_id, []))


def notes(s: Session, ids: Sequence[int], case_ids: set[int]) -> Notes:
    """Three queries for a whole page: exclusions and corrections are few, cases one per rating."""
    excl: dict[int, list[Exclusion]] = {}
    for x in s.exec(
        select(Exclusion).where(col(Exclusion.rating_id).in_(ids)).order_by(col(Exclusion.id))
    ).all():
        excl.setdefault(x.rating_id, []).append(x)
    corr: dict[int, list[Correction]] = {}
    for c in s.exec(
        select(Correction).where(col(Correction.rating_id).in_(ids)).order_by(col(Correction.id))
    ).all():
        corr.setdefault(c.rating_id, []).append(c)
    won = {}
    for rid, cs in corr.items():
        standing = [c for c in corrections_out(cs) if c.reversed is None]
        if standing:
            won[rid] = standing[-1]
    cases = {}
    if case_ids:
        q = select(Case.id, Case.code, Case.field).where(col(Case.id).in_(case_ids))
        cases = {int(cid or 0): (code, fld) for cid, code, fld in s.exec(q).all()}
    return Notes(
        exclusions={rid: exclusions_out(xs) for rid, xs in excl.items()},
        corrections=won,
        cases=cases,
    )


def annotate(s: Session, rows: Sequence[Rating]) -> list[RatingOut]:
    """The ratings as the API returns them: with exclusions, the correction in force and the case."""
    ids = [r.id for r in rows if r.id is not None]
    if not ids:
        return []
    n = notes(s, ids, {r.case_id for r in rows if r.case_id is not None})
    out = []
    for r in rows:
        assert r.id is not None
        code, fld = n.cases.get(r.case_id, (None, None)) if r.case_id is not None else (None, None)
        out.append(
            RatingOut(
                **r.model_dump(exclude={"raw"}),
                hub_tag=r.raw[16:32].hex(),
                district_tag=r.raw[32:48].hex(),
                effective_official_id=n.official(r.id, r.official_id),
                valid=n.valid(r.id),
                exclusions=n.exclusions.get(r.id, []),
                correction=n.corrections.get(r.id),
                case_code=code,
                field=fld,
            )
        )
    return out


# The columns a CSV export needs, read as plain tuples (no ORM objects: ten times faster).
CSV_FIELDS = (
    "id", "press_time", "channel", "terminal_id", "desk", "official_id", "case_id",
    "link_status", "level", "scale", "reason", "test", "received_at",
)  # fmt: skip


def plain_rows(s: Session, ids: Sequence[int], order: Order) -> list[dict[str, Any]]:
    cols = [getattr(Rating, c) for c in CSV_FIELDS]
    q = select(*cols).where(col(Rating.id).in_(ids))
    q = q.order_by(col(Rating.id).asc() if order == "asc" else col(Rating.id).desc())
    return [dict(zip(CSV_FIELDS, row, strict=True)) for row in s.exec(q).all()]


# -- corrections -----------------------------------------------------------------------------------
class CorrectionCreate(BaseModel):
    official_id: str | None = Field(
        max_length=64,
        description="the official the rating belongs to; null: nobody was serving",
        examples=["nguyen.van.an"],
    )
    reason: str = Field(
        min_length=1, max_length=500, examples=["cán bộ quên check-in, người khác đang ở quầy"]
    )


class CorrectionReverse(BaseModel):
    note: str | None = Field(None, max_length=500)


def correct(
    s: Session, *, rating_id: int, official_id: str | None, reason: str, actor: str
) -> Correction:
    """Re-attribute a rating to another official (or to nobody). The rating row is not changed."""
    rating = s.get(Rating, rating_id)
    if rating is None:
        raise ofc.NotFound(f"rating {rating_id} does not exist")
    if official_id is not None and s.get(Official, official_id) is None:
        raise ofc.NotFound(f"official {official_id} does not exist: create it first")
    before = s.exec(
        select(effective_official()).select_from(Rating).where(col(Rating.id) == rating_id)
    ).one()
    if before == official_id:
        who = official_id or "nobody"
        raise ofc.Conflict(f"rating {rating_id} already belongs to {who}")
    c = Correction(rating_id=rating_id, official_id=official_id, reason=reason, actor=actor)
    s.add(c)
    s.flush()
    ofc.audit(
        s,
        actor=actor,
        action="correct",
        entity="rating",
        entity_id=rating_id,
        correction=c.id,
        official_was=before,
        official=official_id,
        reason=reason,
    )
    return c


def reverse_correction(
    s: Session, *, correction_id: int, note: str | None, actor: str
) -> Correction:
    """Take a correction back (itself a new, attributed record); the one before it, if any, or
    the official tagged at ingest, applies again."""
    c = s.get(Correction, correction_id)
    if c is None or c.reverses is not None:
        raise ofc.NotFound(f"correction {correction_id} does not exist")
    if s.exec(select(Correction).where(Correction.reverses == correction_id)).first() is not None:
        raise ofc.Conflict(f"correction {correction_id} was already reversed")
    back = Correction(
        rating_id=c.rating_id,
        official_id=c.official_id,
        reason=note or "reversed",
        actor=actor,
        reverses=correction_id,
    )
    s.add(back)
    s.flush()
    ofc.audit(
        s,
        actor=actor,
        action="reverse-correction",
        entity="rating",
        entity_id=c.rating_id,
        correction=correction_id,
        note=note,
    )
    return back
