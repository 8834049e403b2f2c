"""Terminal registry: create terminals with fresh credentials and keys, list them, revoke them."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from hub.models import AuditLog, Terminal, utcnow


def new_terminal_id() -> str:
    # A real terminal's id comes from its chip's unique id (provisioning); this is for simulators.
    return "t-" + secrets.token_hex(6)


def add_terminal(
    engine: Engine,
    *,
    office: str,
    terminal_id: str | None = None,
    desk: str | None = None,
    epoch: int = 1,
) -> tuple[Terminal, dict[str, Any]]:
    """Register a terminal. Returns the row and the device configuration for it.

    The district key goes into the device configuration only, never into the hub's database: until
    the district server issues it (the district issue), it is generated here and handed straight to
    the terminal.
    """
    term = Terminal(
        id=terminal_id or new_terminal_id(),
        office=office,
        desk=desk,
        epoch=epoch,
        hub_key=secrets.token_hex(32),
        mqtt_password=secrets.token_urlsafe(18),
    )
    with Session(engine) as s:
        if s.get(Terminal, term.id) is not None:
            raise ValueError(f"terminal {term.id} is already registered")
        s.add(term)
        s.commit()
        s.refresh(term)
    device = {
        "terminal_id": term.id,
        "office": office,
        "epoch": epoch,
        "hub_key": term.hub_key,
        "district_key": secrets.token_hex(32),
        "mqtt_password": term.mqtt_password,
    }
    return term, device


def broker_accounts(engine: Engine, office: str) -> dict[str, str]:
    """MQTT user -> password for every active terminal of the office (revoked ones are left out)."""
    with Session(engine) as s:
        rows = s.exec(select(Terminal).where(Terminal.office == office, Terminal.active)).all()
    return {t.id: t.mqtt_password for t in rows}


ONLINE_WITHIN = timedelta(minutes=3)  # three missed 60 s heartbeats: the terminal is offline


def health(term: Terminal, now: datetime | None = None) -> dict[str, Any]:
    """What a technician wants to see about a terminal, from its last retained status."""
    now = now or utcnow()
    st: dict[str, Any] = {}
    if term.last_heartbeat:
        try:
            st = json.loads(term.last_heartbeat)
        except ValueError:
            st = {}
    seen = term.last_seen
    if seen is not None and seen.tzinfo is None:
        seen = seen.replace(tzinfo=UTC)
    try:  # the latest status: an "offline" last will overrides the last heartbeat
        state = json.loads(term.last_status or "{}").get("state")
    except (ValueError, AttributeError):
        state = None
    online = bool(state == "online" and seen is not None and now - seen < ONLINE_WITHIN)
    return {
        "id": term.id,
        "desk": term.desk,
        "active": term.active,
        "epoch": term.epoch,
        "online": online,
        "last_seen": seen,
        "fw": st.get("fw"),
        "last_seq": st.get("last_seq"),
        "outbox": st.get("outbox"),
        "rssi": st.get("rssi"),
        "vsupply": st.get("vsupply"),
        "power": st.get("power"),
        "mem_free": st.get("mem_free"),
        "uptime": st.get("uptime"),
        "boots": st.get("boots"),
        "clock": st.get("clock"),
    }


def replace_terminal(
    engine: Engine, *, office: str, old_id: str, new_id: str | None, actor: str, force: bool = False
) -> tuple[Terminal, dict[str, Any]]:
    """Put a new terminal on the old one's desk and retire the old one (its credentials stop working
    at the next broker reload). The desk's history stays: ratings carry their desk."""
    with Session(engine) as s:
        old = s.get(Terminal, old_id)
        if old is None or old.office != office:
            raise ValueError(f"terminal {old_id} is not registered here")
        if not old.active:
            raise ValueError(f"terminal {old_id} is already retired")
        unsent = health(old).get("outbox") or 0
        if unsent and not force:
            # Its account stops working with the replacement: let it drain first.
            raise ValueError(
                f"terminal {old_id} still holds {unsent} unsent ratings: power it on where it can "
                "reach the hub and wait for its outbox to empty, or replace it with force"
            )
        desk = old.desk
    term, device = add_terminal(engine, office=office, terminal_id=new_id, desk=desk)
    with Session(engine) as s:
        old = s.get(Terminal, old_id)
        assert old is not None
        old.active = False
        old.desk = None
        s.add(old)
        s.add(
            AuditLog(
                actor=actor,
                action="replace",
                entity="terminal",
                entity_id=old_id,
                detail=json.dumps({"by": term.id, "desk": desk}),
            )
        )
        s.commit()
    return term, device


def retire_terminal(
    engine: Engine,
    *,
    office: str,
    terminal_id: str,
    actor: str,
    reason: str | None = None,
    force: bool = False,
) -> Terminal:
    """Take a terminal out of service for good: its account leaves the broker at the next reload
    and it comes off its desk. Its ratings (and the desk's history) stay as they are."""
    with Session(engine) as s:
        term = s.get(Terminal, terminal_id)
        if term is None or term.office != office:
            raise ValueError(f"terminal {terminal_id} is not registered here")
        if not term.active:
            raise ValueError(f"terminal {terminal_id} is already retired")
        unsent = health(term).get("outbox") or 0
        if unsent and not force:
            raise ValueError(
                f"terminal {terminal_id} still holds {unsent} unsent ratings: power it on where it "
                "can reach the hub and wait for its outbox to empty, or retire it with force"
            )
        desk = term.desk
        term.active = False
        term.desk = None
        s.add(term)
        s.add(
            AuditLog(
                actor=actor,
                action="retire",
                entity="terminal",
                entity_id=terminal_id,
                detail=json.dumps({"desk": desk, "reason": reason, "unsent": unsent}),
            )
        )
        s.commit()
        s.refresh(term)
    return term
