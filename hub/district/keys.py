"""Issuing terminals' district keys (at provisioning, by ``sipas-provision register --district``).

The district key is one of the two HMAC keys a terminal signs every rating and heartbeat with; the
district and the terminal are its only holders, so the office's hub cannot forge what the district
verifies (DESIGN.md 4.3). One key per (terminal, provisioning epoch): re-provisioning a terminal
takes a new epoch and a new key, and the old epoch's key stays to verify the old epoch's ratings.

A key is handed out once. Asking again for the same terminal and epoch gets a fresh key that
replaces the first only while nothing signed with the first has arrived (a provisioning run that
failed half-way can be repeated); after that it is refused, so nobody can re-key a terminal in use.
"""

from __future__ import annotations

import secrets

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from hub import protocol
from hub.district.models import Heartbeat, Office, Rating, TerminalKey, utcnow


class KeyRefused(Exception):
    """The key cannot be issued; ``status`` is the HTTP answer, the text says why."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


def issue_key(
    engine: Engine, *, terminal_id: str, office: str, epoch: int, desk: str | None, by: str
) -> tuple[TerminalKey, bool]:
    """A new district key for the terminal in this epoch; (row, True if it replaced an unused one)."""
    if not protocol.TERMINAL_ID_RE.fullmatch(terminal_id):
        raise KeyRefused(422, f"{terminal_id!r} is not a terminal id (t- and 12 hex digits)")
    if not 1 <= epoch <= 65535:
        raise KeyRefused(422, f"epoch {epoch} is outside 1..65535")
    with Session(engine) as s:
        if s.get(Office, office) is None:
            raise KeyRefused(
                404, f"no office {office!r} at the district: `sipas-district office add` it first"
            )
        newest = s.exec(
            select(func.max(TerminalKey.epoch)).where(TerminalKey.terminal_id == terminal_id)
        ).one()
        if newest is not None and epoch < newest:
            raise KeyRefused(
                409, f"{terminal_id} already has a key for epoch {newest}: epochs only go up"
            )
        row = s.get(TerminalKey, (terminal_id, epoch))
        replaced = row is not None
        if row is not None:
            used = (
                s.exec(
                    select(func.count())
                    .select_from(Rating)
                    .where(Rating.terminal_id == terminal_id, Rating.epoch == epoch)
                ).one()
                or s.exec(
                    select(func.count())
                    .select_from(Heartbeat)
                    .where(Heartbeat.terminal_id == terminal_id, Heartbeat.epoch == epoch)
                ).one()
            )
            if used:
                raise KeyRefused(
                    409,
                    f"{terminal_id} epoch {epoch} already has a district key in use (ratings or "
                    "heartbeats signed with it have arrived): provision it with a new epoch",
                )
            if row.office != office:
                raise KeyRefused(409, f"{terminal_id} epoch {epoch} belongs to office {row.office}")
            row.district_key = secrets.token_hex(32)
            row.desk, row.active, row.issued_at, row.issued_by = desk, True, utcnow(), by
        else:
            row = TerminalKey(
                terminal_id=terminal_id,
                epoch=epoch,
                office=office,
                district_key=secrets.token_hex(32),
                desk=desk,
                issued_by=by,
            )
        s.add(row)
        try:
            s.commit()
        except IntegrityError as e:  # the same key asked for twice at the same moment
            raise KeyRefused(409, f"{terminal_id} epoch {epoch} is being issued already") from e
        s.refresh(row)
        return row, replaced
