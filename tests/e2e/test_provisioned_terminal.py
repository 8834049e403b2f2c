"""The provisioning issue's key test: a terminal provisioned by the tool (`register`, `build`),
booted from its bundle by `simulate`, connects to the hub's real Mosquitto with the credentials the
tool created and gets a rating stored and acknowledged."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from hub.broker import find_free_port
from hub.service import HubService
from provisioning.cli import app

pytestmark = pytest.mark.e2e
Tool = Callable[..., str]


@pytest.fixture
def tool(hub: HubService, tmp_path: Path) -> Tool:
    """`sipas-provision ARGS` against the test hub, set up through the environment as a technician
    would; its stdout (the data; messages go to stderr)."""
    env = {
        "SIPAS_PROVISION_HUB": hub.api_url,
        "SIPAS_PROVISION_TOKEN": hub.settings.api_token,
        "SIPAS_PROVISION_RECORDS": str(tmp_path / "records"),
        "COLUMNS": "200",
    }

    def run(*args: str, code: int = 0) -> str:
        res = CliRunner().invoke(app, list(args), env=env)
        assert res.exit_code == code, res.output
        return res.stdout

    return run


def test_provisioned_terminal_rates_through_the_real_hub(
    tool: Tool, api: httpx.Client, tmp_path: Path
) -> None:
    api.post("/desks", json={"id": "quay-1", "name": "Quầy 1 - Hộ tịch"}).raise_for_status()

    tid = tool(
        "register", "--mac", "24:6F:28:AA:BB:01", "--desk", "quay-1", "--insecure-hub-district-key"
    ).strip()
    assert tid == "t-246f28aabb01"
    record = tmp_path / "records" / f"{tid}.json"
    bundle = tmp_path / "bundle"
    tool("build", "--record", str(record), "--out", str(bundle), "--wifi-ssid", "UBND-P1")
    assert (bundle / "app" / "app.mpy").exists()  # the device bundle, not a simulator build

    script = tmp_path / "presses.txt"
    script.write_text("# a citizen, very satisfied\n1\n")
    root = tmp_path / "flash"
    out = tool("simulate", str(bundle), "--root", str(root), "--script", str(script))
    assert out.splitlines() == ["stored 1", "outbox 0"]  # stored, then acknowledged by the hub
    history = [h["event"] for h in json.loads(record.read_text())["history"]]
    assert history == ["registered", "built", "simulated"]  # it used the terminal's sequence

    [rating] = api.get("/ratings").json()
    assert (rating["terminal_id"], rating["desk"], rating["level"], rating["seq"]) == (
        tid,
        "quay-1",
        1,
        1,
    )
    # The simulated flash: the application came from the bundle, and the outbox holds nothing.
    manifest = json.loads((bundle / "manifest.json").read_text())
    src = {e["path"].removeprefix("src/") for e in manifest["sources"]}
    assert {p.relative_to(root).as_posix() for p in (root / "app").glob("*.py")} == src
    # The firmware's own modules (on sys.path through the hub fixture's simulator).
    from app.config import validate
    from app.outbox import Outbox

    cfg = validate(json.loads((root / "config.json").read_text()))
    assert Outbox(cfg["outbox_dir"], cfg["epoch"], cfg["outbox_capacity"]).depth() == 0


def test_ratings_made_while_the_hub_is_unreachable_are_delivered_on_the_next_run(
    tool: Tool, hub: HubService, api: httpx.Client, tmp_path: Path
) -> None:

    tool("register", "--chip-id", "246f28aabb02", "--insecure-hub-district-key")
    record, bundle, root = tmp_path / "records/t-246f28aabb02.json", tmp_path / "b", tmp_path / "r"
    # A wrong broker port (nothing listens there): the press is stored, nothing is acknowledged.
    tool(
        "build",
        "--record",
        str(record),
        "--out",
        str(bundle),
        "--broker-port",
        str(find_free_port()),
    )
    script = tmp_path / "presses.txt"
    script.write_text("3\n")
    args = ["simulate", str(bundle), "--root", str(root), "--script", str(script)]
    out = tool(*args, "--drain-timeout", "1", code=5)
    assert out.splitlines() == ["stored 1", "outbox 1"]
    assert api.get("/ratings").json() == []
    # Rebuilt with the hub's port and installed over the same flash: the outbox is kept and drains.
    tool(
        "build",
        "--record",
        str(record),
        "--out",
        str(bundle),
        "--broker-port",
        str(hub.settings.mqtt_port),
    )
    script.write_text("")
    assert tool(*args).splitlines() == ["outbox 0"]
    assert [(r["seq"], r["level"]) for r in api.get("/ratings").json()] == [(1, 3)]
