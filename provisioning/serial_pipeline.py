"""``run``: flash, register, build, deploy, verify, for one terminal or a CSV batch of them.

Each terminal stops at its first failed step with that step's message (what to do); in a batch
the next terminal starts anyway unless ``stop_on_error``. Register and build are the registry
helper's functions (provisioning/registration.py, provisioning/bundle.py), called as the
``register`` and ``build`` commands call them.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from provisioning import records

STEPS = ("flash", "register", "build", "deploy", "verify")
NEXT = "next"  # the port column's value for "the next board plugged in"
SETTING_COLUMNS = ("wifi_ssid", "scale", "lockout_s", "reason_s", "power_mode", "broker_port")
_INT_COLUMNS = {"scale", "lockout_s", "reason_s", "broker_port"}


class BatchError(Exception):
    """The batch file cannot be used; the message names the row."""


class StepFailed(Exception):
    def __init__(self, step: str, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.step, self.exit_code = step, exit_code


@dataclass
class Job:
    port: str
    desk: str | None
    chip_id: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class Options:
    hub: str
    token: str
    firmware: Path | None
    skip_flash: bool
    records_dir: Path
    bundles_dir: Path
    district: str | None = None
    district_token: str | None = None
    insecure_hub_district_key: bool = False
    broker_host: str | None = None
    compiled: bool = True
    boot_timeout: float = 60
    wait_port_s: float = 300


@dataclass
class Outcome:
    port: str | None
    desk: str | None
    terminal_id: str | None = None
    ok: bool = False
    failed_step: str | None = None
    message: str | None = None
    exit_code: int = 0
    steps_done: list[str] = field(default_factory=list)


def load_batch(path: Path, defaults: dict[str, Any]) -> list[Job]:
    """Rows ``port,desk[,chip_id][,wifi_ssid,scale,lockout_s,reason_s,power_mode,broker_port]``
    with a header line; ``port`` may be ``next`` (wait for the next board plugged in)."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a spreadsheet's CSV may start with a BOM
    except OSError as e:
        raise BatchError(f"cannot read {path}: {e.strerror or e}") from e
    rows = list(csv.DictReader(text.splitlines()))
    if not rows:
        raise BatchError(f"{path} has no terminals (a header line, then one row per terminal)")
    if "port" not in rows[0] or "desk" not in rows[0]:
        raise BatchError(f"{path}: the header must name at least the columns port,desk")
    jobs = []
    for n, row in enumerate(rows, 2):
        port = (row.get("port") or "").strip()
        if not port:
            raise BatchError(f"{path} line {n}: no port (a port name, or '{NEXT}')")
        settings = {k: v for k, v in defaults.items() if v is not None}
        for col in SETTING_COLUMNS:
            value = (row.get(col) or "").strip()
            if not value:
                continue
            if col in _INT_COLUMNS:
                try:
                    settings[col] = int(value)
                except ValueError as e:
                    raise BatchError(f"{path} line {n}: {col} must be a number") from e
            else:
                settings[col] = value
        jobs.append(
            Job(
                port=port,
                desk=(row.get("desk") or "").strip() or None,
                chip_id=(row.get("chip_id") or "").strip() or None,
                settings=settings,
            )
        )
    return jobs


def wait_for_new_port(
    known: set[str], timeout: float, console: Console, sleep: Callable[[float], None] = time.sleep
) -> str:
    from provisioning.serial_ports import serial_ports

    console.print("[bold]plug in the next board[/] (waiting for a new USB serial port)...")
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        now = {p.device for p in serial_ports()}
        new = sorted(now - known)
        if new:
            return new[0]
        known &= now  # a board unplugged and plugged back counts as new
        sleep(0.5)
    raise StepFailed("port", f"no new board was plugged in within {timeout:.0f} s", 5)


def run_one(job: Job, opts: Options, console: Console) -> Outcome:
    """The pipeline for one terminal; never raises for a step's failure (see Outcome)."""
    outcome = Outcome(job.port, job.desk)
    try:
        _pipeline(job, opts, console, outcome)
        outcome.ok = True
    except StepFailed as e:
        outcome.failed_step, outcome.message, outcome.exit_code = e.step, str(e), e.exit_code
        console.print(f"[red]{e.step} failed:[/] {e}")
    return outcome


def _pipeline(job: Job, opts: Options, console: Console, outcome: Outcome) -> None:
    from provisioning import bundle as bdl
    from provisioning import registration
    from provisioning.hubapi import HubClient, HubError
    from provisioning.serial_deploy import DeployError, deploy
    from provisioning.serial_flash import FlashError, flash_micropython
    from provisioning.serial_image import ImageError
    from provisioning.serial_verify import VerifyError, verify

    port = job.port
    # flash (or, when MicroPython is already there, learn the chip id)
    chip = job.chip_id
    if not opts.skip_flash:
        console.print(f"[bold]1/5 flash[/] MicroPython on {port}")
        assert opts.firmware is not None
        try:
            res = flash_micropython(port, opts.firmware)
        except ImageError as e:
            raise StepFailed("flash", str(e), 2) from e
        except FlashError as e:
            raise StepFailed("flash", str(e), 5) from e
        chip = chip or res.mac
    elif chip is None:
        from provisioning.serial_ports import detect

        d = detect(port)
        if d.mac is None:
            raise StepFailed(
                "flash",
                f"could not read the chip id on {port} ({d.error}): pass --chip-id (from the "
                "board's sticker or `sipas-provision ports`)",
                5,
            )
        chip = d.mac
    outcome.steps_done.append("flash")
    try:
        terminal_id = records.terminal_id_from_chip(chip)
    except ValueError as e:
        raise StepFailed("register", str(e), 2) from e
    outcome.terminal_id = terminal_id

    try:
        client = HubClient(opts.hub, opts.token)
    except HubError as e:
        raise StepFailed("register", str(e), 2) from e
    with client:
        # register (or reuse the record of a board provisioned before)
        console.print(f"[bold]2/5 register[/] {terminal_id} at {client.base}")
        path = records.record_path(opts.records_dir, terminal_id)
        existing = records.load(path) if path.exists() else None
        if existing is not None and existing.get("status") == "active":
            console.print(f"  already registered (record {path}): keeping it")
            rec = existing
        else:
            choice = registration.DistrictChoice(
                opts.district, opts.insecure_hub_district_key, opts.district_token
            )
            try:
                path, rec = registration.register(
                    client,
                    chip=chip,
                    desk=job.desk,
                    district=choice,
                    records_dir=opts.records_dir,
                    broker_host=opts.broker_host,
                )
            except registration.DistrictKeyUnavailable as e:
                raise StepFailed("register", str(e), 4) from e
            except HubError as e:
                raise StepFailed("register", str(e), 3) from e
            except (registration.RegistrationError, records.RecordError) as e:
                raise StepFailed("register", str(e), 2) from e
        outcome.steps_done.append("register")

        # build
        out_dir = opts.bundles_dir / terminal_id
        console.print(f"[bold]3/5 build[/] the bundle in {out_dir}")
        settings = dict(rec.get("settings") or {})
        settings.update({k: v for k, v in job.settings.items() if v is not None})
        try:
            config = bdl.device_config(rec["device"], settings, bdl.board_facts())
            manifest = bdl.build_bundle(out_dir, config=config, compiled=opts.compiled)
        except bdl.BundleError as e:
            raise StepFailed("build", str(e), 2) from e
        rec["settings"] = settings
        records.add_event(
            rec,
            "built",
            version=manifest["version"],
            manifest_sha256=bdl.manifest_sha256(out_dir),
            out=str(out_dir),
        )
        records.save(path, rec)
        outcome.steps_done.append("build")

        # deploy
        console.print(f"[bold]4/5 deploy[/] to {port}")
        try:
            dres = deploy(port, out_dir)
        except DeployError as e:
            raise StepFailed("deploy", str(e), 5) from e
        records.add_event(
            rec,
            "deployed",
            version=dres.version,
            copied=len(dres.copied),
            ota_count=dres.ota_count,
        )
        records.save(path, rec)
        outcome.steps_done.append("deploy")

        # verify
        console.print(f"[bold]5/5 verify[/] {terminal_id} through the hub")
        try:
            vres = verify(port, terminal_id, client, boot_timeout=opts.boot_timeout)
        except VerifyError as e:
            raise StepFailed("verify", str(e), 6) from e
        records.add_event(rec, "verified", rating_id=vres.rating_id, seq=vres.seq)
        records.save(path, rec)
        outcome.steps_done.append("verify")
        console.print(f"[green]{terminal_id} is ready[/] (record {path})")


def run_batch(
    jobs: list[Job], opts: Options, *, console: Console, stop_on_error: bool = False
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} terminals"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("provisioning", total=len(jobs))
        known: set[str] | None = None
        for i, job in enumerate(jobs, 1):
            bar.update(task, description=f"terminal {i}/{len(jobs)} ({job.desk or '-'})")
            if job.port == NEXT:
                from provisioning.serial_ports import serial_ports

                if known is None:
                    known = {p.device for p in serial_ports()}
                try:
                    job.port = wait_for_new_port(known, opts.wait_port_s, console)
                except StepFailed as e:
                    o = Outcome(None, job.desk, failed_step="port", message=str(e), exit_code=5)
                    outcomes.append(o)
                    bar.advance(task)
                    if stop_on_error:
                        break
                    continue
                known.add(job.port)
            o = run_one(job, opts, console)
            outcomes.append(o)
            bar.advance(task)
            if not o.ok and stop_on_error:
                break
    return outcomes
