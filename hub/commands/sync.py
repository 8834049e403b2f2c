"""``sipas-hub sync``: how the sync to the district goes, and one round now.

Run on the hub, as the hub's user: these read the hub's database (the service writes every
stream's state there) and ``sync now`` sends with the hub's settings. A file lock in the data
directory keeps it from sending the same batch as the running service at the same moment.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from datetime import datetime
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from hub import office as ofc
from hub import sync
from hub.config import Settings
from hub.db import make_engine

out = Console()
err = Console(stderr=True)
app = typer.Typer(help="Sync to the district server (đồng bộ lên huyện).", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="sync")


def _settings() -> Settings:
    try:
        return Settings()
    except Exception as e:
        err.print(f"[red]configuration error:[/] {e}")
        raise typer.Exit(2) from e


def _when(iso: str | None) -> str:
    if not iso:
        return "-"
    t = datetime.fromisoformat(iso).astimezone(ofc.OFFICE_TZ)
    return t.strftime("%d/%m/%Y %H:%M:%S")


def _ago(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def _table(st: dict[str, Any]) -> Table:
    t = Table(title=f"sync {st['office']} → {st['district_url'] or '(not configured)'}")
    for c in ("stream", "behind", "waiting", "last success", "last error", "next attempt"):
        t.add_column(c, justify="right" if c in ("behind", "waiting") else "left")
    for x in st["streams"]:
        t.add_row(
            x["stream"],
            f"{x['behind_items']:,}",
            _ago(x["behind_s"]) if x["behind_items"] else "-",
            _when(x["last_success_at"]),
            f"[red]{x['last_error']}[/]" if x["failing_since"] and x["last_error"] else "-",
            _when(x["next_attempt_at"]),
        )
    return t


def _status(settings: Settings) -> dict[str, Any]:
    engine = make_engine(settings.db_url)
    try:
        return sync.status(
            engine,
            settings.office,
            district_url=settings.district_url or None,
            alert_after_s=settings.sync_alert_after_minutes * 60,
        )
    finally:
        engine.dispose()


@app.command("status")
def status_cmd(
    as_json: bool = typer.Option(False, "--json", help="print the status as JSON"),
) -> None:
    """Per stream: items the district does not have yet, how long they have waited, the last
    success and error, the next attempt. Exit code 1 while sync is failing."""
    settings = _settings()
    st = _status(settings)
    if as_json:
        out.print_json(json.dumps(st))
    else:
        out.print(_table(st))
    if not st["configured"]:
        err.print(
            "sync is off: set SIPAS_HUB_DISTRICT_URL and SIPAS_HUB_DISTRICT_TOKEN "
            "(/etc/sipas/hub.env) and restart the hub"
        )
    elif not st["ok"]:
        err.print(
            f"[red]sync is failing since {_when(st['failing_since'])}[/]: check the district's "
            "address and the hub token, and that the district server is up; then "
            "`sipas-hub sync now`"
        )
        raise typer.Exit(1)


@app.command("now")
def now_cmd(
    rounds: int = typer.Option(1000, min=1, help="stop after this many rounds"),
) -> None:
    """Send everything waiting now (back-off pauses and partial-batch waits ignored), until
    nothing is left or a batch fails. Exit code 1 if something could not be sent."""
    from hub.alerts import AlertEngine

    settings = _settings()
    if not (settings.district_url and settings.district_token):
        err.print(
            "[red]sync is not configured:[/] set SIPAS_HUB_DISTRICT_URL and "
            "SIPAS_HUB_DISTRICT_TOKEN (the token comes from `sipas-district hub add "
            f"{settings.office}` on the district server)"
        )
        raise typer.Exit(2)
    engine = make_engine(settings.db_url)
    alerts = AlertEngine(engine, settings.office, rules=settings.alert_rules)
    sender = sync.SyncSender.from_settings(engine, settings, alerts=alerts)
    try:
        before = sync.status(engine, settings.office, district_url=sender.url, alert_after_s=0)
        busy = out.status("sending to the district...") if out.is_terminal else nullcontext()
        with busy:
            for _ in range(rounds):
                if not sender.run_once(force=True, wait_lock=sender_wait(settings)):
                    break
        st = sync.status(
            engine, settings.office, district_url=sender.url, alert_after_s=sender.alert_after_s
        )
    finally:
        sender.stop()
        alerts.close()
        engine.dispose()
    out.print(_table(st))
    sent = before["behind_items"] - st["behind_items"]
    if not st["ok"]:
        err.print(f"[red]sync failed[/] ({max(sent, 0):,} items sent): see the last error above")
        raise typer.Exit(1)
    if st["behind_items"]:
        err.print(
            f"sent {max(sent, 0):,} items; {st['behind_items']:,} still waiting: run it again"
        )
        raise typer.Exit(1)
    err.print(f"sent {max(sent, 0):,} items; the district is up to date")


def sender_wait(settings: Settings) -> float:
    """How long to wait for the service's round in progress (one request at most)."""
    return settings.sync_timeout_s + 5
