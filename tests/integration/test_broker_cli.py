"""``sipas-hub broker ...`` against a real Mosquitto started by another object than the command.

The broker here is started by the test, as the running hub would start it (same folder, same
settings); the commands find it by its pid file and reload it, as a technician's command does
while the hub runs.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from typer.testing import CliRunner, Result

from hub import registry
from hub.broker import INSTALL_HINT, Mosquitto, find_free_port
from hub.cli import app
from hub.commands.broker import (
    EXIT_BROKER,
    EXIT_NOT_RUNNING,
    EXIT_PROBLEMS,
    EXIT_SETTINGS,
    EXIT_UNKNOWN_TERMINAL,
    hub_password,
    load_settings,
    managed_broker,
)
from hub.config import Settings
from hub.db import make_engine
from hub.models import AuditLog, Terminal
from tests.fixtures.mosquitto import MqttClient, try_connect

pytestmark = pytest.mark.integration
OFFICE = "office-test"


@dataclass
class Hub:
    """What a running hub leaves for a technician's command: settings, registry, broker."""

    env_file: Path
    settings: Settings
    engine: Engine
    broker: Mosquitto
    terminals: dict[str, str]  # id -> MQTT password

    def cli(self, *args: str, env_file: Path | None = None) -> Result:
        return CliRunner().invoke(
            app,
            ["broker", "--env-file", str(env_file or self.env_file), *args],
            env={"COLUMNS": "200"},  # a wide, fixed console: rows are not folded
        )

    def login(self, user: str, password: str) -> bool:
        rc = try_connect(self.broker.host, self.broker.port, user, password)
        assert rc is not None, f"no CONNACK for {user}"
        return not rc.is_failure


def write_env(path: Path, data_dir: Path, port: int, **extra: str) -> Path:
    lines = {
        "SIPAS_HUB_OFFICE": OFFICE,
        "SIPAS_HUB_DATA_DIR": str(data_dir),
        "SIPAS_HUB_MQTT_HOST": "127.0.0.1",
        "SIPAS_HUB_MQTT_PORT": str(port),
        "SIPAS_HUB_API_TOKEN": secrets.token_hex(16),
        **extra,
    }
    path.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
    return path


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    for program in ("mosquitto", "mosquitto_passwd"):
        if shutil.which(program) is None:
            pytest.fail(f"{program} not found: {INSTALL_HINT}", pytrace=False)
    env_file = write_env(tmp_path / "hub.env", tmp_path / "hub", find_free_port())
    settings = load_settings(env_file)
    engine = make_engine(settings.db_url)
    terminals = {}
    for desk in ("quay-1", "quay-2"):
        term, _ = registry.add_terminal(engine, office=OFFICE, desk=desk)
        terminals[term.id] = term.mqtt_password
    # Started here, as HubService.start() does: the commands only know its pid file.
    broker = managed_broker(settings)
    broker.write_config(
        settings.mqtt_user,
        hub_password(settings),
        registry.broker_accounts(engine, OFFICE),
    )
    broker.start()
    try:
        yield Hub(env_file, settings, engine, broker, terminals)
    finally:
        broker.stop()
        engine.dispose()


def add_terminal_row(engine: Engine, desk: str) -> tuple[str, str]:
    """A terminal registered by someone else (another process, the API): only the row."""
    terminal_id, password = registry.new_terminal_id(), secrets.token_urlsafe(18)
    with Session(engine) as s:
        s.add(
            Terminal(
                id=terminal_id,
                office=OFFICE,
                desk=desk,
                hub_key=secrets.token_hex(32),
                mqtt_password=password,
            )
        )
        s.commit()
    return terminal_id, password


def test_users_lists_the_accounts_and_never_a_password(hub: Hub) -> None:
    result = hub.cli("users")
    assert result.exit_code == 0, result.output
    for terminal_id in hub.terminals:
        assert terminal_id in result.stdout
    assert hub.settings.mqtt_user in result.stdout and "quay-1" in result.stdout
    secrets_ = [*hub.terminals.values(), hub_password(hub.settings)]
    for password in secrets_:
        assert password not in result.output

    as_json = hub.cli("users", "--json")
    assert as_json.exit_code == 0, as_json.output
    rows = {r["user"]: r for r in json.loads(as_json.stdout)}
    assert rows[hub.settings.mqtt_user]["role"] == "hub"
    assert {rows[t]["state"] for t in hub.terminals} == {"active"}
    assert all(r["in_broker"] for r in rows.values())
    for password in secrets_:
        assert password not in as_json.output


def test_revoke_makes_the_running_broker_refuse_the_terminal_at_once(hub: Hub) -> None:
    (revoked, password), (kept, kept_password) = hub.terminals.items()
    connected = MqttClient(hub.broker.host, hub.broker.port, revoked, password, client_id=revoked)
    try:
        result = hub.cli("revoke", revoked, "--yes", "--reason", "stolen from the desk")
        assert result.exit_code == 0, result.output
        assert "reloaded" in result.stderr
        # Refused from now on, and its open connection is closed by the reload.
        assert not hub.login(revoked, password)
        assert connected.disconnected.wait(5), "the revoked terminal is still connected"
    finally:
        connected.close()
    assert hub.login(kept, kept_password)
    assert password not in result.output

    with Session(hub.engine) as s:
        term = s.get(Terminal, revoked)
        assert term is not None and not term.active
        entry = s.exec(select(AuditLog).where(AuditLog.entity_id == revoked)).one()
    assert (entry.action, entry.entity) == ("revoke", "terminal")
    assert json.loads(entry.detail) == {"reason": "stolen from the desk"}

    users = json.loads(hub.cli("users", "--json").stdout)
    assert {u["user"]: (u["state"], u["in_broker"]) for u in users}[revoked] == ("revoked", False)

    again = hub.cli("revoke", revoked, "--yes")
    assert again.exit_code == 0 and "already revoked" in again.stderr


def test_revoke_asks_first_and_refuses_an_unknown_terminal(hub: Hub) -> None:
    terminal_id = next(iter(hub.terminals))
    declined = CliRunner().invoke(
        app, ["broker", "--env-file", str(hub.env_file), "revoke", terminal_id], input="n\n"
    )
    assert declined.exit_code != 0
    assert hub.login(terminal_id, hub.terminals[terminal_id])

    unknown = hub.cli("revoke", "t-0123456789ab", "--yes")
    assert unknown.exit_code == EXIT_UNKNOWN_TERMINAL
    assert "no terminal t-0123456789ab" in unknown.stderr


def test_config_reloads_a_broker_started_by_another_process(hub: Hub) -> None:
    terminal_id, password = add_terminal_row(hub.engine, "quay-3")
    assert not hub.login(terminal_id, password)  # the broker does not know it yet

    result = hub.cli("config")
    assert result.exit_code == 0, result.output
    assert f"reloaded Mosquitto (pid {hub.broker.pid})" in result.stderr
    assert hub.login(terminal_id, password)
    assert hub.login(hub.settings.mqtt_user, hub_password(hub.settings))


def test_config_without_a_running_broker_writes_the_files_for_the_next_start(hub: Hub) -> None:
    hub.broker.stop()
    terminal_id, password = add_terminal_row(hub.engine, "quay-3")
    result = hub.cli("config")
    assert result.exit_code == 0, result.output
    assert "not running" in result.stderr
    hub.broker.start()
    assert hub.login(terminal_id, password)


def test_config_refuses_settings_other_than_the_running_brokers(hub: Hub, tmp_path: Path) -> None:
    """A technician's shell without the hub's settings must not lock the hub out."""
    before = {p: p.read_bytes() for p in (hub.broker.config_path, hub.broker.acl_path)}
    other = write_env(
        tmp_path / "other.env",
        hub.settings.data_dir,
        hub.settings.mqtt_port,
        SIPAS_HUB_OFFICE="office-other",
    )
    result = hub.cli("config", env_file=other)
    assert result.exit_code == EXIT_SETTINGS
    assert "other settings" in result.stderr
    assert {p: p.read_bytes() for p in before} == before

    # The same office and port but another hub password: the hub would be refused.
    other = write_env(
        tmp_path / "other.env",
        hub.settings.data_dir,
        hub.settings.mqtt_port,
        SIPAS_HUB_MQTT_PASSWORD=secrets.token_hex(16),
    )
    result = hub.cli("config", env_file=other)
    assert result.exit_code == EXIT_SETTINGS and "passwd" in result.stderr
    assert hub.login(hub.settings.mqtt_user, hub_password(hub.settings))


def test_status_says_whether_the_broker_runs(hub: Hub) -> None:
    result = hub.cli("status", "--log", "5")
    assert result.exit_code == 0, result.output
    assert f"running (pid {hub.broker.pid})" in result.stdout
    assert f"127.0.0.1:{hub.settings.mqtt_port}" in result.stdout
    assert "2 active, 0 revoked" in result.stdout
    assert "mosquitto.log" in result.stdout  # the log tail

    data = json.loads(hub.cli("status", "--json").stdout)
    assert data["running"] and data["accepting"] and data["pid"] == hub.broker.pid
    assert data["broker_accounts"] == 3  # the hub + 2 terminals

    hub.broker.stop()
    stopped = hub.cli("status")
    assert stopped.exit_code == EXIT_NOT_RUNNING
    assert "not running" in stopped.stdout


def test_status_is_not_fooled_by_a_stale_pid_file(hub: Hub) -> None:
    hub.broker.stop()
    hub.broker.pid_path.write_text(f"{os.getpid()}\n")  # a live process, but not a Mosquitto
    result = hub.cli("status")
    assert result.exit_code == EXIT_NOT_RUNNING


def test_check_passes_on_good_files_without_touching_the_live_broker(hub: Hub) -> None:
    pid = hub.broker.pid
    result = hub.cli("check", "--json")
    assert result.exit_code == 0, result.output
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert {c["state"] for c in checks.values()} == {"ok"}, checks
    assert set(checks) == {"files", "settings", "accounts", "trial start", "logins", "live broker"}
    assert hub.broker.pid == pid and hub.broker.running

    table = hub.cli("check")
    assert table.exit_code == 0 and "trial start" in table.stdout


def test_check_reports_a_broken_configuration(hub: Hub) -> None:
    with open(hub.broker.config_path, "a") as f:
        f.write("no_such_option true\n")
    result = hub.cli("check", "--json")
    assert result.exit_code == EXIT_PROBLEMS
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert checks["trial start"]["state"] == "problem"
    assert "no_such_option" in checks["trial start"]["detail"]
    assert checks["settings"]["state"] == "problem"  # not what the hub generates
    assert hub.broker.running  # the live broker read its file before: it is untouched


def test_check_reports_accounts_out_of_step_with_the_registry(hub: Hub) -> None:
    add_terminal_row(hub.engine, "quay-3")  # registered, broker files not rewritten
    result = hub.cli("check", "--json")
    assert result.exit_code == EXIT_PROBLEMS
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert "missing" in checks["accounts"]["detail"]
    assert checks["logins"]["state"] == "problem"


def test_commands_refuse_to_run_as_another_user_than_the_hubs(hub: Hub, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        data_dir = tmp_path / "someone-elses"
        data_dir.mkdir()
        os.chown(data_dir, 65534, 65534)
    else:
        data_dir = Path("/")  # owned by root, and we are not root
    env = write_env(tmp_path / "other.env", data_dir, hub.settings.mqtt_port)
    for command in ("config", "status", "users", "check"):
        result = hub.cli(command, env_file=env)
        assert result.exit_code == EXIT_SETTINGS, (command, result.output)
        assert "run this as that user" in result.stderr


def test_bad_settings_are_refused_without_echoing_a_secret(hub: Hub, tmp_path: Path) -> None:
    env = write_env(
        tmp_path / "bad.env",
        hub.settings.data_dir,
        hub.settings.mqtt_port,
        SIPAS_HUB_MQTT_PASSWORD="changeme",
    )
    result = hub.cli("status", env_file=env)
    assert result.exit_code == EXIT_SETTINGS
    assert "SIPAS_HUB_MQTT_PASSWORD" in result.stderr and "placeholder" in result.stderr
    assert "changeme" not in result.output

    missing = hub.cli("status", env_file=tmp_path / "missing.env")
    assert missing.exit_code == EXIT_SETTINGS and "missing.env" in missing.stderr


def test_status_of_a_broker_that_does_not_accept_connections_where_expected(
    hub: Hub, tmp_path: Path
) -> None:
    # Settings changed since the hub started (another port): the broker runs, not where they say.
    env = write_env(tmp_path / "moved.env", hub.settings.data_dir, find_free_port())
    result = hub.cli("status", env_file=env)
    assert result.exit_code == EXIT_BROKER
    assert f"running (pid {hub.broker.pid}), NOT accepting connections" in result.stdout


def test_config_and_revoke_work_on_the_broker_of_a_running_hub_service(tmp_path: Path) -> None:
    """The commands' idea of the broker (folder, files, hub account) is the hub's own."""
    from hub.service import HubService
    from tests.fixtures.hub import make_settings

    settings = make_settings(tmp_path / "hub")
    service = HubService(settings)
    service.start(api=False)
    try:
        env_file = write_env(
            tmp_path / "hub.env",
            settings.data_dir,
            settings.mqtt_port,
            SIPAS_HUB_API_TOKEN=settings.api_token,
        )
        terminal_id, password = add_terminal_row(service.engine, "quay-1")
        runner = CliRunner()
        config = runner.invoke(app, ["broker", "--env-file", str(env_file), "config"])
        assert config.exit_code == 0, config.output
        assert "reloaded" in config.stderr
        rc = try_connect(settings.mqtt_host, settings.mqtt_port, terminal_id, password)
        assert rc is not None and not rc.is_failure

        revoke = runner.invoke(
            app, ["broker", "--env-file", str(env_file), "revoke", terminal_id, "--yes"]
        )
        assert revoke.exit_code == 0, revoke.output
        rc = try_connect(settings.mqtt_host, settings.mqtt_port, terminal_id, password)
        assert rc is not None and rc.is_failure
        assert service.ingest.connected.is_set()  # the hub itself is still connected
    finally:
        service.stop()
