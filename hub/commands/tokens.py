"""``sipas-hub tokens``: API tokens for people and tools (hub/api/auth.py has the roles).

A token is shown once, when it is created; the hub keeps only its SHA-256. Run these on the hub, as
the hub's user: they work on the hub's database, and each one is written to the audit log.
"""

from __future__ import annotations

import getpass
import sys
from datetime import datetime

import typer
from rich.console import Console
from rich.table import Table
from sqlmodel import Session, col, select

from hub import office as ofc
from hub.api.auth import OFFICIAL, ROLES, create_token, revoke_token
from hub.commands.office import ACTOR
from hub.config import Settings
from hub.db import make_engine
from hub.models import ApiToken, Official

out = Console()
err = Console(stderr=True)
app = typer.Typer(
    help="API tokens: admin (technician), supervisor (the office), official (own results only), "
    "auditor (district staff, read only).",
    no_args_is_help=True,
)


def _actor(actor: str | None) -> str:
    return actor or f"cli:{getpass.getuser()}"


def _when(t: datetime | None) -> str:
    if t is None:
        return "-"
    return ofc.as_utc(t).astimezone(ofc.OFFICE_TZ).strftime("%d/%m/%Y %H:%M")


@app.command("create")
def create(
    name: str = typer.Option(
        ..., help="who holds it, e.g. 'truong-bo-phan' (the audit log's actor)"
    ),
    role: str = typer.Option(..., help=" | ".join(ROLES)),
    official: str | None = typer.Option(None, help="role official: the official's id"),
    actor: str | None = ACTOR,
) -> None:
    """Create a token and print it once (store it now: the hub keeps only its hash)."""
    if role not in ROLES:
        err.print(f"[red]unknown role {role!r}[/]: choose one of {', '.join(ROLES)}")
        raise typer.Exit(2)
    if (role == OFFICIAL) != (official is not None):
        err.print("[red]--official goes with --role official[/] (and only with it)")
        raise typer.Exit(2)
    settings = Settings()
    engine = make_engine(settings.db_url)
    try:
        if official is not None:
            with Session(engine) as s:
                if s.get(Official, official) is None:
                    err.print(
                        f"[red]no official {official!r}[/]: add them first "
                        "(`sipas-hub official add ID NAME`) or check `sipas-hub official list`"
                    )
                    raise typer.Exit(1)
        row, token = create_token(
            engine, name=name, role=role, official_id=official, by=_actor(actor)
        )
        with Session(engine) as s:
            ofc.audit(
                s,
                actor=_actor(actor),
                action="create",
                entity="token",
                entity_id=row.id,
                name=name,
                role=role,
                official=official,
                prefix=row.prefix,
            )
            s.commit()
    finally:
        engine.dispose()
    sys.stdout.write(token + "\n")  # stdout: the token alone, for scripts
    err.print(
        f"token {row.id} for {name} ({role}) created. [bold yellow]Store it now[/] (a password "
        "manager): it is not shown again. Lost: `sipas-hub tokens revoke "
        f"{row.id}` and create another."
    )


@app.command("list")
def list_() -> None:
    """Every token with its role and when it was last used (never the token itself)."""
    settings = Settings()
    engine = make_engine(settings.db_url)
    try:
        with Session(engine) as s:
            rows = s.exec(select(ApiToken).order_by(col(ApiToken.id))).all()
    finally:
        engine.dispose()
    t = Table()
    for c in ("id", "name", "role", "official", "prefix", "created", "last used", "revoked"):
        t.add_column(c)
    for r in rows:
        t.add_row(
            str(r.id),
            r.name,
            r.role,
            r.official_id or "",
            r.prefix,
            _when(r.created_at),
            _when(r.last_used_at),
            _when(r.revoked_at) if r.revoked_at else "",  # empty: still valid
        )
    out.print(t)
    if not rows:
        err.print("no tokens yet: `sipas-hub tokens create --name NAME --role ROLE`")


@app.command("revoke")
def revoke(token_id: int, actor: str | None = ACTOR) -> None:
    """Stop a token at once; its holder gets 401 'revoked' from then on."""
    settings = Settings()
    engine = make_engine(settings.db_url)
    try:
        with Session(engine) as s:
            before = s.get(ApiToken, token_id)
            if before is None:
                err.print(f"[red]no token with id {token_id}[/]: see `sipas-hub tokens list`")
                raise typer.Exit(1)
            if before.revoked_at is not None:
                err.print(f"token {token_id} ({before.name}) was already revoked")
                return
        row = revoke_token(engine, token_id)
        with Session(engine) as s:
            ofc.audit(
                s,
                actor=_actor(actor),
                action="revoke",
                entity="token",
                entity_id=token_id,
                name=row.name,
            )
            s.commit()
    finally:
        engine.dispose()
    err.print(f"token {token_id} ({row.name}, {row.role}) revoked")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="tokens")
