"""The supervisor's and technician's office commands, on a real SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hub.cli import app
from hub.db import make_engine
from hub.ingest import Ingestor
from hub.registry import add_terminal
from tests.helpers import rating_topic, record

pytestmark = pytest.mark.integration


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SIPAS_HUB_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SIPAS_HUB_OFFICE", "office-test")
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        res = runner.invoke(app, list(args))
        assert res.exit_code == code, res.output
        return res.output

    return run


def test_day_at_the_desk_from_the_command_line(cli, tmp_path: Path) -> None:
    cli("desk", "add", "quay-1", "Quầy 1 - Hộ tịch")
    cli("official", "add", "an", "Nguyễn Văn An")
    cli("duty", "in", "quay-1", "an", "--actor", "truong-bo-phan")
    assert "an" in cli("desk", "list")
    assert "already checked in" in cli("duty", "in", "quay-1", "an", code=1)
    assert "recorded" in cli(
        "case", "handed-back", "HS-1", "--desk", "quay-1", "--field", "Hộ tịch"
    )
    assert "already recorded" in cli("case", "handed-back", "HS-1", "--desk", "quay-1")
    out = cli("audit")
    assert "truong-bo-phan" in out and "check-in" in out and "handed-back" in out
    assert "does not exist" in cli("rating", "exclude", "42", "--reason", "on_behalf", code=1)
    assert "unknown exclusion reason" in cli("rating", "exclude", "42", "--reason", "whim", code=1)
    cli("duty", "out", "quay-1")


def test_verify_reports_a_deleted_rating_and_exits_1(cli, tmp_path: Path) -> None:
    cli("desk", "list")  # creates the database
    engine = make_engine(f"sqlite:///{tmp_path / 'hub.sqlite3'}")
    _, dev = add_terminal(engine, office="office-test")
    Ingestor(engine, "office-test").process(
        [(rating_topic(dev), record(dev, n)) for n in (1, 2, 3)]
    )
    engine.dispose()
    assert "3 ratings from 1 terminals verified" in cli("verify")
    with sqlite3.connect(tmp_path / "hub.sqlite3") as c:
        c.execute("DELETE FROM rating WHERE seq = 2")
    out = cli("verify", code=1)
    assert "missing" in out and "chain_broken" in out
