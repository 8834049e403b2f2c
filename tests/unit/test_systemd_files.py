"""The systemd unit and the settings example shipped in hub/systemd/."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from hub.config import Settings

pytestmark = pytest.mark.unit
SYSTEMD = Path(__file__).resolve().parents[2] / "hub" / "systemd"
UNIT = SYSTEMD / "sipas-hub.service"
ENV_EXAMPLE = SYSTEMD / "hub.env.example"


def parse_unit(text: str) -> configparser.ConfigParser:
    # systemd allows repeated keys; the unit here repeats none, so strict parsing also checks that.
    unit = configparser.ConfigParser(interpolation=None, strict=True, delimiters=("=",))
    unit.optionxform = str  # type: ignore[assignment, method-assign]  # keys are case-sensitive
    unit.read_string(text)
    return unit


def test_the_unit_runs_the_hub_as_sipas_with_its_settings_and_restarts_it() -> None:
    unit = parse_unit(UNIT.read_text())
    service = unit["Service"]
    argv = shlex.split(service["ExecStart"])
    assert Path(argv[0]).name == "sipas-hub" and argv[1:] == ["run"]
    assert argv[0] == "/opt/sipas/.venv/bin/sipas-hub"
    assert service["User"] == "sipas"
    assert service["EnvironmentFile"] == "/etc/sipas/hub.env"
    assert (service["Restart"], service["RestartSec"]) == ("always", "2")
    assert service["KillMode"] in {"control-group", "mixed"}
    assert service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"] == "/var/lib/sipas-hub"
    assert service["NoNewPrivileges"] == service["PrivateTmp"] == "true"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    unit = parse_unit(UNIT.read_text())
    assert unit["Service"]["ExecStart"].startswith("/opt/sipas/.venv/bin/sipas-hub ")
    # systemd-analyze is not on every machine that runs the tests (containers, CI images): where
    # it is missing, this test checks the unit as INI only (above); where it exists, systemd
    # itself parses the unit and rejects unknown keys, bad values and a missing ExecStart program.
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return
    # verify wants ExecStart's program to exist: point it at this checkout's sipas-hub.
    sipas_hub = Path(sys.executable).with_name("sipas-hub")
    assert sipas_hub.exists(), "sipas-hub is not installed in this venv: run scripts/setup.sh"
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace("/opt/sipas/.venv/bin/sipas-hub", str(sipas_hub)))
    proc = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0 and UNIT.name not in proc.stderr, proc.stderr


def env_keys(text: str) -> dict[str, str]:
    """Every SIPAS_HUB_ setting in the example, set or commented out, with its value."""
    found = re.findall(r"^#?(SIPAS_HUB_[A-Z_]+)=(.*)$", text, flags=re.MULTILINE)
    return dict(found)


def test_the_env_example_documents_every_setting() -> None:
    keys = env_keys(ENV_EXAMPLE.read_text())
    expected = {f"SIPAS_HUB_{name.upper()}" for name in Settings.model_fields}
    assert set(keys) == expected


def test_the_env_example_cannot_be_used_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    # Its API token is a placeholder the settings refuse: nobody runs a hub with it by mistake.
    for name in [n for n in os.environ if n.startswith("SIPAS_HUB_")]:
        monkeypatch.delenv(name)
    with pytest.raises(ValidationError, match="placeholder") as exc:
        Settings(_env_file=ENV_EXAMPLE)
    assert [e["loc"] for e in exc.value.errors()] == [("api_token",)]


def test_the_env_examples_defaults_are_the_settings_defaults() -> None:
    text = ENV_EXAMPLE.read_text()
    commented = dict(re.findall(r"^#(SIPAS_HUB_[A-Z_]+)=(.*)$", text, flags=re.MULTILINE))
    defaults = Settings.model_construct()
    for key, value in commented.items():
        default = getattr(defaults, key.removeprefix("SIPAS_HUB_").lower())
        if isinstance(default, BaseModel):
            continue  # a JSON object: the example shows "{}" (every key at its default)
        shown = "" if default is None else str(default).lower()
        assert value.lower() == shown, key
