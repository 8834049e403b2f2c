"""Terminal registry: create terminals with fresh credentials and keys, list them, revoke them."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from hub.models import Terminal


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
