"""``sipas-provision`` commands that need no serial port: register, build, label, replace, retire
and simulate. ``add_commands(app)`` puts them on the tool's typer app (provisioning/cli.py).

Exit codes: 0 done; 2 bad input (a record, a bundle, an option); 3 the hub refused or could not be
reached; 4 the district key cannot be obtained (see ``register --help``). Data goes to stdout (the
terminal id, the bundle's manifest hash, the path written), messages to stderr; no secret is printed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn

from provisioning import bundle as bdl
from provisioning import records, registration
from provisioning.hubapi import HubClient, HubError

EXIT_BAD_INPUT = 2
EXIT_HUB = 3
EXIT_DISTRICT = 4

err = Console(stderr=True)  # messages; the data (ids, hashes, paths) goes to stdout, unwrapped

Hub = Annotated[
    str,
    typer.Option(
        "--hub",
        envvar="SIPAS_PROVISION_HUB",
        help="the hub's API address, e.g. http://10.0.0.2:8080",
    ),
]
Token = Annotated[
    str,
    typer.Option(
        "--token",
        envvar="SIPAS_PROVISION_TOKEN",
        help="the hub's API token (SIPAS_HUB_API_TOKEN); better in the environment than typed",
        show_default=False,
    ),
]
RecordsDir = Annotated[
    Path,
    typer.Option(
        "--records",
        envvar="SIPAS_PROVISION_RECORDS",
        help="where the per-terminal records (with keys, mode 0600) are kept",
    ),
]
District = Annotated[
    str | None,
    typer.Option(
        "--district",
        envvar="SIPAS_PROVISION_DISTRICT",
        help="the district server that issues the terminal's district key (production)",
    ),
]
DistrictToken = Annotated[
    str | None,
    typer.Option(
        "--district-token",
        envvar="SIPAS_PROVISION_DISTRICT_TOKEN",
        help="the district's provisioning token (`sipas-district token create --role "
        "provisioner`); better in the environment than typed",
        show_default=False,
    ),
]
InsecureDistrict = Annotated[
    bool,
    typer.Option(
        registration.INSECURE_FLAG,
        help="DEVELOPMENT/PILOT ONLY, without a district server: take the district key the "
        "hub generates (so the hub could keep it); the record and the sticker are marked",
    ),
]
BrokerHost = Annotated[
    str | None,
    typer.Option(help="the address terminals reach the hub's broker at (default: as the hub says)"),
]


def _fail(message: str, code: int) -> typer.Exit:
    err.print(f"[red]error:[/] {escape(message)}")
    return typer.Exit(code)


def _client(hub: str, token: str) -> HubClient:
    if not hub:
        raise _fail(
            "no hub: pass --hub http://HOST:PORT or set SIPAS_PROVISION_HUB", EXIT_BAD_INPUT
        )
    try:
        return HubClient(hub, token)
    except HubError as e:
        raise _fail(str(e), EXIT_BAD_INPUT) from e


def _load_record(path: Path) -> dict[str, Any]:
    try:
        return records.load(path)
    except records.RecordError as e:
        raise _fail(str(e), EXIT_BAD_INPUT) from e


def _pilot_warning(rec: dict[str, Any]) -> None:
    if rec.get("district_key_source") == records.HUB_INTERIM:
        err.print(
            "[yellow]pilot terminal:[/] its district key came from the hub (development/pilot "
            "mode); re-provision it from the district server before its ratings count"
        )


# -- register / replace / retire -------------------------------------------------------------------
def register(
    hub: Hub = "",
    token: Token = "",
    chip_id: Annotated[
        str | None, typer.Option(help="the chip's unique id, 12 hex digits (from `ports`)")
    ] = None,
    mac: Annotated[
        str | None, typer.Option(help="or the chip's factory MAC, AA:BB:CC:DD:EE:FF")
    ] = None,
    desk: Annotated[
        str | None, typer.Option(help="the desk it goes on (must exist at the hub)")
    ] = None,
    records_dir: RecordsDir = records.DEFAULT_RECORDS_DIR,
    district: District = None,
    district_token: DistrictToken = None,
    insecure_hub_district_key: InsecureDistrict = False,
    broker_host: BrokerHost = None,
) -> None:
    """Create the terminal at the hub and keep its record (keys included, mode 0600).

    The terminal id is t- and the chip's 12-hex unique id. The district key comes from the
    district server (--district URL --district-token T), so the hub never holds it; without them
    registration is refused (exit 4) unless --insecure-hub-district-key is given for a
    development or pilot terminal. If the district fails after the hub registered the terminal,
    the same command again only fetches the key (exit 4 until then).
    """
    if bool(chip_id) == bool(mac):
        raise _fail("give the chip's id with --chip-id HEX12 or --mac AA:BB:..., one of them", 2)
    chip = str(chip_id or mac)
    try:
        records.terminal_id_from_chip(chip)
        registration.check_district(
            registration.DistrictChoice(district, insecure_hub_district_key, district_token)
        )
    except ValueError as e:
        raise _fail(str(e), EXIT_BAD_INPUT) from e
    except registration.DistrictKeyUnavailable as e:
        raise _fail(str(e), EXIT_DISTRICT) from e
    with _client(hub, token) as client:
        try:
            path, rec = registration.register(
                client,
                chip=chip,
                desk=desk,
                district=registration.DistrictChoice(
                    district, insecure_hub_district_key, district_token
                ),
                records_dir=records_dir,
                broker_host=broker_host,
            )
        except HubError as e:
            raise _fail(str(e), EXIT_HUB) from e
        except registration.DistrictKeyUnavailable as e:
            raise _fail(str(e), EXIT_DISTRICT) from e
        except (registration.RegistrationError, records.RecordError) as e:
            raise _fail(str(e), EXIT_BAD_INPUT) from e
    err.print(
        f"registered [bold]{rec['terminal_id']}[/] (office {escape(str(rec['office']))}, desk "
        f"{escape(rec['desk'] or '-')}); its broker account works now. Record: {escape(str(path))} "
        "(holds its keys: keep it safe, never mail it)"
    )
    _pilot_warning(rec)
    typer.echo(rec["terminal_id"])


def replace(
    old: Annotated[str, typer.Argument(help="the terminal taken out (t-... or its chip id)")],
    new: Annotated[str, typer.Argument(help="the new board's chip id (or t-...)")],
    hub: Hub = "",
    token: Token = "",
    records_dir: RecordsDir = records.DEFAULT_RECORDS_DIR,
    district: District = None,
    district_token: DistrictToken = None,
    insecure_hub_district_key: InsecureDistrict = False,
    force: Annotated[
        bool, typer.Option(help="even if OLD still holds unsent ratings (they are lost)")
    ] = False,
    broker_host: BrokerHost = None,
) -> None:
    """A new board takes OLD's desk; OLD's credentials are revoked, the desk's history stays.

    OLD's broker account stops working at once. Then `build` and `deploy` the new record."""
    choice = registration.DistrictChoice(district, insecure_hub_district_key, district_token)
    try:
        registration.check_district(choice)
    except registration.DistrictKeyUnavailable as e:
        raise _fail(str(e), EXIT_DISTRICT) from e
    with _client(hub, token) as client:
        try:
            path, rec, old_path = registration.replace(
                client,
                old_id=old,
                new_chip=new,
                district=choice,
                records_dir=records_dir,
                force=force,
                broker_host=broker_host,
            )
        except ValueError as e:
            raise _fail(str(e), EXIT_BAD_INPUT) from e
        except HubError as e:
            raise _fail(str(e), EXIT_HUB) from e
        except registration.DistrictKeyUnavailable as e:
            raise _fail(str(e), EXIT_DISTRICT) from e
        except (registration.RegistrationError, records.RecordError) as e:
            raise _fail(str(e), EXIT_BAD_INPUT) from e
    old_id = records.terminal_id_from_chip(old)
    err.print(
        f"{old_id} replaced by [bold]{rec['terminal_id']}[/] on desk {escape(rec['desk'] or '-')}; "
        f"{old_id} can no longer connect. New record: {escape(str(path))}"
        + ("" if old_path else f" (no record of {old_id} in {escape(str(records_dir))})")
    )
    _pilot_warning(rec)
    typer.echo(rec["terminal_id"])


def retire(
    terminal: Annotated[str, typer.Argument(help="the terminal (t-... or its chip id)")],
    hub: Hub = "",
    token: Token = "",
    records_dir: RecordsDir = records.DEFAULT_RECORDS_DIR,
    reason: Annotated[str | None, typer.Option(help="why, for the hub's audit log")] = None,
    force: Annotated[
        bool, typer.Option(help="even if it still holds unsent ratings (they are lost)")
    ] = False,
) -> None:
    """Take a terminal out of service for good; its ratings stay at the hub.

    Its broker account is removed at once and it comes off its desk; the desk's history stays."""
    with _client(hub, token) as client:
        try:
            path = registration.retire(
                client, terminal_id=terminal, records_dir=records_dir, reason=reason, force=force
            )
        except ValueError as e:
            raise _fail(str(e), EXIT_BAD_INPUT) from e
        except HubError as e:
            raise _fail(str(e), EXIT_HUB) from e
    tid = records.terminal_id_from_chip(terminal)
    err.print(
        f"{tid} retired: it can no longer connect; its ratings stay"
        + (f". Record kept: {escape(str(path))}" if path else "")
    )


# -- build -----------------------------------------------------------------------------------------
def build(
    out_dir: Annotated[Path, typer.Option("--out", help="the bundle's directory")],
    record: Annotated[
        Path | None, typer.Option(help="the terminal's record (from `register`)")
    ] = None,
    generic: Annotated[
        bool, typer.Option(help="no configuration: the bundle the hub serves for updates")
    ] = False,
    wifi_ssid: Annotated[str | None, typer.Option(help="the office's Wi-Fi network")] = None,
    wifi_password: Annotated[
        str | None,
        typer.Option(envvar="SIPAS_PROVISION_WIFI_PASSWORD", help="better in the environment"),
    ] = None,
    scale: Annotated[int | None, typer.Option(help="rating levels: 3, 4 or 5")] = None,
    lockout_s: Annotated[
        int | None, typer.Option(help="seconds after a press in which presses count as repeats")
    ] = None,
    reason_s: Annotated[
        int | None, typer.Option(help="seconds to choose a reason after a negative press; 0: off")
    ] = None,
    power: Annotated[str | None, typer.Option(help="mains or battery")] = None,
    broker_host: BrokerHost = None,
    broker_port: Annotated[int | None, typer.Option(help="the hub's MQTT port")] = None,
    py: Annotated[
        bool, typer.Option("--py", help="ship app/*.py instead of .mpy (simulator, tests)")
    ] = False,
) -> None:
    """Build the application bundle for a terminal (or --generic for over-the-air updates).

    The firmware compiled with mpy-cross, the boot code, the terminal's config.json (from its
    record and the pinout, validated as the terminal validates it) and manifest.json with sha256
    sums. Same inputs, byte-identical bundle. Settings given here are kept in the record, so the
    next build repeats them."""
    if generic == (record is not None):
        raise _fail("give --record R.json for a terminal, or --generic, one of them", 2)
    rec: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    try:
        if record is not None:
            rec = _load_record(record)
            settings = dict(rec.get("settings") or {})
            given = {
                "wifi_ssid": wifi_ssid,
                "wifi_password": wifi_password,
                "scale": scale,
                "lockout_s": lockout_s,
                "reason_s": reason_s,
                "power_mode": power,
                "broker_host": broker_host,
                "broker_port": broker_port,
            }
            settings.update({k: v for k, v in given.items() if v is not None})
            config = bdl.device_config(rec["device"], settings, bdl.board_facts())
            if not config.get("wifi_ssid"):
                err.print("[yellow]no --wifi-ssid:[/] the terminal will not join a network")
        files = len(bdl.app_sources()) + len(bdl.ROOT_FILES) + (1 if config else 0)
        with Progress(
            TextColumn("{task.description:<24}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            console=err,
            transient=True,
        ) as bar:
            task = bar.add_task("building", total=files)

            def step(what: str) -> None:
                bar.update(task, description=what, advance=1)

            manifest = bdl.build_bundle(out_dir, config=config, compiled=not py, progress=step)
    except bdl.BundleError as e:
        raise _fail(str(e), EXIT_BAD_INPUT) from e
    digest = bdl.manifest_sha256(out_dir)
    if rec is not None and record is not None:
        rec["settings"] = settings
        records.add_event(
            rec, "built", version=manifest["version"], manifest_sha256=digest, out=str(out_dir)
        )
        records.save(record, rec)
        _pilot_warning(rec)
    what = f"for {rec['terminal_id']}" if rec else "generic (for over-the-air updates)"
    err.print(
        f"bundle {escape(manifest['version'])} {what} in {escape(str(out_dir))}: "
        f"{len(manifest['app'])} app files"
        f"{' (.mpy)' if not py else ' (.py)'}, manifest sha256 {digest[:16]}..."
    )
    typer.echo(digest)


# -- label -----------------------------------------------------------------------------------------
def label(
    record: Annotated[Path, typer.Option(help="the terminal's record")],
    out_file: Annotated[Path, typer.Option("--out", help="sticker.png or sticker.pdf")],
    lang: Annotated[str, typer.Option(help="vi (default) or en")] = "vi",
) -> None:
    """A printable sticker (62 x 34 mm) with the terminal id, desk, office and a QR code."""
    from provisioning import label as lbl

    rec = _load_record(record)
    try:
        lbl.write(rec, out_file, lang)
    except lbl.LabelError as e:
        raise _fail(str(e), EXIT_BAD_INPUT) from e
    err.print(f"sticker for {rec['terminal_id']} in {escape(str(out_file))}")
    typer.echo(str(out_file))


# -- simulate --------------------------------------------------------------------------------------
def simulate(
    bundle_dir: Annotated[Path, typer.Argument(metavar="BUNDLE", help="a terminal's bundle")],
    root: Annotated[
        Path, typer.Option(help="the simulated flash (kept between runs: its outbox resumes)")
    ] = Path("sim-terminal"),
    script: Annotated[
        Path | None,
        typer.Option(help="press buttons from this file: a level per line, or wait SECONDS"),
    ] = None,
    drain_timeout: Annotated[
        float, typer.Option(help="seconds to wait at the end for the hub's acknowledgements")
    ] = 15.0,
    records_dir: RecordsDir = records.DEFAULT_RECORDS_DIR,
) -> None:
    """Boot the exact bundle that would go to a device on this PC; type a level and Enter.

    The bundle is checked against its manifest and installed into --root as on a terminal's
    flash, then booted (its ota_boot.py, then its application) with the host hardware layer,
    against the broker its config.json names. Prints `stored SEQ` per rating and `outbox N` at
    the end; exit 5 if ratings were not acknowledged by the hub."""
    from provisioning import simbundle

    if script is not None and not script.is_file():
        raise _fail(f"no script file {script}", EXIT_BAD_INPUT)
    try:
        manifest = simbundle.install(bundle_dir, root)
        err.print(f"bundle {escape(manifest['version'])} installed in {escape(str(root))}")
        _note_simulated(bundle_dir, root, records_dir)
        code = simbundle.run(
            root,
            simbundle.script_lines(script),
            say=typer.echo,
            note=lambda line: err.print(escape(line)),
            drain_timeout=drain_timeout,
        )
    except bdl.BundleError as e:
        raise _fail(str(e), EXIT_BAD_INPUT) from e
    if code:
        raise typer.Exit(code)


def _note_simulated(bundle_dir: Path, root: Path, records_dir: Path) -> None:
    """The simulator IS that terminal for its hub: say so, and note it in the terminal's record."""
    import json

    tid = json.loads((bundle_dir / bdl.CONFIG).read_text()).get("terminal_id", "?")
    err.print(
        f"[yellow]note:[/] this runs as {tid} against its hub: its ratings are stored as {tid}'s "
        "and take its sequence numbers, which a device provisioned from the same record would "
        "repeat (the hub quarantines repeats). Simulate lab or pilot terminals only."
    )
    path = records.find(records_dir, str(tid))
    if path is not None:
        rec = records.load(path)
        records.add_event(rec, "simulated", root=str(root))
        records.save(path, rec)


def add_commands(app: typer.Typer) -> None:
    app.command()(register)
    app.command()(build)
    app.command()(label)
    app.command()(replace)
    app.command()(retire)
    app.command()(simulate)
