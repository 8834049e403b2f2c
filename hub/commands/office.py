"""Office records from the command line: desks, officials, duty, cases, exclusions, audit, verify.

These work on the hub's database directly (run them on the hub, as the hub's user). Every change is
written to the audit log with the actor (``--actor``, default ``cli:$USER``).
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import typer
from rich.console import Console
from rich.table import Table
from sqlmodel import Session, col, select

from hub import integrity
from hub import office as ofc
from hub import ratings_query as rq
from hub.config import Settings
from hub.db import make_engine
from hub.models import AuditLog, Desk, Official, utcnow

out = Console()
err = Console(stderr=True)
desk_app = typer.Typer(help="Desks (quầy).", no_args_is_help=True)
official_app = typer.Typer(help="Officials (công chức).", no_args_is_help=True)
duty_app = typer.Typer(help="Check-in / check-out at desks.", no_args_is_help=True)
case_app = typer.Typer(help="Cases handed back (hồ sơ đã trả kết quả).", no_args_is_help=True)
rating_app = typer.Typer(
    help="Exclusions and corrections of ratings (never deletions).", no_args_is_help=True
)

ACTOR = typer.Option(None, "--actor", help="who does this (default cli:$USER)")


@contextmanager
def session() -> Iterator[tuple[Session, str]]:
    settings = Settings()
    engine = make_engine(settings.db_url)
    try:
        with Session(engine) as s:
            yield s, settings.office
    except ofc.OfficeError as e:
        err.print(f"[red]{e}[/]")
        raise typer.Exit(1) from e
    finally:
        engine.dispose()


def _actor(actor: str | None) -> str:
    return actor or f"cli:{getpass.getuser()}"


def _table(*cols: str) -> Table:
    t = Table()
    for c in cols:
        t.add_column(c)
    return t


@desk_app.command("add")
def desk_add(
    id: str,
    name: str,
    requires_case: bool = typer.Option(False, help="exclude presses with no case"),
    actor: str | None = ACTOR,
) -> None:
    with session() as (s, office):
        ofc.create_desk(
            s,
            office=office,
            data=ofc.DeskCreate(id=id, name=name, requires_case=requires_case),
            actor=_actor(actor),
        )
        s.commit()
    err.print(f"desk {id} created")


@desk_app.command("list")
def desk_list() -> None:
    with session() as (s, office):
        t = _table("id", "name", "requires case", "on duty now")
        for d in s.exec(select(Desk).where(Desk.office == office).order_by(col(Desk.id))):
            t.add_row(
                d.id,
                d.name,
                "yes" if d.requires_case else "",
                ofc.on_duty(s, desk_id=d.id, at=utcnow()) or "-",
            )
    out.print(t)


@official_app.command("add")
def official_add(id: str, name: str, actor: str | None = ACTOR) -> None:
    with session() as (s, office):
        ofc.create_official(
            s, office=office, data=ofc.OfficialCreate(id=id, name=name), actor=_actor(actor)
        )
        s.commit()
    err.print(f"official {id} created")


@official_app.command("list")
def official_list() -> None:
    with session() as (s, office):
        t = _table("id", "name", "active")
        for o in s.exec(
            select(Official).where(Official.office == office).order_by(col(Official.id))
        ):
            t.add_row(o.id, o.name, "yes" if o.active else "no")
    out.print(t)


@official_app.command("deactivate")
def official_deactivate(id: str, actor: str | None = ACTOR) -> None:
    with session() as (s, _):
        ofc.set_official_active(s, official_id=id, active=False, actor=_actor(actor))
        s.commit()
    err.print(f"official {id} deactivated (their history stays)")


@duty_app.command("in")
def duty_in(
    desk: str,
    official: str,
    at: datetime | None = typer.Option(None, help="office time, default now"),
    actor: str | None = ACTOR,
) -> None:
    with session() as (s, office):
        ofc.check_in(
            s,
            office=office,
            req=ofc.DutyRequest(desk_id=desk, official_id=official, at=at),
            actor=_actor(actor),
        )
        s.commit()
    err.print(f"{official} checked in at {desk}")


@duty_app.command("out")
def duty_out(
    desk: str,
    at: datetime | None = typer.Option(None, help="office time, default now"),
    actor: str | None = ACTOR,
) -> None:
    with session() as (s, office):
        ev = ofc.check_out(
            s, office=office, req=ofc.DutyRequest(desk_id=desk, at=at), actor=_actor(actor)
        )
        s.commit()
        err.print(f"{ev.official_id} checked out of {desk}")


@case_app.command("handed-back")
def case_handed_back(
    code: str,
    desk: str = typer.Option(...),
    field: str | None = None,
    procedure: str | None = None,
    actor: str | None = ACTOR,
) -> None:
    """Record a hand-back (the running hub's API also lights the terminal's prompt; this does not)."""
    with session() as (s, office):
        case, created = ofc.record_case(
            s,
            office=office,
            data=ofc.CaseCreate(
                code=code, desk_id=desk, field=field, procedure=procedure, source="cli"
            ),
            actor=_actor(actor),
        )
        s.commit()
        err.print(f"case {code} {'recorded' if created else 'was already recorded'} (id {case.id})")


@rating_app.command("exclude")
def rating_exclude(
    rating_id: int,
    reason: str = typer.Option(..., help=", ".join(ofc.MANUAL_REASONS)),
    note: str | None = None,
    actor: str | None = ACTOR,
) -> None:
    with session() as (s, _):
        ex = ofc.exclude(s, rating_id=rating_id, reason=reason, note=note, actor=_actor(actor))
        s.commit()
        err.print(f"rating {rating_id} excluded (exclusion {ex.id}: {ofc.MANUAL_REASONS[reason]})")


@rating_app.command("reinstate")
def rating_reinstate(exclusion_id: int, note: str | None = None, actor: str | None = ACTOR) -> None:
    with session() as (s, _):
        ofc.reinstate(s, exclusion_id=exclusion_id, note=note, actor=_actor(actor))
        s.commit()
    err.print(f"exclusion {exclusion_id} taken back")


@rating_app.command("correct")
def rating_correct(
    rating_id: int,
    official: str = typer.Option(
        ..., "--official", help="the official it belongs to; '-' for nobody"
    ),
    reason: str = typer.Option(..., help="why (e.g. the wrong official was checked in)"),
    actor: str | None = ACTOR,
) -> None:
    """Re-attribute a rating to another official (the rating itself is never changed)."""
    with session() as (s, _):
        c = rq.correct(
            s,
            rating_id=rating_id,
            official_id=None if official == "-" else official,
            reason=reason,
            actor=_actor(actor),
        )
        s.commit()
        err.print(
            f"rating {rating_id} now belongs to {c.official_id or 'nobody'} (correction {c.id})"
        )


@rating_app.command("uncorrect")
def rating_uncorrect(
    correction_id: int, note: str | None = None, actor: str | None = ACTOR
) -> None:
    """Take a correction back: the official before it applies again."""
    with session() as (s, _):
        rq.reverse_correction(s, correction_id=correction_id, note=note, actor=_actor(actor))
        s.commit()
    err.print(f"correction {correction_id} reversed")


def audit(limit: int = typer.Option(50, min=1), entity: str | None = None) -> None:
    """The audit log, newest first."""
    with session() as (s, _):
        q = select(AuditLog)
        if entity:
            q = q.where(AuditLog.entity == entity)
        t = _table("time (ICT)", "actor", "action", "entity", "detail")
        for a in s.exec(q.order_by(col(AuditLog.id).desc()).limit(limit)):
            t.add_row(
                a.at.astimezone(ofc.OFFICE_TZ).strftime("%d/%m/%Y %H:%M:%S"),
                a.actor,
                a.action,
                f"{a.entity} {a.entity_id}",
                json.dumps(json.loads(a.detail), ensure_ascii=False),
            )
    out.print(t)


def verify() -> None:
    """Recheck every stored rating: signed bytes, hash chain, sequence gaps. Exit 1 on findings."""
    settings = Settings()
    engine = make_engine(settings.db_url)
    from hub.channels import qr

    rep = integrity.merge(
        integrity.verify(engine, settings.office),
        qr.verify(engine, settings.office, qr.QrKeys.load(settings.data_dir)),
    )
    engine.dispose()
    if rep.ok:
        err.print(f"[green]OK[/]: {rep.ratings} ratings from {rep.terminals} terminals verified")
        return
    t = _table("terminal", "rating", "finding", "detail")
    for f in rep.findings:
        t.add_row(f.terminal_id, str(f.rating_id or ""), f.kind, f.detail)
    out.print(t)
    err.print(f"[red]{len(rep.findings)} findings[/] in {rep.ratings} ratings")
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(desk_app, name="desk")
    app.add_typer(official_app, name="official")
    app.add_typer(duty_app, name="duty")
    app.add_typer(case_app, name="case")
    app.add_typer(rating_app, name="rating")
    app.command()(audit)
    app.command()(verify)
