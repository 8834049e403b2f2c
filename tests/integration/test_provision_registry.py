"""`sipas-provision register / replace / retire` against a real hub and its real Mosquitto: the
records they keep, the secrets they never print, and the broker accounts they open and close."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import httpx
import pytest
from paho.mqtt.reasoncodes import ReasonCode
from sqlmodel import Session, select
from typer.testing import CliRunner

from hub import protocol
from hub.district import auth as district_auth
from hub.district.api import create_app as district_app
from hub.district.db import make_engine as district_engine
from hub.district.db import migrate as district_migrate
from hub.district.models import TerminalKey
from hub.models import Rating
from hub.service import HubService
from provisioning.cli import app
from provisioning.records import SECRET_KEYS, terminal_id_from_chip
from provisioning.registration import broker_address
from provisioning.simulate import SimTerminal
from tests.fixtures.district import Served, add_office, settings_for
from tests.fixtures.hub import pump
from tests.fixtures.mosquitto import try_connect

pytestmark = pytest.mark.integration
PILOT = "--insecure-hub-district-key"


@pytest.fixture
def tool(hub: HubService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run `sipas-provision` against the test hub; the hub and token come from the environment,
    as a technician would set them."""
    monkeypatch.setenv("SIPAS_PROVISION_HUB", hub.api_url)
    monkeypatch.setenv("SIPAS_PROVISION_TOKEN", hub.settings.api_token)
    monkeypatch.setenv("SIPAS_PROVISION_RECORDS", str(tmp_path / "records"))
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> tuple[str, str]:
        res = runner.invoke(app, list(args))
        assert res.exit_code == code, res.output
        return res.stdout, res.stderr

    return run


def _record(tmp_path: Path, tid: str) -> dict:
    return json.loads((tmp_path / "records" / f"{tid}.json").read_text())


def _login(hub: HubService, device: dict) -> ReasonCode | None:
    return try_connect(
        "127.0.0.1", hub.settings.mqtt_port, device["terminal_id"], device["mqtt_password"]
    )


def _no_secret_in(text: str, device: dict) -> None:
    for k in SECRET_KEYS:
        if device.get(k):
            assert device[k] not in text, f"{k} was printed"


def test_register_refuses_without_a_district_key_source(
    tool, api: httpx.Client, tmp_path: Path
) -> None:
    _, msg = tool("register", "--mac", "A4:CF:12:34:56:78", code=4)
    assert "missing --district" in msg and PILOT in msg and "Nothing was registered" in msg
    _, msg = tool(
        "register", "--chip-id", "a4cf12345678", "--district", "https://district.example", code=4
    )
    assert "missing --district-token" in msg and "Nothing was registered" in msg
    # A district that cannot be reached, or refuses the token: checked before the hub is asked.
    _, msg = tool(
        "register",
        "--chip-id",
        "a4cf12345678",
        "--district",
        "http://127.0.0.1:9",
        "--district-token",
        "sipasd_x",
        code=4,
    )
    assert "cannot reach the district server" in msg
    assert api.get("/terminals").json() == []  # nothing half-registered at the hub
    assert not (tmp_path / "records").exists()


def test_register_keeps_a_private_record_and_prints_no_secret(
    tool, hub: HubService, api: httpx.Client, tmp_path: Path
) -> None:
    api.post("/desks", json={"id": "quay-1", "name": "Quầy 1"}).raise_for_status()
    out, msg = tool("register", "--mac", "A4:CF:12:34:56:78", "--desk", "quay-1", PILOT)
    assert out.strip() == "t-a4cf12345678"
    path = tmp_path / "records" / "t-a4cf12345678.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    rec = json.loads(path.read_text())
    dev = rec["device"]
    assert rec["desk"] == "quay-1" and rec["office"] == "office-test" and rec["status"] == "active"
    assert rec["district_key_source"] == "hub-interim-insecure" and "warning" in rec
    assert dev["terminal_id"] == "t-a4cf12345678" and len(dev["district_key"]) == 64
    assert dev["broker_port"] == hub.settings.mqtt_port
    _no_secret_in(out + msg, dev)
    assert "pilot terminal" in msg
    # The hub knows it on its desk, and its broker account works now.
    [t] = api.get("/terminals").json()
    assert t["id"] == "t-a4cf12345678" and t["desk"] == "quay-1"
    assert _login(hub, dev) == 0  # CONNACK 0: accepted

    _, msg = tool("register", "--chip-id", "a4cf12345678", PILOT, code=2)
    assert "already records t-a4cf12345678" in msg
    _, msg = tool("register", "--chip-id", "a4cf1234567", PILOT, code=2)
    assert "not a chip id" in msg
    _, msg = tool("register", "--chip-id", "00000000aa01", "--desk", "quay-9", PILOT, code=3)
    assert "desk 'quay-9' does not exist" in msg and "sipas-hub desk add" in msg


def test_wrong_token_and_unreachable_hub_say_what_to_do(tool, monkeypatch) -> None:
    monkeypatch.setenv("SIPAS_PROVISION_TOKEN", "wrong")
    _, msg = tool("register", "--chip-id", "00000000aa01", PILOT, code=3)
    assert "refused the API token" in msg
    monkeypatch.setenv("SIPAS_PROVISION_HUB", "http://127.0.0.1:9")
    _, msg = tool("register", "--chip-id", "00000000aa01", PILOT, code=3)
    assert "cannot reach the hub" in msg


def test_retire_removes_the_broker_account(
    tool, hub: HubService, api: httpx.Client, tmp_path: Path
) -> None:
    tool("register", "--chip-id", "00000000bb01", PILOT)
    dev = _record(tmp_path, "t-00000000bb01")["device"]
    assert _login(hub, dev) == 0
    _, msg = tool("retire", "t-00000000bb01", "--reason", "water damage")
    assert "can no longer connect" in msg
    refused = _login(hub, dev)
    assert refused is not None and refused.is_failure  # a real CONNECT is refused
    rec = _record(tmp_path, "t-00000000bb01")
    assert rec["status"] == "retired" and rec["history"][-1]["reason"] == "water damage"
    [t] = api.get("/terminals").json()
    assert t["active"] is False
    audit = api.get("/audit", params={"entity": "terminal"}).json()
    assert audit[0]["action"] == "retire" and audit[0]["detail"]["reason"] == "water damage"
    _, msg = tool("retire", "t-00000000bb01", code=3)
    assert "already retired" in msg


def test_replace_keeps_the_desks_history_and_swaps_credentials(
    tool, hub: HubService, api: httpx.Client, tmp_path: Path
) -> None:
    api.post("/desks", json={"id": "quay-2", "name": "Quầy 2"}).raise_for_status()
    tool("register", "--chip-id", "00000000cc01", "--desk", "quay-2", PILOT)
    old_dev = _record(tmp_path, "t-00000000cc01")["device"]
    old = SimTerminal({**old_dev, "heartbeat_min_s": 0}, tmp_path / "sim-old")
    try:
        old.press(1)
        pump([old], lambda: old.depth() == 0)
        # The hub refuses to replace a terminal whose last heartbeat reported unsent ratings.
        pump([old], lambda: api.get("/terminals").json()[0]["outbox"] == 0)
    finally:
        old.stop()

    out, msg = tool("replace", "t-00000000cc01", "A4:CF:00:00:CC:02", PILOT)
    assert out.strip() == "t-a4cf0000cc02" and "can no longer connect" in msg
    new_rec = _record(tmp_path, "t-a4cf0000cc02")
    new_dev = new_rec["device"]
    _no_secret_in(out + msg, new_dev)
    assert new_rec["desk"] == "quay-2" and new_rec["history"][0]["replaces"] == "t-00000000cc01"
    old_rec = _record(tmp_path, "t-00000000cc01")
    assert old_rec["status"] == "replaced" and old_rec["replaced_by"] == "t-a4cf0000cc02"

    refused = _login(hub, old_dev)
    assert refused is not None and refused.is_failure
    assert _login(hub, new_dev) == 0
    new = SimTerminal(new_dev, tmp_path / "sim-new")
    try:
        new.press(2)
        pump([new], lambda: new.depth() == 0)
    finally:
        new.stop()
    rows = api.get("/ratings", params={"desk": "quay-2"}).json()
    assert [(r["terminal_id"], r["level"]) for r in rows] == [
        ("t-00000000cc01", 1),
        ("t-a4cf0000cc02", 2),
    ]


def test_terminals_are_told_an_address_they_can_reach() -> None:
    # A hub without SIPAS_HUB_ADVERTISED_HOST answers its own loopback/any address: the terminal
    # gets the address this PC reached the hub at instead; --broker-host overrides both.
    lan = "http://192.168.1.10:8080/api/v1"
    assert broker_address({"broker_host": "127.0.0.1"}, lan, None) == "192.168.1.10"
    assert broker_address({"broker_host": "0.0.0.0"}, lan, None) == "192.168.1.10"
    assert broker_address({"broker_host": "10.0.0.2"}, lan, None) == "10.0.0.2"
    assert broker_address({"broker_host": "127.0.0.1"}, "http://localhost:8080", None) == (
        "127.0.0.1"
    )
    assert broker_address({"broker_host": "127.0.0.1"}, lan, "hub.local") == "hub.local"
    assert terminal_id_from_chip("A4:CF:12:34:56:78") == "t-a4cf12345678"
    assert terminal_id_from_chip("t-a4cf12345678") == "t-a4cf12345678"


@pytest.fixture
def district(tmp_path: Path):
    """A real district server (SQLite, migrated) on a free port, knowing the hub's office, and a
    provisioning token for it."""
    url = f"sqlite:///{tmp_path / 'district.sqlite3'}"
    engine = district_engine(url)
    district_migrate(engine)
    add_office(engine, "office-test", "UBND phường Thử")
    token = district_auth.create_token(
        engine, name="ky.thuat", role="provisioner", office="office-test"
    )[1]
    with Served(district_app(settings_for(url, tmp_path), engine)) as server:
        yield server.url, token, engine
    engine.dispose()


def test_register_takes_the_district_key_from_the_district_server(
    tool, hub: HubService, api: httpx.Client, tmp_path: Path, district
) -> None:
    url, token, engine = district
    api.post("/desks", json={"id": "quay-3", "name": "Quầy 3"}).raise_for_status()
    out, msg = tool(
        "register",
        "--chip-id",
        "00000000dd01",
        "--desk",
        "quay-3",
        "--district",
        url,
        "--district-token",
        token,
    )
    assert out.strip() == "t-00000000dd01" and "pilot" not in msg
    rec = _record(tmp_path, "t-00000000dd01")
    dev = rec["device"]
    assert rec["district_key_source"] == "district-server" and "warning" not in rec
    assert rec["district"] == url and rec["status"] == "active"
    with Session(engine) as s:
        issued = s.get(TerminalKey, ("t-00000000dd01", 1))
    assert issued is not None and issued.office == "office-test" and issued.desk == "quay-3"
    assert dev["district_key"] == issued.district_key  # the district's key, not the hub's
    _no_secret_in(out + msg, dev)

    # The terminal signs with it; what the hub stores verifies with the district's key only.
    sim = SimTerminal(dev, tmp_path / "sim-dd01")
    try:
        sim.press(3)
        pump([sim], lambda: sim.depth() == 0)
    finally:
        sim.stop()
    [row] = api.get("/ratings", params={"desk": "quay-3"}).json()
    with Session(hub.engine) as s:
        stored = s.exec(select(Rating).where(Rating.id == row["id"])).one()
    raw = bytes(stored.raw)
    assert protocol.verify_tag(
        bytes.fromhex(issued.district_key), stored.terminal_id, raw[:16], raw[32:48]
    )


def test_a_district_failure_after_the_hub_leaves_a_record_to_finish(
    tool, api: httpx.Client, tmp_path: Path, district
) -> None:
    url, token, engine = district
    add_office(engine, "xa-khac")  # a token for another office passes the check, not the issue
    wrong = district_auth.create_token(engine, name="p", role="provisioner", office="xa-khac")[1]
    _, msg = tool(
        "register",
        "--chip-id",
        "00000000ee01",
        "--district",
        url,
        "--district-token",
        wrong,
        code=4,
    )
    assert "office xa-khac only" in msg
    assert "IS registered at the hub" in msg and "run the same command again" in msg
    rec = _record(tmp_path, "t-00000000ee01")
    assert rec["status"] == "pending-district" and "district_key" not in rec["device"]
    assert [t["id"] for t in api.get("/terminals").json()] == ["t-00000000ee01"]

    tool("register", "--chip-id", "00000000ee01", "--district", url, "--district-token", token)
    rec = _record(tmp_path, "t-00000000ee01")
    assert rec["status"] == "active" and len(rec["device"]["district_key"]) == 64
    assert rec["device"]["hub_key"]  # the hub's answer, kept from the first run
    with Session(engine) as s:
        issued = s.get(TerminalKey, ("t-00000000ee01", 1))
    assert issued is not None and issued.district_key == rec["device"]["district_key"]
