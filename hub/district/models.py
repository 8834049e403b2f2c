"""Tables of the district server (SQLModel), in their own metadata.

The district keeps what its offices' hubs send (docs/sync.md) beside what it trusts on its own
account: the terminal directory with the district keys it issued, and the integrity findings it
computed. Everything a hub attests without a terminal's signature (who was on duty, which case,
exclusions, corrections, paper tallies) is stored as the hub's word, marked as such.

Conventions (for the reports built on these tables):

- ``office`` is the office id (``^[a-z0-9-]{1,32}$``) on every row that belongs to one office.
- A hub's own row id is kept as ``hub_id``; ``(office, hub_id)`` is unique, so a resent item is a
  no-op, and ``reverses`` (exclusions, corrections) names another row's ``hub_id`` of the same office.
- A rating is identified across the system by its key ``(terminal_id, epoch, seq)``; exclusions and
  corrections refer to it by that key, never by a database id.
- Times are UTC (``DateTime(timezone=True)``: ``timestamptz`` on PostgreSQL; SQLite returns them
  naive, meaning UTC).
- Append-only: ratings, heartbeats, findings, cases, duty events, exclusions and corrections are
  never updated or deleted by the code; the directory tables (desks, officials, terminal desk and
  state) follow the latest snapshot a hub sent.

The tables live in ``DistrictModel.metadata``, not in SQLModel's global metadata, so the hub's
``create_all`` never creates them and the district's migrations cover exactly these tables.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, LargeBinary, UniqueConstraint
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def _ts(**kw: Any) -> Any:
    """A timezone-aware UTC timestamp column (``timestamptz`` on PostgreSQL)."""
    return Field(sa_type=DateTime(timezone=True), **kw)


class DistrictModel(SQLModel, registry=registry()):
    """Base of every district table: its own registry, hence its own ``metadata``."""


# -- who: offices, their hubs, API tokens ------------------------------------------------------------
class Office(DistrictModel, table=True):
    """An office of the district (a ward's or commune's one-stop unit), with one hub."""

    __tablename__ = "office"
    id: str = Field(primary_key=True, max_length=32, description="^[a-z0-9-]{1,32}$")
    name: str = Field(max_length=200)
    created_at: datetime = _ts(default_factory=utcnow)


class Hub(DistrictModel, table=True):
    """The office's hub as a sync client: its bearer token, stored as SHA-256 only."""

    __tablename__ = "hub"
    id: int | None = Field(default=None, primary_key=True)
    office: str = Field(foreign_key="office.id", index=True, max_length=32)
    token_hash: str = Field(unique=True, max_length=64, description="sha256 hex of the token")
    prefix: str = Field(max_length=8, description="the token's first characters, to tell apart")
    created_at: datetime = _ts(default_factory=utcnow)
    revoked_at: datetime | None = _ts(default=None)


class ApiToken(DistrictModel, table=True):
    """A district API token (roles in hub/district/auth.py); only its SHA-256 is stored."""

    __tablename__ = "api_token"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, description="who holds it")
    role: str = Field(max_length=16, description="admin | auditor | viewer | provisioner")
    office: str | None = Field(
        default=None, foreign_key="office.id", max_length=32, description="viewer: their office"
    )
    token_hash: str = Field(unique=True, max_length=64)
    prefix: str = Field(max_length=8)
    created_at: datetime = _ts(default_factory=utcnow)
    created_by: str = Field(default="cli", max_length=100)
    revoked_at: datetime | None = _ts(default=None)


# -- the terminal directory: the district's own truth ------------------------------------------------
class TerminalKey(DistrictModel, table=True):
    """A terminal in one provisioning epoch, with the district key the district issued for it.

    The key is the district's secret (only the terminal holds it too); one row per epoch, so a
    re-provisioned terminal's old ratings still verify with the old epoch's key. ``office`` is fixed
    at issue time: a hub cannot move a terminal to another office. ``desk`` and ``active`` follow
    the hub's latest directory snapshot (the hub's word)."""

    __tablename__ = "terminal_key"
    terminal_id: str = Field(primary_key=True, max_length=14, description="t- and 12 hex digits")
    epoch: int = Field(primary_key=True, ge=1, le=65535)
    office: str = Field(foreign_key="office.id", index=True, max_length=32)
    district_key: str = Field(max_length=64, description="hex of 32 random bytes; never shown")
    desk: str | None = Field(default=None, max_length=64)
    active: bool = True
    issued_at: datetime = _ts(default_factory=utcnow)
    issued_by: str = Field(max_length=100)


class Desk(DistrictModel, table=True):
    """A desk of an office, from the hub's latest directory snapshot."""

    __tablename__ = "desk"
    office: str = Field(primary_key=True, max_length=32)
    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(default="", max_length=200)
    requires_case: bool = False


class Official(DistrictModel, table=True):
    """An official of an office, from the hub's latest directory snapshot."""

    __tablename__ = "official"
    office: str = Field(primary_key=True, max_length=32)
    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(default="", max_length=200)
    active: bool = True


class DirectorySnapshot(DistrictModel, table=True):
    """Every directory snapshot a hub sent, as sent (its ``version`` is the hub's counter)."""

    __tablename__ = "directory_snapshot"
    __table_args__ = (UniqueConstraint("office", "version", name="uq_directory_version"),)
    id: int | None = Field(default=None, primary_key=True)
    office: str = Field(max_length=32)
    version: int
    snapshot: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    received_at: datetime = _ts(default_factory=utcnow)


# -- what hubs send ----------------------------------------------------------------------------------
class Rating(DistrictModel, table=True):
    """A rating whose record the district accepted. ``raw`` is the 48-byte record as the terminal
    signed it; the decoded columns come from ``raw``, never from the hub. ``verified``: the district
    tag checked with the district key (False only for QR ratings, which no terminal signs: the hub
    attests them). The ``hub attribution`` columns are the hub's word."""

    __tablename__ = "rating"
    __table_args__ = (
        UniqueConstraint("terminal_id", "epoch", "seq", name="uq_rating_key"),
        Index("ix_rating_office_press_time", "office", "press_time"),
    )
    id: int | None = Field(default=None, primary_key=True)
    terminal_id: str = Field(max_length=64, description="t-... or qr-<desk> for the QR channel")
    epoch: int
    seq: int = Field(sa_type=BigInteger)  # u32 does not fit a signed int
    office: str = Field(max_length=32)
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    # decoded from raw
    flags: int
    level: int
    scale: int
    reason: int
    press_time: datetime = _ts(
        description="the signed press time; the hub's receipt time when clock_unknown"
    )
    clock_unknown: bool
    repeat: bool
    test: bool
    prompted: bool
    followup: bool
    verified: bool = Field(description="district tag checked (False: attested by the hub only)")
    # hub attribution (docs/sync.md, stream ratings)
    channel: str = Field(default="terminal", max_length=16, description="terminal | qr")
    desk: str | None = Field(default=None, max_length=64)
    official_id: str | None = Field(default=None, index=True, max_length=64)
    case_code: str | None = Field(default=None, index=True, max_length=100)
    link_status: str | None = Field(default=None, max_length=32)
    hub_received_at: datetime | None = _ts(default=None)
    # district bookkeeping
    batch: str = Field(max_length=200, description="the Idempotency-Key of the batch it came in")
    stored_at: datetime = _ts(default_factory=utcnow)


class CaseFile(DistrictModel, table=True):
    """An administrative case (hồ sơ) handed back at a desk (stream ``cases``; the hub's word)."""

    __tablename__ = "case_file"
    __table_args__ = (UniqueConstraint("office", "hub_id", name="uq_case_hub_id"),)
    id: int | None = Field(default=None, primary_key=True)
    office: str = Field(max_length=32)
    hub_id: int
    code: str = Field(index=True, max_length=100)
    desk_id: str | None = Field(default=None, max_length=64)
    procedure: str | None = Field(default=None, max_length=300)
    field: str | None = Field(default=None, max_length=100, description="lĩnh vực")
    official_id: str | None = Field(default=None, max_length=64)
    handed_back_at: datetime = _ts(index=True)
    source: str | None = Field(default=None, max_length=32)
    batch: str = Field(max_length=200)


class DutyEvent(DistrictModel, table=True):
    """A check-in / check-out at a desk (stream ``duty``; the hub's word)."""

    __tablename__ = "duty_event"
    __table_args__ = (UniqueConstraint("office", "hub_id", name="uq_duty_hub_id"),)
    id: int | None = Field(default=None, primary_key=True)
    office: str = Field(max_length=32)
    hub_id: int
    desk_id: str = Field(max_length=64)
    official_id: str = Field(max_length=64)
    kind: str = Field(max_length=8, description="in | out")
    at: datetime = _ts()
    actor: str | None = Field(default=None, max_length=100)
    batch: str = Field(max_length=200)


class Exclusion(DistrictModel, table=True):
    """An exclusion of a rating (or, with ``reverses``, its reinstatement): stream ``exclusions``."""

    __tablename__ = "exclusion"
    __table_args__ = (
        UniqueConstraint("office", "hub_id", name="uq_exclusion_hub_id"),
        Index("ix_exclusion_rating", "terminal_id", "epoch", "seq"),
    )
    id: int | None = Field(default=None, primary_key=True)
    office: str = Field(max_length=32)
    hub_id: int
    terminal_id: str = Field(max_length=64)
    epoch: int
    seq: int = Field(sa_type=BigInteger)
    reason: str = Field(max_length=64)
    note: str | None = Field(default=None, max_length=500)
    actor: str | None = Field(default=None, max_length=100)
    created_at: datetime = _ts()
    reverses: int | None = Field(default=None, description="hub_id of the exclusion taken back")
    batch: str = Field(max_length=200)


class Correction(DistrictModel, table=True):
    """A re-attribution of a rating to another official (or, with ``reverses``, its reversal)."""

    __tablename__ = "correction"
    __table_args__ = (
        UniqueConstraint("office", "hub_id", name="uq_correction_hub_id"),
        Index("ix_correction_rating", "terminal_id", "epoch", "seq"),
    )
    id: int | None = Field(default=None, primary_key=True)
    office: str = Field(max_length=32)
    hub_id: int
    terminal_id: str = Field(max_length=64)
    epoch: int
    seq: int = Field(sa_type=BigInteger)
    official_id: str | None = Field(default=None, max_length=64)
    reason: str = Field(max_length=500)
    actor: str | None = Field(default=None, max_length=100)
    created_at: datetime = _ts()
    reverses: int | None = None
    batch: str = Field(max_length=200)


class Heartbeat(DistrictModel, table=True):
    """A terminal's signed heartbeat whose district tag checked out: its ``last_seq`` is what the
    suspected-deletion check counts against. Unique on the signed content, so a resend is a no-op."""

    __tablename__ = "heartbeat"
    __table_args__ = (
        UniqueConstraint("terminal_id", "epoch", "last_seq", "time", name="uq_heartbeat_signed"),
    )
    id: int | None = Field(default=None, primary_key=True)
    office: str = Field(max_length=32)
    terminal_id: str = Field(max_length=14)
    epoch: int
    last_seq: int = Field(sa_type=BigInteger)
    time: int = Field(sa_type=BigInteger, description="terminal's clock")
    dtag: str = Field(max_length=32)
    status: str | None = Field(default=None, max_length=16)
    batch: str = Field(max_length=200)
    stored_at: datetime = _ts(default_factory=utcnow)


class PaperBox(DistrictModel, table=True):
    """The minutes of opening a sealed ballot box (stream ``paper``; the hub's word). ``minutes``
    keeps the item as sent; ``supersedes`` names the box (``hub_id``) this record corrects."""

    __tablename__ = "paper_box"
    __table_args__ = (UniqueConstraint("office", "hub_id", name="uq_paper_box_hub_id"),)
    id: int | None = Field(default=None, primary_key=True)
    office: str = Field(max_length=32)
    hub_id: int
    desk_id: str | None = Field(default=None, max_length=64)
    opened_at: datetime | None = _ts(default=None)
    period_start: datetime | None = _ts(default=None)
    period_end: datetime | None = _ts(default=None)
    seal_intact: bool | None = None
    ballots: int | None = None
    invalid_ballots: int | None = None
    supersedes: int | None = None
    minutes: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    batch: str = Field(max_length=200)


class PaperTally(DistrictModel, table=True):
    """A count per level (and desk, official, field where the ballot has one) of one box."""

    __tablename__ = "paper_tally"
    id: int | None = Field(default=None, primary_key=True)
    box_id: int = Field(foreign_key="paper_box.id", index=True)
    office: str = Field(max_length=32)
    desk_id: str | None = Field(default=None, max_length=64)
    official_id: str | None = Field(default=None, max_length=64)
    field: str | None = Field(default=None, max_length=100)
    scale: int
    level: int
    count: int


# -- sync bookkeeping --------------------------------------------------------------------------------
class SyncBatch(DistrictModel, table=True):
    """One accepted batch: the idempotency key, the sha256 of its (unzipped) body and the answer
    given, so that a resend gets the same answer and a different body under the key gets 409."""

    __tablename__ = "sync_batch"
    idempotency_key: str = Field(primary_key=True, max_length=200)
    office: str = Field(max_length=32, index=True)
    stream: str = Field(max_length=16)
    from_pos: int = Field(sa_type=BigInteger)
    to_pos: int = Field(sa_type=BigInteger)
    items: int
    body_sha256: str = Field(max_length=64)
    answer: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    received_at: datetime = _ts(default_factory=utcnow)


# -- integrity ---------------------------------------------------------------------------------------
FORGED_RATING = "forged_rating"  # a ratings item refused: bad tag, undecodable, unknown terminal
FORGED_HEARTBEAT = "forged_heartbeat"  # a heartbeat whose district tag does not check out
CONFLICTING_RATING = "conflicting_rating"  # a valid-looking record under a key already stored
FINDING_KINDS = (FORGED_RATING, FORGED_HEARTBEAT, CONFLICTING_RATING)


class Finding(DistrictModel, table=True):
    """Something a hub sent that the district refused, kept with the reason (never retried).
    ``fingerprint`` (sha256 of kind, office and what was sent) makes a repeat a no-op."""

    __tablename__ = "finding"
    __table_args__ = (Index("ix_finding_office_kind", "office", "kind"),)
    id: int | None = Field(default=None, primary_key=True)
    office: str = Field(max_length=32)
    kind: str = Field(max_length=32, description=" | ".join(FINDING_KINDS))
    terminal_id: str | None = Field(default=None, max_length=64)
    epoch: int | None = None
    seq: int | None = Field(default=None, sa_type=BigInteger)
    reason: str = Field(max_length=500)
    raw: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    item: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    fingerprint: str = Field(unique=True, max_length=64)
    batch: str = Field(max_length=200)
    detected_at: datetime = _ts(default_factory=utcnow)


class SuspectedDeletion(DistrictModel, table=True):
    """Sequence numbers ``seq_from``..``seq_to`` of one terminal and epoch, at or below the highest
    signed ``last_seq`` of its heartbeats, that the district never received. Recomputed whenever
    that terminal's ratings or heartbeats arrive: a range that later arrives (late sync) gets
    ``resolved_at``; rows are never deleted, so the history of what was missing stays."""

    __tablename__ = "suspected_deletion"
    __table_args__ = (Index("ix_suspected_deletion_open", "office", "resolved_at"),)
    id: int | None = Field(default=None, primary_key=True)
    office: str = Field(max_length=32)
    terminal_id: str = Field(max_length=14)
    epoch: int
    seq_from: int = Field(sa_type=BigInteger)
    seq_to: int = Field(sa_type=BigInteger)
    last_seq: int = Field(sa_type=BigInteger, description="the signed last_seq it is below")
    detected_at: datetime = _ts(default_factory=utcnow)
    resolved_at: datetime | None = _ts(default=None)


# -- report rollups (hub/district/reports_rollup.py; a cache of the tables above) ---------------------
# One row per grain ('d': office day YYYY-MM-DD, 'm': month YYYY-MM, 'y': year YYYY) × dimension
# (office, desk, official after corrections, field through the linked case) × unit ('' = none) ×
# office. The key leads with grain, dim and period: a report reads one dimension over a range of
# periods; the office index serves the refresh, which rewrites one office's days and months.
def _key(**kw: Any) -> Any:
    return Field(primary_key=True, sa_column_kwargs={"autoincrement": False}, **kw)


class ReportUnit(DistrictModel, table=True):
    """Valid and excluded ratings per period × unit × channel × scale × level."""

    __tablename__ = "report_unit"
    __table_args__ = (Index("ix_report_unit_office", "office", "grain", "dim", "period"),)
    grain: str = _key(max_length=1)
    dim: str = _key(max_length=8)
    period: str = _key(max_length=10)
    office: str = _key(max_length=32)
    unit: str = _key(max_length=100)
    channel: str = _key(max_length=16)
    scale: int = _key()
    level: int = _key()
    n_valid: int
    n_excl: int


class ReportExcl(DistrictModel, table=True):
    """Excluded ratings per period × unit × channel × reason (a rating with two reasons counts
    under both)."""

    __tablename__ = "report_excl"
    __table_args__ = (Index("ix_report_excl_office", "office", "grain", "dim", "period"),)
    grain: str = _key(max_length=1)
    dim: str = _key(max_length=8)
    period: str = _key(max_length=10)
    office: str = _key(max_length=32)
    unit: str = _key(max_length=100)
    channel: str = _key(max_length=16)
    reason: str = _key(max_length=64)
    n: int


class ReportCase(DistrictModel, table=True):
    """Cases handed back per period × unit (their own desk, official, field), and how many of them
    have a valid linked rating (the response rate)."""

    __tablename__ = "report_case"
    __table_args__ = (Index("ix_report_case_office", "office", "grain", "dim", "period"),)
    grain: str = _key(max_length=1)
    dim: str = _key(max_length=8)
    period: str = _key(max_length=10)
    office: str = _key(max_length=32)
    unit: str = _key(max_length=100)
    cases: int
    rated: int


class ReportDirty(DistrictModel, table=True):
    """An office day whose rollup rows must be recomputed: marked by the batch that changed it,
    in the batch's own transaction, cleared by the refresh that recomputes it."""

    __tablename__ = "report_dirty"
    office: str = _key(max_length=32)
    day: str = _key(max_length=10)
    hits: int = 1


class ReportVersion(DistrictModel, table=True):
    """Moves whenever a month's rollup rows are recomputed (a cached export is then stale)."""

    __tablename__ = "report_version"
    month: str = Field(primary_key=True, max_length=7)
    version: int = 0


# Reversals are looked up by (office, reverses) for every excluded or corrected rating a report
# counts: without these a district with many exclusions scans the table per rating.
Index("ix_exclusion_reverses", Exclusion.__table__.c.office, Exclusion.__table__.c.reverses)  # type: ignore[attr-defined]
Index("ix_correction_reverses", Correction.__table__.c.office, Correction.__table__.c.reverses)  # type: ignore[attr-defined]

TABLES = DistrictModel.metadata
