"""``sipas-hub terminals update`` and ``terminals rollouts`` as a technician runs them: a separate
process talking to the running hub's API, with scripted terminals answering on a real Mosquitto."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.broker import find_free_port
from hub.service import HubService
from tests.integration.test_firmware_bundle import make_bundle
from tests.integration.test_rollout import NEW, OLD, ScriptedTerminal, Timeline, wait_heard

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def terminals(hub: HubService) -> Iterator[Callable[..., ScriptedTerminal]]:
    made: list[ScriptedTerminal] = []
    timeline = Timeline()

    def make(desk: str = "quay-1", **kw: Any) -> ScriptedTerminal:
        t = ScriptedTerminal(hub.add_terminal(desk=desk), timeline, **kw)
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()
    for t in made:
        assert t.error is None, f"{t.tid}: {t.error!r}"


@pytest.fixture
def sipas_hub(hub: HubService, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        full = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(REPO_ROOT),
            "COLUMNS": "200",
            "SIPAS_HUB_OFFICE": hub.settings.office,
            "SIPAS_HUB_DATA_DIR": str(hub.settings.data_dir),
            "SIPAS_HUB_API_PORT": str(hub.settings.api_port),
            "SIPAS_HUB_API_TOKEN": hub.settings.api_token,
            **env,
        }
        return subprocess.run(
            [sys.executable, "-m", "hub.cli", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=full,
            cwd=tmp_path,  # no stray .env
        )

    return run


def test_update_a_desk_then_list_the_rollouts(
    hub: HubService,
    sipas_hub: Callable[..., subprocess.CompletedProcess[str]],
    terminals: Callable[..., ScriptedTerminal],
    tmp_path: Path,
) -> None:
    a, b = terminals(), terminals()
    other = terminals("quay-2")
    wait_heard(hub, [a, b, other])
    bundle = make_bundle(tmp_path / "bundle", NEW)
    p = sipas_hub("terminals", "update", str(bundle), "--desk", "quay-1")
    assert p.returncode == 0, p.stderr
    assert f"version {NEW} imported" in p.stderr and "done: 2 updated" in p.stderr
    assert "2/2" in p.stderr  # the progress bar's last state: 2 of 2 terminals
    for t in (a, b):
        assert t.tid in p.stdout and t.fw == NEW
    assert p.stdout.count("updated") == 2
    assert other.commands == [] and other.fw == OLD

    again = sipas_hub("terminals", "update", str(bundle), "--desk", "quay-1")
    assert again.returncode == 0, again.stderr
    assert "already on the hub" in again.stderr and "done: 2 skipped" in again.stderr

    listing = sipas_hub("terminals", "rollouts")
    assert listing.returncode == 0, listing.stderr
    lines = [ln for ln in listing.stdout.splitlines() if NEW in ln]
    assert len(lines) == 2
    assert "desk:quay-1" in lines[0] and "2 skipped" in lines[0] and "cli:" in lines[0]
    assert "2 updated" in lines[1]
    one = sipas_hub("terminals", "rollouts", "1")
    assert one.returncode == 0 and a.tid in one.stdout and "updated" in one.stdout


def test_a_stopped_rollout_exits_1_with_the_reason(
    hub: HubService,
    sipas_hub: Callable[..., subprocess.CompletedProcess[str]],
    terminals: Callable[..., ScriptedTerminal],
    tmp_path: Path,
) -> None:
    t = terminals(mode="refuse")
    wait_heard(hub, [t])
    p = sipas_hub("terminals", "update", str(make_bundle(tmp_path / "b", NEW)), "--terminal", t.tid)
    assert p.returncode == 1, p.stderr
    assert f"{t.tid}: refused the update: sha256 of app/app.mpy does not match" in p.stderr
    assert "keep their version" in p.stderr and "failed" in p.stdout


def test_clear_errors_and_exit_codes(
    hub: HubService,
    sipas_hub: Callable[..., subprocess.CompletedProcess[str]],
    terminals: Callable[..., ScriptedTerminal],
    tmp_path: Path,
) -> None:
    def spoil(m: dict[str, Any]) -> None:
        m["app"][0]["sha256"] = "0" * 64

    bad = make_bundle(tmp_path / "bad", NEW, edit=spoil)
    p = sipas_hub("terminals", "update", str(bad), "--all")
    assert p.returncode == 2 and "bad bundle" in p.stderr and "sha256 does not match" in p.stderr

    good = make_bundle(tmp_path / "good", NEW)
    p = sipas_hub("terminals", "update", str(good))
    assert p.returncode == 2 and "exactly one of --terminal T, --desk D, --all" in p.stderr

    p = sipas_hub("terminals", "update", str(good), "--desk", "nowhere")
    assert p.returncode == 2 and "no active terminal on desk nowhere" in p.stderr

    p = sipas_hub(
        "terminals", "update", str(good), "--all", SIPAS_HUB_API_PORT=str(find_free_port())
    )
    assert p.returncode == 3 and "cannot reach the hub's API" in p.stderr

    p = sipas_hub("terminals", "rollouts", SIPAS_HUB_API_TOKEN="")
    assert p.returncode == 2 and "SIPAS_HUB_API_TOKEN is not set" in p.stderr

    silent = terminals(mode="silent")
    wait_heard(hub, [silent])
    with httpx.Client(
        base_url=hub.api_url, headers={"Authorization": f"Bearer {hub.settings.api_token}"}
    ) as api:
        r = api.post("/rollouts", json={"version": NEW, "all": True, "timeout_s": 60})
        assert r.status_code == 202
        p = sipas_hub("terminals", "update", str(good), "--all")
        assert p.returncode == 4 and "is still running" in p.stderr
        rows = json.loads(api.get("/audit", params={"entity": "rollout"}).content)
        assert [a["action"] for a in rows] == ["start"]
