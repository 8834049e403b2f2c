"""``sipas-hub broker``: the technician's commands for the Mosquitto the hub runs.

The hub starts Mosquitto as its child and owns its files (hub/broker.py). These commands work on
those files from another process, usually while the hub runs: they find the live broker by its pid
file, and reload it (SIGHUP) after rewriting its accounts, so that a terminal added or revoked here
is accepted or refused at once. ``apply_accounts`` is the function to call after any change to the
terminals made outside the running hub.

Settings come from the same file as the hub's (``/etc/sipas/hub.env``, see hub/systemd/), and the
commands must run as the hub's user: files written by another user (root) would lock the hub out
of its own broker and database.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import pwd
import secrets
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import paho.mqtt.client as mqtt
import typer
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from hub import registry
from hub.broker import BrokerError, BrokerNotRunning, Mosquitto, find_free_port
from hub.config import Settings
from hub.db import make_engine
from hub.models import AuditLog, Terminal

__all__ = [
    "Applied",
    "SettingsMismatch",
    "UnknownTerminal",
    "app",
    "apply_accounts",
    "hub_password",
    "load_settings",
    "managed_broker",
    "revoke_terminal",
]

log = logging.getLogger(__name__)

DEFAULT_ENV_FILE = Path("/etc/sipas/hub.env")

# Exit codes (also in the help text below).
EXIT_OK = 0
EXIT_PROBLEMS = 1  # `check` found problems
EXIT_SETTINGS = 2  # bad settings or usage, wrong user, settings other than the running broker's
EXIT_BROKER = 3  # Mosquitto could not be configured, reloaded or started
EXIT_NOT_RUNNING = 4  # no hub-managed Mosquitto is running (`status`)
EXIT_UNKNOWN_TERMINAL = 5  # `revoke`: no such terminal in this office

EXIT_CODES = (
    "Exit codes: 0 done (status: running and accepting connections); 1 check found problems; "
    "2 bad settings or usage, or not run as the hub's user; 3 Mosquitto could not be configured, "
    "reloaded or started (status: running but not accepting connections); 4 the hub's Mosquitto "
    "is not running (status); 5 no such terminal (revoke)."
)

app = typer.Typer(
    help="The hub's own Mosquitto: accounts, reload, status, checks. "
    "Run as the hub's user (sudo -u sipas ...).",
    epilog=EXIT_CODES,
    no_args_is_help=True,
)


class SettingsMismatch(BrokerError):
    """The running broker was configured with other settings than the ones given."""


class UnknownTerminal(LookupError):
    """No terminal with this id in this office."""


# -- the work, callable without the command line -------------------------------------------------


def load_settings(env_file: Path | None = None) -> Settings:
    """The hub's settings: from ``env_file``, else /etc/sipas/hub.env if present, else the
    environment and ./.env. Environment variables override the file, as for the hub itself."""
    if env_file is None and DEFAULT_ENV_FILE.exists():
        env_file = DEFAULT_ENV_FILE
    if env_file is None:
        return Settings()
    # Read it here: pydantic-settings silently ignores a missing file (a typo in --env-file).
    env_file.read_bytes()
    return Settings(_env_file=env_file)


def managed_broker(settings: Settings) -> Mosquitto:
    """The Mosquitto the hub runs with these settings (the same folder and port as HubService)."""
    return Mosquitto(
        settings.data_dir / "mosquitto",
        host=settings.mqtt_host,
        port=settings.mqtt_port,
        office=settings.office,
    )


def hub_password(settings: Settings) -> str:
    """The hub's own MQTT password: the setting, else the one generated once and kept in the data
    directory (the same file HubService uses)."""
    if settings.mqtt_password:
        return settings.mqtt_password
    path = settings.data_dir / "mqtt-password"
    if path.exists():
        return path.read_text().strip()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(24)
    path.touch(mode=0o600)
    path.write_text(value)
    return value


@dataclass(frozen=True)
class Applied:
    """What ``apply_accounts`` did."""

    terminals: int  # active terminal accounts written
    reloaded_pid: int | None  # the Mosquitto that was reloaded, None if none was running


def apply_accounts(settings: Settings, *, engine: Engine | None = None) -> Applied:
    """Write Mosquitto's configuration, password and ACL files from the registry and, if the hub's
    Mosquitto runs (started by this process or another), reload it: an added terminal can connect
    and a revoked one is disconnected and refused as soon as this returns.

    Raises SettingsMismatch, before writing anything, when a running broker was set up with other
    settings (office, address, hub account, user): rewriting its files from these would lock the
    hub out. BrokerError if Mosquitto's tools fail.
    """
    broker = managed_broker(settings)
    own_engine = engine is None
    engine = engine or make_engine(settings.db_url)
    try:
        with broker.lock():
            terminals = registry.broker_accounts(engine, settings.office)
            password = hub_password(settings)
            pid = broker.find_pid()
            if pid is not None:
                _check_same_settings(broker, settings, password, pid)
            broker.write_config(settings.mqtt_user, password, terminals)
            reloaded: int | None = None
            if pid is not None:
                try:
                    broker.reload()
                    reloaded = pid
                except BrokerNotRunning:
                    pass  # stopped meanwhile: it reads the new files when it starts
    finally:
        if own_engine:
            engine.dispose()
    return Applied(terminals=len(terminals), reloaded_pid=reloaded)


def _check_same_settings(broker: Mosquitto, settings: Settings, password: str, pid: int) -> None:
    differ = broker.differing_files(settings.mqtt_user)
    if broker.password_matches(settings.mqtt_user, password) is False:
        differ.append(broker.passwd_path)
    if differ:
        names = ", ".join(p.name for p in differ)
        raise SettingsMismatch(
            f"the running Mosquitto (pid {pid}) was set up with other settings than these "
            f"({names} would change): run this as the hub's user with the hub's settings "
            f"({DEFAULT_ENV_FILE} or --env-file), or restart the hub to apply new settings"
        )


def revoke_terminal(
    settings: Settings, terminal_id: str, *, reason: str | None = None, engine: Engine
) -> bool:
    """Mark a terminal inactive in the registry; False if it was already. Does not touch the
    broker: call ``apply_accounts`` next."""
    who = os.environ.get("SUDO_USER") or pwd.getpwuid(os.getuid()).pw_name
    with Session(engine) as s:
        term = s.get(Terminal, terminal_id)
        if term is None or term.office != settings.office:
            raise UnknownTerminal(f"no terminal {terminal_id} in office {settings.office}")
        was_active = term.active
        term.active = False
        s.add(term)
        _audit(s, who, terminal_id, reason)
        s.commit()
    return was_active


def _audit(s: Session, who: str, terminal_id: str, reason: str | None) -> None:
    # In the revocation's own transaction: no revocation without its record.
    s.add(
        AuditLog(
            actor=f"cli:{who}",
            action="revoke",
            entity="terminal",
            entity_id=terminal_id,
            detail=json.dumps({"reason": reason}, ensure_ascii=False),
        )
    )
    log.info("terminal %s revoked by %s%s", terminal_id, who, f": {reason}" if reason else "")


def login(host: str, port: int, user: str, password: str, timeout: float = 3.0) -> bool | None:
    """Try an MQTT login: True accepted, False refused, None no answer."""
    result: list[bool] = []
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"sipas-check-{secrets.token_hex(4)}",
        clean_session=True,
        reconnect_on_failure=False,
    )
    client.username_pw_set(user, password)
    client.on_connect = lambda _c, _u, _f, rc, _p: result.append(not rc.is_failure)
    try:
        client.connect(host, port, keepalive=10)
        deadline = time.monotonic() + timeout
        while not result and time.monotonic() < deadline:
            if client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                break
        if result and result[0]:
            client.disconnect()
            client.loop(timeout=0.05)
    except OSError:
        return None
    finally:
        sock = client.socket()
        if sock is not None:
            sock.close()
    return result[0] if result else None


# -- command line ---------------------------------------------------------------------------------


def _out() -> Console:
    # Data on stdout: no markup or highlighting, so ids and desk names print as they are.
    return Console(markup=False, highlight=False)


def _err() -> Console:
    return Console(stderr=True, highlight=False)


def _fail(message: str, code: int) -> typer.Exit:
    _err().print(Text(message, style="red"))
    return typer.Exit(code)


EnvFile = Annotated[
    Path | None,
    typer.Option(
        "--env-file",
        envvar="SIPAS_HUB_ENV_FILE",
        dir_okay=False,
        help=f"the hub's settings (SIPAS_HUB_* lines); default {DEFAULT_ENV_FILE} if present, "
        "else the environment and ./.env",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


@app.callback()
def _options(ctx: typer.Context, env_file: EnvFile = None) -> None:
    ctx.obj = {"env_file": env_file}


def _settings(ctx: typer.Context, *, need_broker: bool = True) -> Settings:
    env_file = (ctx.obj or {}).get("env_file")
    try:
        settings = load_settings(env_file)
    except OSError as e:
        raise _fail(
            f"cannot read {e.filename}: {e.strerror} (run as the hub's user: sudo -u sipas ...)",
            EXIT_SETTINGS,
        ) from e
    except ValidationError as e:
        # Field and reason only: pydantic's own message would echo the (secret) value.
        problems = "; ".join(
            f"SIPAS_HUB_{'.'.join(map(str, err['loc'])).upper()}: {err['msg']}"
            for err in e.errors()
        )
        raise _fail(f"configuration error: {problems}", EXIT_SETTINGS) from e
    if need_broker and not settings.manage_broker:
        raise _fail(
            "this hub does not run its own Mosquitto (SIPAS_HUB_MANAGE_BROKER=false): "
            "configure that broker's accounts by hand",
            EXIT_SETTINGS,
        )
    _check_user(settings.data_dir)
    return settings


def _check_user(data_dir: Path) -> None:
    """Refuse to run as another user than the owner of the hub's data directory."""
    try:
        owner = data_dir.stat().st_uid
    except FileNotFoundError:
        return
    if owner != os.geteuid():
        try:
            name = pwd.getpwuid(owner).pw_name
        except KeyError:
            name = str(owner)
        raise _fail(
            f"{data_dir} belongs to {name}: run this as that user "
            f"(sudo -u {name} sipas-hub broker ...), or files written here would lock the hub out",
            EXIT_SETTINGS,
        )


def _engine_if_exists(settings: Settings) -> Engine | None:
    """The registry's engine, None if the SQLite file does not exist (the hub never ran)."""
    url = settings.db_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return None
    return make_engine(url)


def _terminals(engine: Engine | None, office: str) -> list[Terminal]:
    if engine is None:
        return []
    with Session(engine) as s:
        return list(
            s.exec(select(Terminal).where(Terminal.office == office).order_by(Terminal.id)).all()
        )


def _key_values(rows: list[tuple[str, str]]) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(Text(key), Text(value))
    return table


@app.command()
def config(ctx: typer.Context) -> None:
    """Rewrite the broker's files from the registry and reload the running broker.

    Writes Mosquitto's configuration, password and ACL files, then reloads the hub's Mosquitto if
    it runs. Use it after terminals were added, replaced or revoked while the
    hub was running, or after restoring the database."""
    settings = _settings(ctx)
    try:
        applied = apply_accounts(settings)
    except SettingsMismatch as e:
        raise _fail(str(e), EXIT_SETTINGS) from e
    except BrokerError as e:
        raise _fail(f"Mosquitto: {e}", EXIT_BROKER) from e
    err = _err()
    err.print(f"wrote the accounts of the hub and {applied.terminals} active terminal(s)")
    if applied.reloaded_pid is not None:
        err.print(f"reloaded Mosquitto (pid {applied.reloaded_pid})")
    else:
        err.print("Mosquitto is not running: it reads these files when the hub starts")


@app.command()
def status(
    ctx: typer.Context,
    log_lines: Annotated[
        int, typer.Option("--log", min=0, help="also print the last N lines of Mosquitto's log")
    ] = 0,
    as_json: AsJson = False,
) -> None:
    """Is the hub's Mosquitto running? Pid, port, accounts, log.

    Exit code 0 if it runs and accepts connections, 4 if it does not run."""
    settings = _settings(ctx)
    broker = managed_broker(settings)
    pid = broker.find_pid()
    listening = pid is not None and broker.accepting()
    engine = _engine_if_exists(settings)
    try:
        terms = _terminals(engine, settings.office)
    finally:
        if engine is not None:
            engine.dispose()
    active = sum(t.active for t in terms)
    in_broker = broker.passwd_users()
    data: dict[str, Any] = {
        "office": settings.office,
        "running": pid is not None,
        "pid": pid,
        "host": settings.mqtt_host,
        "port": settings.mqtt_port,
        "accepting": listening,
        "workdir": str(broker.workdir),
        "hub_user": settings.mqtt_user,
        "terminals_active": active,
        "terminals_revoked": len(terms) - active,
        "broker_accounts": len(in_broker),
    }
    if log_lines:
        data["log"] = broker.log_tail(log_lines)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        state = f"running (pid {pid})" if pid is not None else "not running"
        if pid is not None and not listening:
            state += ", NOT accepting connections"
        out = _out()
        out.print(
            _key_values(
                [
                    ("office", settings.office),
                    ("mosquitto", state),
                    ("listener", f"{settings.mqtt_host}:{settings.mqtt_port}"),
                    ("files", str(broker.workdir)),
                    (
                        "terminals",
                        f"{active} active, {len(terms) - active} revoked (registry)",
                    ),
                    (
                        "accounts",
                        f"{len(in_broker)} in the password file (hub + terminals)",
                    ),
                ]
            )
        )
        if log_lines:
            out.print()
            out.print(data["log"])
    if pid is None:
        raise typer.Exit(EXIT_NOT_RUNNING)
    if not listening:
        raise typer.Exit(EXIT_BROKER)


@app.command()
def users(ctx: typer.Context, as_json: AsJson = False) -> None:
    """List the MQTT accounts (hub and terminals), never their passwords.

    One row for the hub and one per terminal of the office (active or revoked in the registry),
    with whether Mosquitto's password file has it. Passwords are never shown."""
    settings = _settings(ctx, need_broker=False)
    engine = _engine_if_exists(settings)
    if engine is None:
        raise _fail(
            f"no database at {settings.db_url}: has the hub run yet? (SIPAS_HUB_DATA_DIR)",
            EXIT_SETTINGS,
        )
    try:
        terms = _terminals(engine, settings.office)
    finally:
        engine.dispose()
    in_broker = set(managed_broker(settings).passwd_users()) if settings.manage_broker else set()
    rows: list[dict[str, Any]] = [
        {
            "user": settings.mqtt_user,
            "role": "hub",
            "desk": None,
            "state": "active",
            "in_broker": settings.mqtt_user in in_broker,
            "last_seen": None,
        }
    ]
    for t in terms:
        rows.append(
            {
                "user": t.id,
                "role": "terminal",
                "desk": t.desk,
                "state": "active" if t.active else "revoked",
                "in_broker": t.id in in_broker,
                "last_seen": t.last_seen.isoformat() if t.last_seen else None,
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        table = Table(box=None, pad_edge=False)
        for column in ("user", "role", "desk", "state", "broker", "last seen (UTC)"):
            table.add_column(column)
        for r in rows:
            table.add_row(
                *(
                    Text(v)
                    for v in (
                        r["user"],
                        r["role"],
                        r["desk"] or "-",
                        r["state"],
                        "yes" if r["in_broker"] else "no",
                        (r["last_seen"] or "-")[:19],
                    )
                )
            )
        _out().print(table)
    if settings.manage_broker and any(r["in_broker"] != (r["state"] == "active") for r in rows):
        _err().print(
            "the broker's password file does not match the registry: "
            "run `sipas-hub broker config` (or restart the hub)"
        )


@app.command()
def revoke(
    ctx: typer.Context,
    terminal_id: Annotated[str, typer.Argument(help="the terminal's id, t- and 12 hex digits")],
    reason: Annotated[
        str | None, typer.Option(help="why (lost, stolen, broken...): kept in the audit log")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
) -> None:
    """Revoke a terminal: the broker refuses it at once.

    Marks it inactive in the registry, rewrites the broker's accounts and reloads the running
    broker, which disconnects and refuses the terminal at once. Its ratings
    stay. A replacement terminal is registered anew (`sipas-hub terminals add`)."""
    settings = _settings(ctx)
    if not yes:
        typer.confirm(
            f"Revoke {terminal_id}? It will be disconnected and refused at once", abort=True
        )
    engine = make_engine(settings.db_url)
    try:
        try:
            was_active = revoke_terminal(settings, terminal_id, reason=reason, engine=engine)
        except UnknownTerminal as e:
            raise _fail(str(e), EXIT_UNKNOWN_TERMINAL) from e
        try:
            applied = apply_accounts(settings, engine=engine)
        except SettingsMismatch as e:
            raise _fail(
                f"{terminal_id} is revoked in the registry, but the broker was not updated: {e}",
                EXIT_SETTINGS,
            ) from e
        except BrokerError as e:
            raise _fail(
                f"{terminal_id} is revoked in the registry, but the broker was not updated "
                f"(Mosquitto: {e}); fix it and run `sipas-hub broker config`",
                EXIT_BROKER,
            ) from e
    finally:
        engine.dispose()
    err = _err()
    err.print(f"{terminal_id} {'revoked' if was_active else 'was already revoked'}")
    if applied.reloaded_pid is not None:
        err.print(f"Mosquitto (pid {applied.reloaded_pid}) reloaded: the terminal is refused")
    else:
        err.print("Mosquitto is not running: the terminal is refused when the hub starts")


@dataclass
class _Check:
    name: str
    state: str  # "ok", "problem" or "note"
    detail: str


@app.command()
def check(ctx: typer.Context, as_json: AsJson = False) -> None:
    """Check the broker's files with a trial Mosquitto; the live broker is not touched.

    Checks that the files are present and private, as these settings generate them, with the
    registry's accounts; then starts a trial Mosquitto on a free loopback port with a copy of
    them and logs in as the hub and as every terminal (revoked ones must be refused).
    Exit code 1 if there are problems."""
    settings = _settings(ctx)
    broker = managed_broker(settings)
    engine = _engine_if_exists(settings)
    try:
        terms = _terminals(engine, settings.office)
    finally:
        if engine is not None:
            engine.dispose()
    checks = _static_checks(broker, settings, terms)
    if broker.config_path.exists():
        checks += _trial_checks(broker, settings, terms)
    pid = broker.find_pid()
    if pid is None:
        checks.append(_Check("live broker", "note", "not running"))
    elif broker.accepting():
        checks.append(_Check("live broker", "ok", f"pid {pid}, accepting on {settings.mqtt_port}"))
    else:
        checks.append(_Check("live broker", "problem", f"pid {pid} does not accept connections"))
    if as_json:
        typer.echo(json.dumps([c.__dict__ for c in checks], indent=2))
    else:
        table = Table(box=None, pad_edge=False)
        for column in ("check", "result", "detail"):
            table.add_column(column)
        for c in checks:
            table.add_row(Text(c.name), Text(c.state), Text(c.detail))
        _out().print(table)
    problems = sum(c.state == "problem" for c in checks)
    if problems:
        _err().print(f"{problems} problem(s)")
        raise typer.Exit(EXIT_PROBLEMS)


def _static_checks(broker: Mosquitto, settings: Settings, terms: list[Terminal]) -> list[_Check]:
    checks = []
    missing, loose = [], []
    for path in (broker.config_path, broker.passwd_path, broker.acl_path):
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            missing.append(path.name)
            continue
        if stat.S_IMODE(mode) & 0o077:
            loose.append(f"{path.name} ({stat.S_IMODE(mode):o})")
    if missing:
        checks.append(
            _Check(
                "files",
                "problem",
                f"missing in {broker.workdir}: {', '.join(missing)} (`sipas-hub broker config`)",
            )
        )
        return checks
    if loose:
        checks.append(_Check("files", "problem", f"readable by others: {', '.join(loose)}"))
    else:
        checks.append(_Check("files", "ok", f"{broker.workdir}, private"))
    differ = broker.differing_files(settings.mqtt_user)
    if differ:
        checks.append(
            _Check(
                "settings",
                "problem",
                f"{', '.join(p.name for p in differ)} differ from what these settings generate "
                "(edited by hand, or other settings than the hub's): restart the hub, or run "
                "`sipas-hub broker config`",
            )
        )
    else:
        checks.append(
            _Check("settings", "ok", f"office {settings.office}, port {settings.mqtt_port}")
        )
    expected = {settings.mqtt_user} | {t.id for t in terms if t.active}
    present = set(broker.passwd_users())
    absent, extra = sorted(expected - present), sorted(present - expected)
    if absent or extra:
        parts = []
        if absent:
            parts.append(f"missing: {', '.join(absent)}")
        if extra:
            parts.append(f"not active in the registry: {', '.join(extra)}")
        checks.append(
            _Check("accounts", "problem", "; ".join(parts) + " (`sipas-hub broker config`)")
        )
    else:
        checks.append(_Check("accounts", "ok", f"hub + {len(expected) - 1} active terminal(s)"))
    return checks


def _trial_checks(broker: Mosquitto, settings: Settings, terms: list[Terminal]) -> list[_Check]:
    checks = []
    with tempfile.TemporaryDirectory(prefix="sipas-broker-check-") as tmp:
        try:
            trial = broker.trial_copy(Path(tmp) / "mosquitto", find_free_port())
            trial.start(timeout=10)
        except BrokerError as e:
            return [_Check("trial start", "problem", str(e))]
        try:
            checks.append(_Check("trial start", "ok", "Mosquitto starts with these files"))
            wrong = []
            logins = [(settings.mqtt_user, hub_password(settings), True)]
            logins += [(t.id, t.mqtt_password, t.active) for t in terms]
            for user, password, should in logins:
                if login(trial.host, trial.port, user, password) is not should:
                    wrong.append(f"{user} {'refused' if should else 'accepted'}")
            if wrong:
                checks.append(_Check("logins", "problem", "; ".join(wrong)))
            else:
                active = sum(t.active for t in terms)
                checks.append(
                    _Check(
                        "logins",
                        "ok",
                        f"hub and {active} active terminal(s) accepted, "
                        f"{len(terms) - active} revoked refused",
                    )
                )
        finally:
            trial.stop()
    return checks


def _reflow(doc: str) -> str:
    # The help keeps a docstring's line breaks as they are: keep its paragraphs, not its lines.
    return "\n\n".join(" ".join(p.split()) for p in inspect.cleandoc(doc).split("\n\n"))


for _info in app.registered_commands:
    if _info.help is None and _info.callback is not None:
        _info.help = _reflow(_info.callback.__doc__ or "")
