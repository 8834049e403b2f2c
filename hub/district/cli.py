"""``sipas-district``: run and administer the district server (docs/district.md).

Exit codes: 0 done; 2 bad input (an unknown office, a bad id); 3 the database is not ready (run
``migrate``) or cannot be reached; 1 ``integrity`` found something. Data (tokens, tables) goes to
stdout, messages to stderr. A token is printed once, when it is created, and never again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session

from hub.district import auth, integrity
from hub.district.config import DistrictSettings
from hub.district.db import SchemaNotReady, check_schema, current_revision, head_revision
from hub.district.db import make_engine as _make_engine
from hub.district.db import migrate as _migrate
from hub.district.models import Office

app = typer.Typer(help="SIPAS district server.", no_args_is_help=True)
office_app = typer.Typer(help="Offices of the district.", no_args_is_help=True)
hub_app = typer.Typer(help="Offices' hubs (their sync tokens).", no_args_is_help=True)
token_app = typer.Typer(help="API tokens of district staff and technicians.", no_args_is_help=True)
app.add_typer(office_app, name="office")
app.add_typer(hub_app, name="hub")
app.add_typer(token_app, name="token")
err = Console(stderr=True)
out = Console(soft_wrap=True)
_OFFICE = re.compile(r"^[a-z0-9-]{1,32}$")

EXIT_BAD_INPUT = 2
EXIT_DATABASE = 3


def _fail(message: str, code: int) -> typer.Exit:
    err.print(f"[red]error:[/] {escape(message)}")
    return typer.Exit(code)


def _settings() -> DistrictSettings:
    try:
        return DistrictSettings()
    except ValueError as e:
        raise _fail(f"settings (SIPAS_DISTRICT_...): {e}", EXIT_BAD_INPUT) from e


@contextmanager
def _db(ready: bool = True) -> Iterator[Engine]:
    """The database engine (checked to be at the code's schema unless ``ready`` is False)."""
    engine = _make_engine(_settings().url)
    try:
        if ready:
            try:
                check_schema(engine)
            except SchemaNotReady as e:
                raise _fail(str(e), EXIT_DATABASE) from e
            except OperationalError as e:
                raise _fail(f"cannot reach the district database: {e.orig}", EXIT_DATABASE) from e
        yield engine
    finally:
        engine.dispose()


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema (once per deployment, before starting the API)."""
    with _db(ready=False) as engine:
        try:
            before = current_revision(engine)
            _migrate(engine)
        except OperationalError as e:
            raise _fail(f"cannot reach the district database: {e.orig}", EXIT_DATABASE) from e
    head = head_revision()
    if before == head:
        err.print(f"schema already at revision {head}")
    else:
        err.print(f"schema migrated from {before or 'empty'} to revision {head}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="default SIPAS_DISTRICT_API_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="default SIPAS_DISTRICT_API_PORT")] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="API processes")] = 1,
) -> None:
    """Run the API (several --workers, or several machines behind a load balancer)."""
    import uvicorn

    settings = _settings()
    with _db():
        pass  # refuse at once, with the reason, if the schema is not ready
    err.print(
        f"district API on http://{settings.api_host if host is None else host}:"
        f"{settings.api_port if port is None else port}{'/api/v1/docs'}"
    )
    uvicorn.run(
        "hub.district.api:app_from_env",
        factory=True,
        host=settings.api_host if host is None else host,
        port=settings.api_port if port is None else port,
        workers=workers,
        proxy_headers=True,
        log_level="info",
    )


@office_app.command("add")
def office_add(
    office_id: Annotated[str, typer.Argument(metavar="ID", help="as the hub's SIPAS_HUB_OFFICE")],
    name: Annotated[str, typer.Argument(help='e.g. "UBND phường 1"')],
) -> None:
    """Add an office of the district."""
    if not _OFFICE.fullmatch(office_id):
        raise _fail(f"{office_id!r} is not an office id: 1-32 of a-z, 0-9 and -", EXIT_BAD_INPUT)
    with _db() as engine, Session(engine) as s:
        s.add(Office(id=office_id, name=name))
        try:
            s.commit()
        except IntegrityError as e:
            raise _fail(f"office {office_id} exists already", EXIT_BAD_INPUT) from e
    err.print(f"office {escape(office_id)} added; next: `sipas-district hub add {office_id}`")


@office_app.command("list")
def office_list() -> None:
    """The offices and what arrived from each."""
    with _db() as engine, Session(engine) as s:
        rows = integrity.summary(s)
    t = Table("office", "name", "forged", "suspected deletions")
    for r in rows:
        t.add_row(r["office"], r["name"], str(len(r["forged"])), str(len(r["suspected_deletions"])))
    out.print(t)


@hub_app.command("add")
def hub_add(office: Annotated[str, typer.Argument(help="the office whose hub this is")]) -> None:
    """Issue the office hub's sync token (printed once; an earlier token of the office stops
    working). Put it in the hub's SIPAS_HUB_DISTRICT_TOKEN."""
    try:
        with _db() as engine:
            row, token = auth.create_hub_token(engine, office=office)
    except ValueError as e:
        raise _fail(str(e), EXIT_BAD_INPUT) from e
    err.print(
        f"hub token for office {escape(office)} (shown once; set SIPAS_HUB_DISTRICT_TOKEN on the "
        "hub to it):"
    )
    typer.echo(token)


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option(help=" | ".join(auth.ROLES))],
    name: Annotated[str, typer.Option(help="who holds it")],
    office: Annotated[
        str | None, typer.Option(help="viewer (required) or provisioner: the one office")
    ] = None,
) -> None:
    """Create an API token (printed once)."""
    try:
        with _db() as engine:
            row, token = auth.create_token(engine, name=name, role=role, office=office)
    except ValueError as e:
        raise _fail(str(e), EXIT_BAD_INPUT) from e
    err.print(f"token {row.id} for {escape(name)} ({role}{', ' + office if office else ''}):")
    typer.echo(token)


@app.command("integrity")
def integrity_cmd(
    office: Annotated[str | None, typer.Option(help="one office only")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout")] = False,
) -> None:
    """Forged or altered ratings and suspected deletions, per office; exit 1 if any."""
    with _db() as engine, Session(engine) as s:
        if office is not None and s.get(Office, office) is None:
            raise _fail(f"no office {office!r}", EXIT_BAD_INPUT)
        rows = integrity.summary(s, None if office is None else [office])
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
    else:
        for r in rows:
            state = "[green]ok[/]" if r["ok"] else "[red]PROBLEMS[/]"
            out.print(f"[bold]{escape(r['office'])}[/] {escape(r['name'])}: {state}")
            if r["forged"]:
                t = Table("kind", "terminal", "epoch", "seq", "reason", "detected")
                for f in r["forged"]:
                    t.add_row(
                        f["kind"],
                        str(f["terminal_id"]),
                        str(f["epoch"]),
                        str(f["seq"]),
                        escape(f["reason"]),
                        str(f["detected_at"]),
                    )
                out.print(t)
            if r["suspected_deletions"]:
                t = Table("terminal", "epoch", "missing seq", "count", "signed last_seq", "since")
                for g in r["suspected_deletions"]:
                    t.add_row(
                        g["terminal_id"],
                        str(g["epoch"]),
                        f"{g['seq_from']}-{g['seq_to']}",
                        str(g["missing"]),
                        str(g["below_signed_last_seq"]),
                        str(g["detected_at"]),
                    )
                out.print(t)
    if any(not r["ok"] for r in rows):
        raise typer.Exit(1)
