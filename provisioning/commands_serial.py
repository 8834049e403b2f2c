"""``sipas-provision`` commands that talk to a board on a USB serial port: ports,
flash-micropython, deploy, verify and run (one terminal, or ``--batch terminals.csv``).
``add_commands(app)`` puts them on the tool's typer app (provisioning/cli.py).

Exit codes (as the other commands): 0 done; 2 bad input (a wrong firmware file, a record, a
bundle, an option); 3 the hub refused or could not be reached; 4 no district key; 5 the board or
its port failed (no port, no answer, a damaged copy); 6 the terminal did not pass verification.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from provisioning import records
from provisioning.commands_registry import (
    BrokerHost,
    District,
    DistrictToken,
    Hub,
    InsecureDistrict,
    RecordsDir,
    Token,
)
from provisioning.hubapi import HubClient, HubError
from provisioning.serial_deploy import DeployProgress
from provisioning.serial_flash import FlashProgress
from provisioning.serial_verify import VerifyProgress

EXIT_BAD_INPUT = 2
EXIT_HUB = 3
EXIT_DEVICE = 5
EXIT_VERIFY = 6

err = Console(stderr=True)
out = Console()

Port = Annotated[
    str,
    typer.Option(
        "--port", "-p", envvar="SIPAS_PROVISION_PORT", help="the board's serial port (`ports`)"
    ),
]


def _fail(message: str, code: int) -> typer.Exit:
    err.print(f"[red]error:[/] {escape(message)}")
    return typer.Exit(code)


def _bar(*, bytes_: bool = False) -> Progress:
    cols: list[Any] = [TextColumn("{task.description:<28}"), BarColumn()]
    cols.append(DownloadColumn() if bytes_ else TextColumn("{task.completed}/{task.total}"))
    cols.append(TimeElapsedColumn())
    return Progress(*cols, console=err, transient=False)


# -- ports -----------------------------------------------------------------------------------------
def ports(
    detect: Annotated[
        bool, typer.Option(help="ask each board which chip it is (resets the board)")
    ] = True,
    all_ports: Annotated[
        bool, typer.Option("--all", help="also built-in serial ports (ttyS*), not only USB")
    ] = False,
) -> None:
    """List USB serial ports and the Espressif chip on each (with the terminal id it would get)."""
    from provisioning.serial_ports import NO_PORT_HINT, serial_ports
    from provisioning.serial_ports import detect as detect_chip_on

    found = serial_ports(include_builtin=all_ports)
    if not found:
        raise _fail(NO_PORT_HINT, EXIT_DEVICE)
    table = Table(title="Serial ports")
    for col in ("port", "USB bridge", "chip", "terminal id"):
        table.add_column(col)
    with err.status("asking each board which chip it is...") if detect else _null():
        for p in found:
            bridge = p.bridge or (f"USB {p.usb}" if p.usb else "built-in UART")
            if not detect:
                table.add_row(p.device, bridge, "-", "-")
                continue
            d = detect_chip_on(p.device)
            if d.chip is None:
                chip = f"[yellow]no chip answered[/] ({escape(d.error or '')})"
                tid = "-"
            else:
                chip = escape(d.chip)
                if d.family != "ESP32":
                    chip += " [red](not an ESP32: not a SIPAS board)[/]"
                tid = records.terminal_id_from_chip(d.mac) if d.mac else "-"
            table.add_row(p.device, bridge, chip, tid)
    out.print(table)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# -- flash-micropython -----------------------------------------------------------------------------
class _FlashBars(FlashProgress):
    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.task: TaskID | None = None

    def stage(self, name: str) -> None:
        if self.task is not None:
            self.bar.update(self.task, completed=self.bar.tasks[self.task].total or 0)
        total = None if name in ("connect", "erase") else 1
        self.task = self.bar.add_task(
            {"connect": "connecting", "erase": "erasing flash (~10 s)", "write": "writing"}.get(
                name, name
            ),
            total=total,
        )

    def advance(self, done: int, total: int) -> None:
        if self.task is not None:
            self.bar.update(self.task, completed=done, total=total)

    def line(self, text: str) -> None:
        if os.environ.get("SIPAS_PROVISION_VERBOSE"):
            err.print(f"[dim]{escape(text)}[/]")


def flash_micropython(
    port: Port,
    firmware: Annotated[
        Path, typer.Option("--firmware", help="ESP32_GENERIC .bin from micropython.org")
    ],
    erase: Annotated[bool, typer.Option(help="erase the whole flash first")] = True,
    baud: Annotated[int, typer.Option(help="serial speed while writing")] = 460800,
) -> None:
    """Erase the board and write MicroPython at 0x1000 (the file is checked first)."""
    from provisioning.serial_flash import FlashError
    from provisioning.serial_flash import flash_micropython as do_flash
    from provisioning.serial_image import ImageError

    with _bar() as bar:
        try:
            res = do_flash(port, firmware, progress=_FlashBars(bar), erase=erase, baud=baud)
        except ImageError as e:
            raise _fail(str(e), EXIT_BAD_INPUT) from e
        except FlashError as e:
            raise _fail(str(e), EXIT_DEVICE) from e
    tid = records.terminal_id_from_chip(res.mac)
    err.print(f"MicroPython written to {res.chip} on {port}; this board's terminal id: {tid}")
    out.print(tid, highlight=False)


# -- deploy ----------------------------------------------------------------------------------------
class _DeployBars(DeployProgress):
    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.overall: TaskID | None = None
        self.file: TaskID | None = None

    def comparing(self, total: int) -> None:
        self.overall = self.bar.add_task("files checked", total=total)

    def file_started(self, device_path: str, size: int) -> None:
        self.file = self.bar.add_task(device_path, total=max(size, 1))

    def file_progress(self, device_path: str, done: int, size: int) -> None:
        if self.file is not None:
            self.bar.update(self.file, completed=done)

    def file_done(self, device_path: str) -> None:
        if self.file is not None:
            self.bar.update(self.file, completed=self.bar.tasks[self.file].total)

    def note(self, message: str) -> None:
        self.bar.console.print(f"[dim]{escape(message)}[/]")


def deploy(
    bundle_dir: Annotated[Path, typer.Argument(help="the bundle (from `build`)")],
    port: Port,
    reset: Annotated[bool, typer.Option(help="reset the board afterwards")] = True,
    record: Annotated[
        Path | None, typer.Option(help="note the deploy in this terminal's record")
    ] = None,
) -> None:
    """Copy the bundle's changed files to the board (sha256 checked there), then reset.

    Files in /app that the bundle does not list are removed; an over-the-air update in progress
    is cancelled; the update counter /ota_count is raised to this computer's clock (never
    lowered), so update commands signed before are refused. Deploying the same bundle again
    copies nothing."""
    from provisioning.serial_deploy import DeployError
    from provisioning.serial_deploy import deploy as do_deploy

    with _bar(bytes_=True) as bar:
        try:
            res = do_deploy(port, bundle_dir, progress=_DeployBars(bar), reset=reset)
        except DeployError as e:
            raise _fail(str(e), EXIT_DEVICE) from e
    if record is not None:
        _note(
            record,
            "deployed",
            version=res.version,
            copied=len(res.copied),
            port=port,
            ota_count=res.ota_count,
        )
    counter = f"/ota_count {res.ota_count}"
    if not res.ota_count_written:
        counter = (
            f"/ota_count kept at {res.ota_count} (the board's, not below this computer's clock)"
        )
    err.print(
        f"bundle {res.version} on {port}: {len(res.copied)} copied ({res.bytes_copied} bytes), "
        f"{len(res.unchanged)} already there, {len(res.removed)} removed; {counter}"
        + ("; board reset" if reset else "")
    )
    for path in res.copied:
        out.print(path, highlight=False)


def _note(record: Path, event: str, **detail: Any) -> None:
    try:
        rec = records.load(record)
    except records.RecordError as e:
        raise _fail(str(e), EXIT_BAD_INPUT) from e
    records.add_event(rec, event, **detail)
    records.save(record, rec)


# -- verify ----------------------------------------------------------------------------------------
class _VerifyUI(VerifyProgress):
    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet

    def step(self, name: str) -> None:
        text = {
            "boot": "resetting the board and waiting for it to reach the hub",
            "test press": "making a technician test press",
            "hub": "checking the hub stored it",
            "reset": "resetting the board for service",
        }.get(name, name)
        err.print(f"[bold]·[/] {text}...")

    def serial_line(self, line: str) -> None:
        if not self.quiet:
            err.print(f"  [dim]{escape(line)}[/]")


def _hub_for(rec: dict[str, Any], hub: str, token: str) -> HubClient:
    url = hub or str(rec.get("hub") or "")
    if not url:
        raise _fail("no hub: pass --hub http://HOST:PORT or set SIPAS_PROVISION_HUB", 2)
    try:
        return HubClient(url, token)
    except HubError as e:
        raise _fail(str(e), EXIT_BAD_INPUT) from e


def verify(
    port: Port,
    record: Annotated[Path, typer.Option(help="the terminal's record (from `register`)")],
    hub: Hub = "",
    token: Token = "",
    boot_timeout: Annotated[float, typer.Option(help="seconds to reach the hub")] = 60,
    ack_timeout: Annotated[float, typer.Option(help="seconds for the test press")] = 30,
) -> None:
    """Watch the terminal boot and reach the hub, then round-trip a technician test press.

    The test press is flagged TEST: every report excludes it."""
    from provisioning.serial_verify import VerifyError
    from provisioning.serial_verify import verify as do_verify

    try:
        rec = records.load(record)
    except records.RecordError as e:
        raise _fail(str(e), EXIT_BAD_INPUT) from e
    with _hub_for(rec, hub, token) as client:
        try:
            res = do_verify(
                port,
                rec["terminal_id"],
                client,
                boot_timeout=boot_timeout,
                ack_timeout=ack_timeout,
                progress=_VerifyUI(),
            )
        except VerifyError as e:
            raise _fail(str(e), EXIT_VERIFY) from e
    records.add_event(
        rec, "verified", rating_id=res.rating_id, seq=res.seq, epoch=res.epoch, port=port
    )
    records.save(record, rec)
    err.print(
        f"[green]{res.terminal_id} verified:[/] online {res.online_after_s:.0f} s after reset; "
        f"test press seq {res.seq} stored by the hub as rating {res.rating_id} (TEST, excluded "
        "from reports)"
    )
    out.print(res.terminal_id, highlight=False)


# -- run -------------------------------------------------------------------------------------------
def run(
    port: Annotated[
        str | None,
        typer.Option("--port", "-p", help="the board's port, or 'next' for the next one plugged"),
    ] = None,
    firmware: Annotated[
        Path | None, typer.Option(help="ESP32_GENERIC .bin from micropython.org")
    ] = None,
    desk: Annotated[str | None, typer.Option(help="the desk the terminal goes on")] = None,
    batch: Annotated[
        Path | None,
        typer.Option(help="CSV with one terminal per row: port,desk[,wifi_ssid,scale,...]"),
    ] = None,
    stop_on_error: Annotated[
        bool, typer.Option(help="in a batch, stop at the first failed terminal")
    ] = False,
    skip_flash: Annotated[
        bool, typer.Option(help="MicroPython is already on the board: do not erase it")
    ] = False,
    chip_id: Annotated[
        str | None, typer.Option(help="with --skip-flash: the chip id (else asked from the chip)")
    ] = None,
    hub: Hub = "",
    token: Token = "",
    records_dir: RecordsDir = records.DEFAULT_RECORDS_DIR,
    bundles_dir: Annotated[
        Path, typer.Option("--bundles", help="where each terminal's bundle is built")
    ] = Path("bundles"),
    district: District = None,
    district_token: DistrictToken = None,
    insecure_hub_district_key: InsecureDistrict = False,
    broker_host: BrokerHost = None,
    wifi_ssid: Annotated[str | None, typer.Option(help="the office's Wi-Fi network")] = None,
    wifi_password: Annotated[
        str | None,
        typer.Option(envvar="SIPAS_PROVISION_WIFI_PASSWORD", help="better in the environment"),
    ] = None,
    scale: Annotated[int | None, typer.Option(help="rating levels: 3, 4 or 5")] = None,
    py: Annotated[bool, typer.Option("--py", help="ship .py instead of .mpy (tests)")] = False,
    boot_timeout: Annotated[float, typer.Option(help="seconds to reach the hub")] = 60,
) -> None:
    """Flash, register, build, deploy and verify a terminal (or --batch a CSV of them).

    Each terminal stops at its first failed step with what to do; in a batch the others go on
    unless --stop-on-error."""
    from provisioning.serial_pipeline import BatchError, Job, Options, load_batch, run_batch

    if (batch is None) == (port is None):
        raise _fail("give --port (one terminal) or --batch terminals.csv, one of them", 2)
    if firmware is None and not skip_flash:
        raise _fail("give --firmware ESP32_GENERIC.bin, or --skip-flash", 2)
    if not hub:
        raise _fail("no hub: pass --hub http://HOST:PORT or set SIPAS_PROVISION_HUB", 2)
    opts = Options(
        hub=hub,
        token=token,
        firmware=firmware,
        skip_flash=skip_flash,
        records_dir=records_dir,
        bundles_dir=bundles_dir,
        district=district,
        district_token=district_token,
        insecure_hub_district_key=insecure_hub_district_key,
        broker_host=broker_host,
        compiled=not py,
        boot_timeout=boot_timeout,
    )
    settings = {"wifi_ssid": wifi_ssid, "wifi_password": wifi_password, "scale": scale}
    if batch is not None:
        try:
            jobs = load_batch(batch, settings)
        except BatchError as e:
            raise _fail(str(e), EXIT_BAD_INPUT) from e
    else:
        assert port is not None
        jobs = [Job(port=port, desk=desk, chip_id=chip_id, settings=settings)]
    outcomes = run_batch(jobs, opts, console=err, stop_on_error=stop_on_error)
    table = Table(title="Terminals")
    for col in ("#", "port", "desk", "terminal id", "result"):
        table.add_column(col)
    for i, o in enumerate(outcomes, 1):
        result = (
            "[green]ok[/]"
            if o.ok
            else f"[red]{escape(o.failed_step or '')}[/]: " + escape(o.message or "")
        )
        table.add_row(str(i), o.port or "-", o.desk or "-", o.terminal_id or "-", result)
    out.print(table)
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise typer.Exit(failed[0].exit_code)


def add_commands(app: typer.Typer) -> None:
    app.command()(ports)
    app.command(name="flash-micropython")(flash_micropython)
    app.command()(deploy)
    app.command()(verify)
    app.command()(run)
