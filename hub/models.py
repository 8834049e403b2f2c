"""Database tables of the hub (SQLModel)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, Index, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class Terminal(SQLModel, table=True):
    id: str = Field(primary_key=True, description="t- and 12 hex digits")
    office: str = Field(index=True)
    desk: str | None = None
    epoch: int = 1
    hub_key: str = Field(description="hex; the district key is never held by the hub")
    mqtt_password: str
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow)
    last_seen: datetime | None = None
    last_status: str | None = None
    last_heartbeat: str | None = Field(default=None, description="last signed 'online' status")


class Desk(SQLModel, table=True):
    """A desk ("quầy") of the one-stop unit; a terminal sits on one."""

    id: str = Field(primary_key=True)
    office: str = Field(index=True)
    name: str
    requires_case: bool = Field(False, description="presses with no linked case are excluded")
    created_at: datetime = Field(default_factory=utcnow)


class Official(SQLModel, table=True):
    """An official ("công chức") who serves at the desks."""

    id: str = Field(primary_key=True)
    office: str = Field(index=True)
    name: str
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow)


class DutyEvent(SQLModel, table=True):
    """Check-in / check-out log, append-only: who is on duty at a desk at time T is the official of
    the last event at that desk at or before T, if that event is a check-in."""

    # on_duty() runs for every rating: the last event of one desk before a time.
    __table_args__ = (Index("ix_dutyevent_desk_at", "desk_id", "at"),)
    id: int | None = Field(default=None, primary_key=True)
    office: str
    desk_id: str = Field(index=True)
    official_id: str = Field(index=True)
    kind: str = Field(description="in | out")
    at: datetime = Field(index=True)
    actor: str
    recorded_at: datetime = Field(default_factory=utcnow)


class Case(SQLModel, table=True):
    """An administrative case ("hồ sơ") whose result was handed back at a desk."""

    # link_case() runs for every rating: the cases of one desk in a time range, newest first.
    __table_args__ = (
        UniqueConstraint("office", "code", name="uq_case_code"),
        Index("ix_case_desk_handed_back", "desk_id", "handed_back_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    office: str
    code: str = Field(description="mã hồ sơ, as printed on the receipt")
    procedure: str | None = Field(None, description="thủ tục hành chính")
    field: str | None = Field(None, description="lĩnh vực, e.g. hộ tịch, chứng thực")
    desk_id: str = Field(index=True)
    official_id: str | None = None
    handed_back_at: datetime = Field(index=True)
    source: str = "api"
    actor: str
    recorded_at: datetime = Field(default_factory=utcnow)


class Exclusion(SQLModel, table=True):
    """An attributed annotation that leaves a rating out of the figures, or (``reverses``) takes
    such an annotation back. Ratings themselves are never changed."""

    id: int | None = Field(default=None, primary_key=True)
    rating_id: int = Field(index=True)
    reason: str
    note: str | None = None
    actor: str
    created_at: datetime = Field(default_factory=utcnow)
    reverses: int | None = Field(default=None, index=True)


class ApiToken(SQLModel, table=True):
    """An API token. Only its SHA-256 is stored: the token itself is shown once, at creation."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(description="who holds it (recorded as the actor of what it does)")
    role: str = Field(description="admin | supervisor | official | auditor")
    official_id: str | None = Field(None, description="role official: whose results it sees")
    token_hash: str = Field(index=True, unique=True, description="sha256 hex of the token")
    prefix: str = Field(description="the token's first 6 characters, to tell tokens apart")
    created_at: datetime = Field(default_factory=utcnow)
    created_by: str = "cli"
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class PaperBox(SQLModel, table=True):
    """The minutes (biên bản) of opening a sealed ballot box (seed 002): channel "paper"."""

    id: int | None = Field(default=None, primary_key=True)
    office: str = Field(index=True)
    desk_id: str | None = Field(None, description="the box's desk; None: the whole office")
    opened_at: datetime = Field(index=True, description="when the box was opened (UTC)")
    period_start: datetime = Field(description="the ballots cover presses from this time (UTC)")
    period_end: datetime
    witnesses: str = Field(description="names of those present, one per line")
    seal_intact: bool
    ballots: int = Field(description="ballots found in the box")
    invalid_ballots: int = 0
    note: str | None = None
    supersedes: int | None = Field(
        None,
        index=True,
        description="the box record this one corrects (records are never edited); reports count "
        "only records that no later record supersedes",
    )
    actor: str
    recorded_at: datetime = Field(default_factory=utcnow)


class PaperTally(SQLModel, table=True):
    """Counts per level (and per field, where the ballot has one) from one opened box. Reports
    add these counts to the ratings of the same office/desk/field, clearly marked as tallies."""

    id: int | None = Field(default=None, primary_key=True)
    box_id: int = Field(index=True)
    office: str = Field(index=True)
    desk_id: str | None = None
    official_id: str | None = None
    field: str | None = None
    scale: int
    level: int
    count: int


class QrSubmission(SQLModel, table=True):
    """What the QR channel keeps beside a QR rating (hub/channels/qr.py) for its abuse limits:
    the phone number only as a salted scrypt hash, the client address only as a salted hash.
    The unique constraint is "one rating per phone per case" (NULLs do not collide)."""

    __table_args__ = (UniqueConstraint("phone_hash", "case_id", name="uq_qr_phone_case"),)
    id: int | None = Field(default=None, primary_key=True)
    rating_id: int = Field(index=True)
    office: str
    desk_id: str = Field(index=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    phone_hash: str | None = Field(None, index=True)
    case_id: int | None = None
    client_hash: str = Field(index=True)


class Correction(SQLModel, table=True):
    """An attributed annotation that re-attributes a rating to another official (the wrong
    official was checked in at the desk). The rating row never changes; reports use the latest
    correction of a rating that has not been reversed."""

    id: int | None = Field(default=None, primary_key=True)
    rating_id: int = Field(index=True)
    official_id: str | None = Field(description="the official the rating belongs to; None: nobody")
    reason: str
    actor: str
    created_at: datetime = Field(default_factory=utcnow)
    reverses: int | None = Field(default=None, index=True)


class AuditLog(SQLModel, table=True):
    """Every change to desks, officials, the duty log, cases, terminals and exclusions."""

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    actor: str
    action: str
    entity: str
    entity_id: str
    detail: str = "{}"


class Rollout(SQLModel, table=True):
    """An over-the-air update of terminals to one firmware version, one terminal at a time
    (hub/firmware.py)."""

    id: int | None = Field(default=None, primary_key=True)
    office: str = Field(index=True)
    version: str
    target: str = Field(description="terminal:<id> | desk:<id> | all")
    state: str = Field(
        default="running", description="running | done | stopped | interrupted | cancelled"
    )
    reason: str | None = Field(
        default=None, description="why it stopped, was interrupted or was cancelled (by whom)"
    )
    timeout_s: float
    actor: str
    created_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


class RolloutStep(SQLModel, table=True):
    """One terminal of a rollout, in the order it is (or would have been) updated."""

    __table_args__ = (UniqueConstraint("rollout_id", "position", name="uq_rollout_position"),)
    id: int | None = Field(default=None, primary_key=True)
    rollout_id: int = Field(index=True)
    position: int
    terminal_id: str = Field(index=True)
    state: str = Field(
        default="pending",
        description="pending | sent | staged | trial | updated | skipped | failed | not_started "
        "| interrupted",
    )
    from_fw: str | None = None
    reason: str | None = None
    command_id: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class RatingBase(SQLModel):
    terminal_id: str = Field(index=True)
    epoch: int
    seq: int
    office: str
    desk: str | None = None
    level: int
    scale: int
    reason: int = 0
    flags: int = 0
    press_time: datetime = Field(
        index=True, description="UTC; receipt time if the clock was unknown"
    )
    clock_unknown: bool = False
    repeat: bool = False
    test: bool = False
    prompted: bool = False
    received_at: datetime = Field(default_factory=utcnow)
    official_id: str | None = Field(
        None, index=True, description="on duty at the desk at press time"
    )
    case_id: int | None = Field(None, index=True)
    link_status: str = Field(
        "no_case", description="linked | no_case | case_already_rated | late | not_linked"
    )
    channel: str = Field(
        "terminal",
        index=True,
        sa_column_kwargs={"server_default": "terminal"},
        description="terminal (a desk terminal) | qr (a citizen's phone, seed 000 form 02)",
    )


class Rating(RatingBase, table=True):
    """A stored rating. Append-only: the code has no update or delete path for this table."""

    __table_args__ = (
        UniqueConstraint("terminal_id", "epoch", "seq", name="uq_rating_key"),
        # link_case(): "has this case a rating already" from the index alone
        Index("ix_rating_case_link", "case_id", "link_status"),
    )
    id: int | None = Field(default=None, primary_key=True)
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    chain: str = Field(
        default="", description="sha256 hash chain over this terminal's stored ratings"
    )


class RatingPublic(RatingBase):
    id: int
    hub_tag: str
    district_tag: str


class Quarantine(SQLModel, table=True):
    """A message the hub refused, kept byte for byte with the reason, for inspection."""

    id: int | None = Field(default=None, primary_key=True)
    received_at: datetime = Field(default_factory=utcnow, index=True)
    topic: str
    reason: str
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class Heartbeat(SQLModel, table=True):
    """A terminal's signed heartbeat, logged each time its signed ``last_seq`` (or epoch) changes:
    the evidence the district checks sequence gaps against (the ``heartbeats`` stream of
    docs/sync.md). Append-only."""

    id: int | None = Field(default=None, primary_key=True)
    terminal_id: str = Field(index=True)
    epoch: int
    last_seq: int
    time: int = Field(description="the terminal's clock (Unix seconds), as signed")
    dtag: str = Field(description="the district tag of the heartbeat (hex); '' if it had none")
    status: str = Field(description="the status JSON as received")
    received_at: datetime = Field(default_factory=utcnow)


class SyncState(SQLModel, table=True):
    """One row per stream of the hub -> district sync (hub/sync.py, docs/sync.md): the watermark
    (the last hub id the district has acknowledged with a 200) and how sending goes."""

    stream: str = Field(primary_key=True)
    watermark: int = 0
    pending_to: int | None = Field(
        default=None, description="the batch in flight: a retry sends the same range and key"
    )
    version: int = Field(default=0, description="directory: the hub's snapshot version")
    digest: str | None = Field(default=None, description="directory: sha256 of that snapshot")
    changed_at: datetime | None = Field(default=None, description="directory: version bumped at")
    attempts: int = Field(default=0, description="failed attempts in a row")
    failing_since: datetime | None = None
    next_attempt_at: datetime | None = None
    last_attempt_at: datetime | None = None
    last_success_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    sent: int = Field(default=0, description="items the district acknowledged (all time)")
    rejected: int = Field(default=0, description="items the district rejected (all time)")
