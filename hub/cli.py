"""``sipas-hub``: run the hub, the demo, and manage terminals."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from pathlib import Path

import typer
from rich.console import Console

from hub.broker import BrokerError
from hub.commands import channels as channel_commands
from hub.commands import firmware as firmware_commands
from hub.commands import office as office_commands
from hub.commands import report as report_commands
from hub.commands import sync as sync_commands
from hub.commands import tokens as token_commands
from hub.commands.broker import app as broker_app
from hub.config import Settings

app = typer.Typer(help="SIPAS office hub.", no_args_is_help=True)
terminals_app = typer.Typer(help="Register and list terminals.", no_args_is_help=True)
app.add_typer(terminals_app, name="terminals")
app.add_typer(broker_app, name="broker")
office_commands.register(app)
report_commands.register(app)  # sipas-hub report
channel_commands.register(app)  # qr stickers, paper ballot boxes
token_commands.register(app)
sync_commands.register(app)  # sipas-hub sync status / now
firmware_commands.register(terminals_app)  # terminals update / rollouts
err = Console(stderr=True)


@app.command()
def demo(
    terminals: int = typer.Option(3, min=1, max=50, help="simulated terminals"),
    duration: float | None = typer.Option(None, help="stop after this many seconds"),
    interval: float = typer.Option(3.0, min=0.05, help="mean seconds between presses"),
    data_dir: Path | None = typer.Option(None, help="keep the demo's data here"),
) -> None:
    """Hub + its own Mosquitto on free ports + simulated terminals, with a live table."""
    from hub.demo import run_demo

    logging.basicConfig(level=logging.WARNING)
    try:
        code = run_demo(
            terminals=terminals, duration=duration, data_dir=data_dir, interval=interval
        )
    except BrokerError as e:
        err.print(f"[red]Mosquitto:[/] {e}")
        raise typer.Exit(3) from e
    raise typer.Exit(code)


@app.command()
def run() -> None:
    """Run the hub as configured (SIPAS_HUB_* environment or .env)."""
    from hub.service import HubService

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = Settings()
    except Exception as e:
        err.print(f"[red]configuration error:[/] {e}")
        raise typer.Exit(2) from e
    if not settings.api_token:
        err.print(
            "[red]SIPAS_HUB_API_TOKEN is not set:[/] generate one with `openssl rand -hex 16`"
        )
        raise typer.Exit(2)
    hub = HubService(settings)
    try:
        hub.start()
    except BrokerError as e:
        err.print(f"[red]Mosquitto:[/] {e}")
        raise typer.Exit(3) from e
    err.print(f"hub running: MQTT {settings.mqtt_host}:{settings.mqtt_port}, API {hub.api_url}")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        hub.stop()


@terminals_app.command("add")
def terminals_add(
    desk: str | None = typer.Option(None, help="the desk this terminal sits on"),
    out: Path = typer.Option(..., help="write the device configuration (contains secrets) here"),
) -> None:
    """Register a terminal and write its device configuration (mode 0600); a running hub's
    Mosquitto accepts it at once."""
    from hub import registry
    from hub.commands.broker import apply_accounts, load_settings
    from hub.db import make_engine

    settings = load_settings()
    engine = make_engine(settings.db_url)
    try:
        _, device = registry.add_terminal(engine, office=settings.office, desk=desk)
        device.update(
            broker_host=settings.advertised_host or settings.mqtt_host,
            broker_port=settings.mqtt_port,
        )
        out.touch(mode=0o600)
        out.write_text(json.dumps(device, indent=2))
        sys.stdout.write(device["terminal_id"] + "\n")
        if settings.manage_broker:
            try:
                apply_accounts(settings, engine=engine)
            except BrokerError as e:
                err.print(
                    f"[red]registered, but the broker was not updated:[/] {e}; "
                    "run `sipas-hub broker config`"
                )
                raise typer.Exit(3) from e
    finally:
        engine.dispose()
    err.print(f"registered {device['terminal_id']}; configuration in {out} (keep it secret)")


if __name__ == "__main__":
    app()
