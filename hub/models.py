"""Database tables of the hub (SQLModel)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, LargeBinary, UniqueConstraint
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


class Rating(RatingBase, table=True):
    """A stored rating. Append-only: the code has no update or delete path for this table."""

    __table_args__ = (UniqueConstraint("terminal_id", "epoch", "seq", name="uq_rating_key"),)
    id: int | None = Field(default=None, primary_key=True)
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


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
