"""``sipas-provision``: the technician's tool (build, flash, provision, replace, retire, simulate)."""

from __future__ import annotations

import typer
from rich.console import Console

from provisioning.commands_registry import add_commands as add_registry_commands
from provisioning.commands_serial import add_commands as add_serial_commands

app = typer.Typer(
    help="Build, flash, provision and simulate SIPAS terminals.", no_args_is_help=True
)
err = Console(stderr=True)


@app.callback()
def main() -> None:
    """Technician commands."""


# register, build, label, replace, retire, simulate: provisioning/commands_registry.py
add_registry_commands(app)
# ports, flash-micropython, deploy, verify, run: provisioning/commands_serial.py
add_serial_commands(app)


if __name__ == "__main__":
    app()
