"""``sipas-provision verify`` end to end: the stand-in ESP32 (pseudo-terminal, real mpremote) boots
the deployed firmware (.py bundle, host board for the pins), which connects to a real hub with a
real Mosquitto; the technician's test press goes through the raw REPL into the firmware's own
``App.press(level, test=True)``, round-trips through the hub and is found, flagged TEST, in its API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from hub.service import HubService
from provisioning import records
from provisioning.bundle import build_bundle
from provisioning.cli import app
from tests.fixtures.fake_esp32 import FakeESP32, host_hal

pytestmark = pytest.mark.integration


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200", "NO_COLOR": "1"})


@pytest.fixture
def board(tmp_path: Path) -> Iterator[FakeESP32]:
    dev = FakeESP32(tmp_path / "device-fs", hal=host_hal)
    yield dev
    dev.close()


def provision(hub: HubService, board: FakeESP32, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    device = hub.add_terminal(desk="quay-1")
    rec = records.new_record(
        device=device,
        hub_url=hub.api_url,
        chip_id=device["terminal_id"][2:],
        desk="quay-1",
        district_key_source=records.HUB_INTERIM,
    )
    path = tmp_path / "records" / f"{device['terminal_id']}.json"
    records.save(path, rec)
    bundle = tmp_path / "bundle"
    build_bundle(bundle, config={**device, "wifi_ssid": "office"}, compiled=False)
    r = cli("deploy", str(bundle), "--port", board.port)
    assert r.exit_code == 0, r.output
    return path, device


def test_verify_boots_connects_and_round_trips_a_test_press(
    hub: HubService, api: httpx.Client, board: FakeESP32, tmp_path: Path
) -> None:
    record, device = provision(hub, board, tmp_path)
    tid = device["terminal_id"]

    r = cli(
        "verify",
        "--port",
        board.port,
        "--record",
        str(record),
        "--token",
        hub.settings.api_token,
        "--boot-timeout",
        "30",
    )

    assert r.exit_code == 0, r.output
    assert f"{tid} verified" in r.stderr and "TEST, excluded from reports" in r.stderr
    ratings = api.get("/ratings", params={"terminal": tid}).json()
    assert len(ratings) == 1
    assert ratings[0]["test"] is True and ratings[0]["level"] == 1
    assert api.get("/ratings", params={"terminal": tid, "valid": True}).json() == []
    rec = records.load(record)
    event = rec["history"][-1]
    assert event["event"] == "verified" and event["rating_id"] == ratings[0]["id"]
    # the board was reset afterwards and runs its application again, online at the hub
    assert board.wait_for_resets(3, timeout=10) >= 3
    terminals = {t["id"]: t for t in api.get("/terminals").json()}
    assert terminals[tid]["online"] is True


def test_verify_reports_a_terminal_that_is_not_provisioned(
    hub: HubService, board: FakeESP32, tmp_path: Path
) -> None:
    record, _ = provision(hub, board, tmp_path)
    (board.root / "config.json").unlink()  # deployed without its configuration

    r = cli(
        "verify",
        "--port",
        board.port,
        "--record",
        str(record),
        "--token",
        hub.settings.api_token,
        "--boot-timeout",
        "20",
    )

    assert r.exit_code == 6
    assert "not provisioned" in r.stderr and "sipas-provision deploy" in r.stderr


def test_verify_of_an_unregistered_terminal_points_to_register(
    hub: HubService, board: FakeESP32, tmp_path: Path
) -> None:
    rec = records.new_record(
        device={"terminal_id": "t-0000000000aa", "office": "office-test"},
        hub_url=hub.api_url,
        chip_id="0000000000aa",
        desk=None,
        district_key_source=records.HUB_INTERIM,
    )
    path = tmp_path / "t.json"
    records.save(path, rec)
    r = cli(
        "verify", "--port", board.port, "--record", str(path), "--token", hub.settings.api_token
    )
    assert r.exit_code == 6
    assert "not registered at the hub" in r.stderr and "register" in r.stderr
    assert board.executed == []  # the board was not touched
