"""``sipas-hub qr ...`` (the desks' QR stickers) and ``sipas-hub paper ...`` (ballot boxes).

Like the other office commands they work on the hub's database directly (run them on the hub, as
the hub's user); what they change is in the audit log with the actor (``--actor``, default
``cli:$USER``).
"""

from __future__ import annotations

import getpass
import json
import re
import sys
from datetime import date, datetime
from pathlib import Path

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from sqlmodel import Session, col, select

from hub import office as ofc
from hub.channels import paper, qr, sticker
from hub.config import Settings
from hub.db import make_engine
from hub.models import Desk

out = Console()
err = Console(stderr=True)
qr_app = typer.Typer(help="QR codes of the desks (citizens rate with their phone).")
paper_app = typer.Typer(help="Paper ballot boxes: minutes and tallies (biên bản mở hòm phiếu).")
ACTOR = typer.Option(None, "--actor", help="who does this (default cli:$USER)")


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as e:
        err.print(f"[red]configuration error:[/] {e}")
        raise typer.Exit(2) from e


# -- qr ----------------------------------------------------------------------------------------------
@qr_app.command("sticker")
def qr_sticker(
    desk: str = typer.Option(..., help="the desk's id"),
    out_file: Path = typer.Option(..., "--out", help="a .png or .pdf file (A6, 300 dpi)"),
    lang: str = typer.Option("vi", help="vi or en"),
) -> None:
    """Print a desk's QR sticker: office, desk name, QR code, short instructions."""
    st = _settings()
    engine = make_engine(st.db_url)
    try:
        ch = qr.QrChannel.from_settings(engine, st)
        with Session(engine) as s:
            d = s.get(Desk, desk)
        if d is None or d.office != st.office:
            err.print(f"[red]desk {desk} does not exist:[/] create it with `sipas-hub desk add`")
            raise typer.Exit(1)
        url = ch.url(d.id)
        img = sticker.render(
            url=url, desk_name=d.name, office=st.office, lang=lang, wifi_name=st.qr_wifi_name
        )
        sticker.write(img, out_file)
    except sticker.StickerError as e:
        err.print(f"[red]{e}[/]")
        raise typer.Exit(1) from e
    finally:
        engine.dispose()
    warning = qr.unreachable_warning(url)
    if warning:
        err.print(f"[yellow]warning:[/] {warning}")
    sys.stdout.write(url + "\n")
    err.print(f"sticker for desk {desk} written to {out_file}")


@qr_app.command("url")
def qr_url(desk: str | None = typer.Option(None, help="one desk (default: every desk)")) -> None:
    """The URL each desk's QR code opens (data on stdout, warnings on stderr)."""
    st = _settings()
    engine = make_engine(st.db_url)
    try:
        ch = qr.QrChannel.from_settings(engine, st)
        with Session(engine) as s:
            q = select(Desk).where(Desk.office == st.office).order_by(col(Desk.id))
            desks = list(s.exec(q).all())
        if desk is not None:
            desks = [d for d in desks if d.id == desk]
            if not desks:
                err.print(f"[red]desk {desk} does not exist[/]")
                raise typer.Exit(1)
        for d in desks:
            sys.stdout.write(f"{d.id}\t{ch.url(d.id)}\n")
        warning = qr.unreachable_warning(ch.config.base_url)
        if warning:
            err.print(f"[yellow]warning:[/] {warning}")
    finally:
        engine.dispose()


# -- paper -------------------------------------------------------------------------------------------
_TALLY = re.compile(r"^(?:(?P<field>[^:=]+):)?(?P<level>\d)=(?P<count>\d+)$")


def _tally(text: str) -> paper.TallyIn:
    m = _TALLY.fullmatch(text.strip())
    if m is None:
        raise typer.BadParameter(f"{text!r}: write LEVEL=COUNT or FIELD:LEVEL=COUNT, e.g. 1=40")
    return paper.TallyIn(
        level=int(m["level"]),
        count=int(m["count"]),
        field=m["field"].strip() if m["field"] else None,
    )


def _when(text: str) -> datetime | date:
    try:
        return date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
    except ValueError as e:
        raise typer.BadParameter(f"{text!r}: write 2026-11-30 or 2026-11-30 16:30") from e


@paper_app.command("record")
def paper_record(
    desk: str | None = typer.Option(None, help="the box's desk (default: the whole office)"),
    opened: str | None = typer.Option(None, help="when the box was opened, office time"),
    period_from: str | None = typer.Option(None, "--from", help="first day the box covers"),
    period_to: str | None = typer.Option(None, "--to", help="last day the box covers"),
    witness: list[str] = typer.Option([], help="a witness's name (give each, at least two)"),
    seal_intact: bool | None = typer.Option(
        None, "--seal-intact/--seal-broken", help="the lock and seal as found"
    ),
    ballots: int | None = typer.Option(None, min=0, help="ballots found in the box"),
    invalid: int = typer.Option(0, min=0, help="invalid ballots among them"),
    scale: int | None = typer.Option(None, min=3, max=5, help="levels on the ballot"),
    tally: list[str] = typer.Option([], help="LEVEL=COUNT or FIELD:LEVEL=COUNT, e.g. 1=40"),
    note: str | None = typer.Option(None, help="remarks (required if the seal was broken)"),
    supersedes: int | None = typer.Option(None, help="the record this one corrects"),
    from_json: Path | None = typer.Option(
        None, "--json", help="the whole record as JSON (the API's body) instead of the options"
    ),
    actor: str | None = ACTOR,
) -> None:
    """Record an opened ballot box: the minutes and the tallies per level."""
    try:
        if from_json is not None:
            data = paper.PaperBoxCreate.model_validate_json(from_json.read_bytes())
        else:
            missing = [
                name
                for name, v in (
                    ("--opened", opened),
                    ("--from", period_from),
                    ("--to", period_to),
                    ("--seal-intact or --seal-broken", seal_intact),
                    ("--ballots", ballots),
                    ("--scale", scale),
                )
                if v is None
            ]
            if missing:
                err.print(f"[red]missing:[/] {', '.join(missing)} (or give --json FILE)")
                raise typer.Exit(2)
            data = paper.PaperBoxCreate(
                desk_id=desk,
                opened_at=datetime.fromisoformat(str(opened)),
                period_start=_when(str(period_from)),
                period_end=_when(str(period_to)),
                witnesses=witness,
                seal_intact=bool(seal_intact),
                ballots=int(ballots or 0),
                invalid_ballots=invalid,
                scale=int(scale or 0),
                tallies=[_tally(t) for t in tally],
                note=note,
                supersedes=supersedes,
            )
    except (ValidationError, ValueError) as e:
        err.print(f"[red]not recorded:[/] {e}")
        raise typer.Exit(2) from e
    st = _settings()
    engine = make_engine(st.db_url)
    try:
        with Session(engine) as s:
            box = paper.record_box(
                s, office=st.office, data=data, actor=actor or f"cli:{getpass.getuser()}"
            )
            s.commit()
            s.refresh(box)
            result = paper.box_out(s, box)
        if not box.seal_intact:
            paper.raise_seal_alert(engine, st.office, box)
    except ofc.OfficeError as e:
        err.print(f"[red]not recorded:[/] {e}")
        raise typer.Exit(1) from e
    finally:
        engine.dispose()
    sys.stdout.write(f"{result.id}\n")
    what = "correction of record " + str(supersedes) if data.supersedes else "box"
    err.print(
        f"recorded {what} as record {result.id}: {result.valid_ballots} valid ballots"
        + ("; [red]seal broken: an alert was raised[/]" if result.seal_broken else "")
    )


@paper_app.command("list")
def paper_list(
    all_records: bool = typer.Option(False, "--all", help="also records later corrected"),
    as_json: bool = typer.Option(False, "--json", help="JSON on stdout"),
) -> None:
    """Opened ballot boxes, newest first."""
    st = _settings()
    engine = make_engine(st.db_url)
    try:
        with Session(engine) as s:
            boxes = paper.list_boxes(s, office=st.office, include_superseded=all_records)
    finally:
        engine.dispose()
    if as_json:
        sys.stdout.write(json.dumps([b.model_dump(mode="json") for b in boxes], indent=1) + "\n")
        return
    t = Table()
    for c in ("id", "desk", "opened", "period", "seal", "ballots", "invalid", "per level", "note"):
        t.add_column(c)
    for b in boxes:
        levels: dict[int, int] = {}
        for x in b.tallies:
            levels[x.level] = levels.get(x.level, 0) + x.count
        t.add_row(
            str(b.id) + (f" (corrected by {b.superseded_by})" if b.superseded_by else ""),
            b.desk_id or "(office)",
            b.opened_at.astimezone(ofc.OFFICE_TZ).strftime("%d/%m/%Y %H:%M"),
            f"{b.period_start.astimezone(ofc.OFFICE_TZ):%d/%m/%Y}"
            f"–{b.period_end.astimezone(ofc.OFFICE_TZ):%d/%m/%Y}",
            "intact" if b.seal_intact else "[red]BROKEN[/]",
            str(b.ballots),
            str(b.invalid_ballots),
            " ".join(f"{k}:{v}" for k, v in sorted(levels.items())),
            b.note or "",
        )
    out.print(t)


def register(app: typer.Typer) -> None:
    app.add_typer(qr_app, name="qr")
    app.add_typer(paper_app, name="paper")
