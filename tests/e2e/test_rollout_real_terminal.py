"""A real simulated terminal updated over the air by the hub's rollout.

The terminal is the real firmware booted like the chip (provisioning/simdevice.py: ``ota_boot.py``
first, then the application from the device's own ``app/``), on the hub's own Mosquitto. The new
version is a generic bundle built by ``provisioning.bundle.build_bundle`` from a copy of the
firmware with another ``FW_VERSION``. The hub signs the manifest with the terminal's key, the
terminal downloads and checks every file, reboots into the trial, confirms, and the rollout ends
``done``; a version that cannot start rolls back and stops the rollout.
"""

from __future__ import annotations

import io
import re
import shutil
import tarfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.service import HubService
from provisioning.bundle import build_bundle
from provisioning.simdevice import SimDevice, install

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
NEW = "0.9.0-e2e"


def firmware_copy(dest: Path, version: str, *, broken: bool = False) -> Path:
    shutil.copytree(
        REPO_ROOT / "firmware", dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    app = dest / "app" / "app.py"
    text = re.sub(r'^FW_VERSION = ".*"$', f'FW_VERSION = "{version}"', app.read_text(), flags=re.M)
    if broken:  # a version that cannot start: it must roll back on its own
        text += '\nraise RuntimeError("this build is broken")\n'
    app.write_text(text)
    return dest


def tar_dir(root: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                tf.add(p, arcname=p.relative_to(root).as_posix())
    return buf.getvalue()


def rollout(api: httpx.Client, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    r = api.post("/rollouts", json=body)
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ro: dict[str, Any] = api.get(f"/rollouts/{r.json()['id']}").json()
        if ro["state"] != "running":
            return ro
        time.sleep(0.2)
    raise AssertionError(f"rollout still running after {timeout} s: {ro}")


@pytest.fixture
def device(hub: HubService, tmp_path: Path) -> dict[str, Any]:
    cfg = hub.add_terminal(desk="quay-1")
    cfg.update(heartbeat_min_s=0)  # confirm and report at once (5 s on a desk)
    return cfg


def test_real_terminal_updates_through_the_rollout(
    hub: HubService, api: httpx.Client, device: dict[str, Any], tmp_path: Path
) -> None:
    root = install(tmp_path / "flash", config=device)
    bundle = tmp_path / "bundle"
    build_bundle(
        bundle, config=None, firmware_dir=firmware_copy(tmp_path / "fw", NEW), compiled=False
    )
    api.post("/firmware", content=tar_dir(bundle)).raise_for_status()
    with SimDevice(root, trial_s=60, crash_delay_s=0.2) as dev:
        old = dev.wait_ready(timeout=30)["fw"]
        assert old != NEW
        assert dev.press(1) == 1
        deadline = time.monotonic() + 20
        while not (api.get("/terminals").json()[0]["online"] and dev.depth() == 0):
            assert time.monotonic() < deadline, dev.lines()[-10:]
            time.sleep(0.1)

        ro = rollout(api, {"version": NEW, "terminal": device["terminal_id"]}, timeout=90)
        assert ro["state"] == "done", (ro, dev.lines()[-20:])
        step = ro["terminals"][0]
        assert (step["state"], step["from_fw"]) == ("updated", old)
        dev.wait_until(lambda i: i.get("fw") == NEW and i.get("ota") == "ok", 10, "confirmed")
        # the updated terminal still rates, and the hub stores it
        assert dev.press(2) == 2
        deadline = time.monotonic() + 20
        while len(api.get("/ratings").json()) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert (root / "app" / "app.py").read_bytes() == (bundle / "app" / "app.py").read_bytes()
    assert api.get("/terminals").json()[0]["fw"] == NEW


def test_a_version_that_cannot_start_rolls_back_and_stops_the_rollout(
    hub: HubService, api: httpx.Client, device: dict[str, Any], tmp_path: Path
) -> None:
    root = install(tmp_path / "flash", config=device)
    bundle = tmp_path / "bundle"
    build_bundle(
        bundle,
        config=None,
        firmware_dir=firmware_copy(tmp_path / "fw", NEW, broken=True),
        compiled=False,
    )
    api.post("/firmware", content=tar_dir(bundle)).raise_for_status()
    with SimDevice(root, trial_s=60, crash_delay_s=0.2) as dev:
        old = dev.wait_ready(timeout=30)["fw"]
        deadline = time.monotonic() + 20
        while not api.get("/terminals").json()[0]["online"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        ro = rollout(api, {"version": NEW, "all": True}, timeout=120)
        assert ro["state"] == "stopped", (ro, dev.lines()[-20:])
        assert ro["reason"] == (
            f"{device['terminal_id']}: the new version did not come up: rolled back to {old}"
        )
        info = dev.wait_until(lambda i: i.get("fw") == old, 10, "back on the old version")
        assert info["ota"] == "rolled_back"
