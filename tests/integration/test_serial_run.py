"""``sipas-provision run``: register, build, deploy and verify in one go against a real hub and the
stand-in board (MicroPython already on it: --skip-flash; flashing itself is covered in
test_esptool_image.py), and ``--batch`` where one failed terminal does not stop the others."""

from __future__ import annotations

import os
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from hub.service import HubService
from provisioning import records
from provisioning.cli import app
from tests.fixtures.fake_esp32 import FakeESP32, host_hal

pytestmark = pytest.mark.integration

CHIP = "24a1600b3c1d"


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200", "NO_COLOR": "1"})


@pytest.fixture
def board(tmp_path: Path) -> Iterator[FakeESP32]:
    dev = FakeESP32(tmp_path / "device-fs", hal=host_hal)
    dev.power_on()  # MicroPython is on it, nothing else yet
    yield dev
    dev.close()


@pytest.fixture
def dead_port() -> Iterator[str]:
    """A port whose board does not answer (not flashed, or a broken cable)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    yield os.ttyname(slave)
    os.close(master)
    os.close(slave)


def common(hub: HubService, tmp_path: Path) -> list[str]:
    return [
        "--skip-flash",
        "--py",
        "--hub",
        hub.api_url,
        "--token",
        hub.settings.api_token,
        "--insecure-hub-district-key",
        "--records",
        str(tmp_path / "records"),
        "--bundles",
        str(tmp_path / "bundles"),
        "--wifi-ssid",
        "office",
        "--boot-timeout",
        "30",
    ]


@pytest.fixture
def desks(api: httpx.Client) -> None:
    for d in ("quay-1", "quay-2"):
        api.post("/desks", json={"id": d, "name": f"Quầy {d[-1]}"}).raise_for_status()


def test_run_takes_a_flashed_board_to_a_verified_terminal(
    hub: HubService, api: httpx.Client, desks: None, board: FakeESP32, tmp_path: Path
) -> None:
    r = cli(
        "run", "--port", board.port, "--desk", "quay-1", "--chip-id", CHIP,
        *common(hub, tmp_path),
    )  # fmt: skip

    assert r.exit_code == 0, r.output
    tid = f"t-{CHIP}"
    assert "is ready" in r.stderr and tid in r.stdout and "ok" in r.stdout
    rec = records.load(tmp_path / "records" / f"{tid}.json")
    assert [e["event"] for e in rec["history"]][-3:] == ["built", "deployed", "verified"]
    assert board.files()["/config.json"]  # the terminal's configuration is on the board
    [rating] = api.get("/ratings", params={"terminal": tid}).json()
    assert rating["test"] is True  # the technician's press, excluded from reports
    [term] = [t for t in api.get("/terminals").json() if t["id"] == tid]
    assert term["desk"] == "quay-1"


def test_batch_goes_on_after_a_failed_terminal_and_sums_up(
    hub: HubService,
    api: httpx.Client,
    desks: None,
    board: FakeESP32,
    dead_port: str,
    tmp_path: Path,
) -> None:
    csv = tmp_path / "terminals.csv"
    csv.write_text(
        "port,desk,chip_id\n"
        f"{dead_port},quay-2,0000000000bb\n"  # fails at deploy: nothing answers on that port
        f"{board.port},quay-1,{CHIP}\n"
    )
    r = cli("run", "--batch", str(csv), *common(hub, tmp_path))

    assert r.exit_code == 5, r.output  # the first failure's exit code
    lines = [x for x in r.stdout.splitlines() if "│" in x or "|" in x]
    failed = next(x for x in lines if dead_port in x)
    ok = next(x for x in lines if board.port in x)
    assert "deploy" in failed and "no MicroPython prompt" in failed
    assert "ok" in ok and f"t-{CHIP}" in ok
    assert "2/2 terminals" in r.stderr  # the overall progress bar reached the end


def test_batch_stop_on_error_leaves_the_rest(
    hub: HubService, desks: None, board: FakeESP32, dead_port: str, tmp_path: Path
) -> None:
    csv = tmp_path / "terminals.csv"
    csv.write_text(
        f"port,desk,chip_id\n{dead_port},quay-2,0000000000bb\n{board.port},quay-1,{CHIP}\n"
    )
    r = cli("run", "--batch", str(csv), "--stop-on-error", *common(hub, tmp_path))
    assert r.exit_code == 5
    assert board.port not in r.stdout  # never started
    assert board.executed == []


def test_a_bad_batch_file_is_refused_with_its_line(hub: HubService, tmp_path: Path) -> None:
    csv = tmp_path / "terminals.csv"
    csv.write_text("port,desk,scale\n/dev/ttyUSB0,quay-1,three\n")
    r = cli("run", "--batch", str(csv), *common(hub, tmp_path))
    assert r.exit_code == 2
    assert "line 2: scale must be a number" in r.stderr
