"""``sipas-provision``: the technician's tool. This first version runs a simulated terminal."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(
    help="Build, flash, provision and simulate SIPAS terminals.", no_args_is_help=True
)
err = Console(stderr=True)


@app.callback()
def main() -> None:
    """Technician commands."""


@app.command()
def simulate(
    config: Path = typer.Argument(..., exists=True, help="device configuration JSON"),
    workdir: Path = typer.Option(Path("sim-terminal"), help="where the simulated flash lives"),
) -> None:
    """Run the firmware application on this PC; type a level (1-5) and Enter to press a button."""
    from app.config import ConfigError

    from provisioning.simulate import SimTerminal, load_config

    try:
        sim = SimTerminal(
            load_config(config),
            workdir,
            on_feedback=lambda kind, level: err.print(f"[green]{kind}[/] {level}"),
        )
    except ConfigError as e:
        err.print(f"[red]bad configuration:[/] {e}")
        raise typer.Exit(2) from e
    sim.start()
    err.print(
        f"terminal {sim.terminal_id} running; type 1-{sim.cfg['scale']} and Enter, Ctrl-D to stop"
    )
    try:
        for line in sys.stdin:
            line = line.strip()
            if line.isdigit() and 1 <= int(line) <= sim.cfg["scale"]:
                seq = sim.press(int(line))
                err.print(f"stored as seq {seq}; outbox depth {sim.depth()}")
            elif line:
                err.print(f"type a level from 1 to {sim.cfg['scale']}")
        deadline = time.monotonic() + 10
        while sim.depth() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        sim.stop()
    if sim.depth():
        err.print(
            f"[yellow]{sim.depth()} ratings still in the outbox; they are sent on next start[/]"
        )


if __name__ == "__main__":
    app()
