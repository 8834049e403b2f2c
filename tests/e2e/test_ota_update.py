"""Over-the-air update end to end: a simulated terminal booted from its own flash directory
(provisioning.simdevice: a child process per boot, rebooted on every reset), a real hub (its own
Mosquitto, SQLite, the API serving the bundle at /api/v1/firmware/{version}/{path}) and the hub's
rollout (what ``sipas-hub terminals update`` runs).

- a good version is taken, the terminal reboots into it, confirms it, and the rollout is done;
- a version that crashes on import, and one that never connects, are each rolled back by the
  terminal's fixed boot code after 3 tries; the rollout stops with the reason, and every rating
  pressed along the way reaches the hub exactly once;
- after three failed boots the terminal starts in safe mode, says so in its heartbeat, keeps and
  drains its outbox, and still takes an update.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from hub.models import Rating, Terminal
from hub.service import HubService
from provisioning.bundle import build_bundle
from provisioning.simdevice import SimDevice, install
from provisioning.simulate import FIRMWARE_DIR

pytestmark = pytest.mark.e2e

TRIAL_S = 4.0  # the trial reset timer (10 minutes on the device)
CRASH_DELAY_S = 0.2  # main.py's pause before it resets a crashed application (10 s on the device)


def make_bundle(tmp: Path, version: str, breakage: str | None = None) -> Path:
    """A generic simulator bundle (.py files) of this firmware as ``version``, optionally broken."""
    fw = tmp / f"fw-{version}"
    shutil.copytree(FIRMWARE_DIR, fw, ignore=shutil.ignore_patterns("__pycache__"))
    app_py = fw / "app" / "app.py"
    app_py.write_text(
        app_py.read_text().replace('FW_VERSION = "0.2.0"', f'FW_VERSION = "{version}"')
    )
    if breakage == "crashes on import":
        with open(fw / "app" / "start.py", "a") as f:
            f.write('\nraise RuntimeError("this build is broken")\n')
    elif breakage == "never connects":
        with open(fw / "app" / "mqtt.py", "a") as f:
            f.write(
                "\n\ndef _cannot(self, clean_session=True):\n"
                '    raise OSError("this build cannot reach the broker")\n\n\n'
                "MQTTClient.connect = _cannot\n"
            )
    out = tmp / "bundles" / version
    build_bundle(out, config=None, firmware_dir=fw, compiled=False)
    return out


def wait(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


def hub_ratings(hub: HubService, tid: str) -> list[tuple[int, int]]:
    with Session(hub.engine) as s:
        q = select(Rating.seq, Rating.level).where(Rating.terminal_id == tid)
        return sorted((int(a), int(b)) for a, b in s.exec(q))


def heartbeat(hub: HubService, tid: str) -> dict[str, Any]:
    with Session(hub.engine) as s:
        t = s.get(Terminal, tid)
        st: dict[str, Any] = json.loads(t.last_heartbeat or "{}") if t else {}
        return st


def rollout(hub: HubService, bundle: Path, tid: str, timeout: float = 60) -> dict[str, Any]:
    stored, _ = hub.rollouts.store.import_dir(bundle)
    rid = hub.rollouts.start(version=stored.version, terminal=tid, timeout_s=timeout)
    return rollout_end(hub, rid, timeout + 10)


def rollout_end(hub: HubService, rid: int, timeout: float) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        r = hub.rollouts.get(rid)
        return r if r is not None and r["state"] != "running" else None

    r: dict[str, Any] = wait(ended, timeout, f"rollout {rid} ended")
    return r


def all_delivered(hub: HubService, tid: str, pressed: dict[int, int], dev: SimDevice) -> None:
    """Every confirmed press is in the hub once, with its level, and nothing else is."""
    wait(lambda: len(hub_ratings(hub, tid)) >= len(pressed), 30, f"hub has {pressed}")
    wait(lambda: dev.info()["depth"] == 0, 20, "outbox drained")
    assert hub_ratings(hub, tid) == sorted(pressed.items())


@pytest.fixture
def terminal(hub: HubService, tmp_path: Path) -> tuple[str, Path]:
    device = hub.add_terminal(desk="quay-1")
    # a heartbeat soon after each change (confirmation, drained outbox): the rollout sees it at once
    root = install(tmp_path / "flash", config={**device, "heartbeat_min_s": 0})
    return str(device["terminal_id"]), root


def test_update_taken_then_broken_versions_rolled_back(
    hub: HubService, terminal: tuple[str, Path], tmp_path: Path
) -> None:
    tid, root = terminal
    pressed: dict[int, int] = {}

    def press(dev: SimDevice, level: int) -> None:
        seq = dev.press(level)
        assert seq is not None and seq not in pressed
        pressed[seq] = level

    with SimDevice(root, trial_s=TRIAL_S, crash_delay_s=CRASH_DELAY_S) as dev:
        assert dev.wait_ready()["fw"] == "0.2.0"
        press(dev, 1)
        press(dev, 2)
        all_delivered(hub, tid, pressed, dev)
        wait(lambda: heartbeat(hub, tid).get("fw") == "0.2.0", 10, "first heartbeat")

        # 1. a good version: staged, swapped in at the reboot, confirmed by its first heartbeat
        r = rollout(hub, make_bundle(tmp_path, "0.3.0"), tid)
        assert r["state"] == "done", r
        assert r["terminals"][0]["state"] == "updated" and r["terminals"][0]["from_fw"] == "0.2.0"
        dev.wait_ready(fw="0.3.0")
        assert [b["tries"] for b in dev.boots if b["version"] == "0.3.0"] == [1]  # one trial boot
        assert dev.info()["ota"] == "ok"
        assert json.loads((root / "ota.json").read_text()) == {"state": "ok", "version": "0.3.0"}
        assert not (root / "app.old").exists() and not (root / "app.new").exists()
        assert heartbeat(hub, tid)["ota"] == "ok"
        press(dev, 3)

        # 2. a version that crashes on import: three tries, then the boot code rolls it back
        r = rollout(hub, make_bundle(tmp_path, "0.4.0", "crashes on import"), tid)
        assert r["state"] == "stopped", r
        assert "rolled back to 0.3.0" in r["reason"], r
        info = dev.wait_ready(fw="0.3.0", ota="rolled_back")
        assert info["safe_mode"] is False
        trial = [(b["state"], b["tries"]) for b in dev.boots if b["version"] == "0.4.0"]
        assert trial == [("trial", 1), ("trial", 2), ("trial", 3), ("rolled_back", 0)], dev.boots
        assert sum(x.endswith("crash RuntimeError: this build is broken") for x in dev.lines()) == 3
        press(dev, 1)

        # 3. a version that runs but never reaches the broker: the trial timer resets it, 3 times
        r = rollout(hub, make_bundle(tmp_path, "0.5.0", "never connects"), tid)
        assert r["state"] == "stopped" and "rolled back to 0.3.0" in r["reason"], r
        trial = [(b["state"], b["tries"]) for b in dev.boots if b["version"] == "0.5.0"]
        assert trial == [("trial", 1), ("trial", 2), ("trial", 3), ("rolled_back", 0)], dev.boots
        assert sum(x.endswith("reset trial timer") for x in dev.lines()) == 3
        assert (root / "app" / "app.py").read_text().count('FW_VERSION = "0.3.0"') == 1
        all_delivered(hub, tid, pressed, dev)
        assert heartbeat(hub, tid)["fw"] == "0.3.0" and heartbeat(hub, tid)["ota"] == "rolled_back"


def test_ratings_pressed_on_a_version_that_never_connects_survive_its_rollback(
    hub: HubService, terminal: tuple[str, Path], tmp_path: Path
) -> None:
    tid, root = terminal
    pressed: dict[int, int] = {}
    with SimDevice(root, trial_s=TRIAL_S, crash_delay_s=CRASH_DELAY_S) as dev:
        dev.wait_ready()
        wait(lambda: heartbeat(hub, tid).get("fw") == "0.2.0", 10, "first heartbeat")
        hub.rollouts.store.import_dir(make_bundle(tmp_path, "0.3.0", "never connects"))
        rid = hub.rollouts.start(version="0.3.0", terminal=tid, timeout_s=60)
        for tries in (1, 2, 3):  # citizens keep rating while the broken version is on trial
            dev.wait_ready(fw="0.3.0")
            boots = len(dev.boots)
            assert dev.boots[-1]["tries"] == tries and dev.info()["online"] is False
            for level in (1, 3):
                seq = dev.press(level)
                assert seq is not None
                pressed[seq] = level
            wait(lambda n=boots: len(dev.boots) > n, TRIAL_S + 10, "the trial timer's reset")
        assert dev.wait_ready(fw="0.2.0", ota="rolled_back")
        r = rollout_end(hub, rid, 30)
        assert r["state"] == "stopped" and "rolled back to 0.2.0" in r["reason"], r
        all_delivered(hub, tid, pressed, dev)
    assert len(pressed) == 6


def test_safe_mode_after_three_failed_boots_keeps_the_outbox_and_takes_an_update(
    hub: HubService, terminal: tuple[str, Path], tmp_path: Path
) -> None:
    tid, root = terminal
    pressed: dict[int, int] = {}
    # Three boots that never get healthy: no Wi-Fi, and the power is cut within a second.
    with SimDevice(root, network=False, crash_delay_s=CRASH_DELAY_S) as dev:
        for level in (1, 2, 3):
            info = dev.wait_ready()
            assert info["safe_mode"] is False
            seq = dev.press(level)
            assert seq is not None
            pressed[seq] = level
            dev.power_cut()
        info = dev.wait_ready()
        assert info["safe_mode"] is True and info["depth"] == 3  # the outbox is kept
        dev.network(True)
        wait(lambda: heartbeat(hub, tid).get("safe_mode") is True, 15, "a safe-mode heartbeat")
        all_delivered(hub, tid, pressed, dev)  # and drained

        r = rollout(hub, make_bundle(tmp_path, "0.3.0"), tid)  # an update is still accepted
        assert r["state"] == "done", r
        info = dev.wait_ready(fw="0.3.0")
        assert info["safe_mode"] is False and dev.boots[-1]["trial"]
        wait(lambda: dev.info()["ota"] == "ok", 10, "confirmed")
        assert "safe_mode" not in heartbeat(hub, tid)
        assert (root / "bootfail").read_text() == "0"
