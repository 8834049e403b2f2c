"""A replayed update command, through the real hub and a real simulated terminal.

The terminal is the real firmware booted like the chip (provisioning/simdevice.py), on the hub's
own Mosquitto. The hub's rollout updates it to 0.3.0 while something on the broker records the
signed command; published again on the terminal's command topic, byte for byte, the terminal
refuses it with the reason, the hub's audit log records the refusal, and nothing is installed.
Going back to 0.2.0 with ``sipas-hub terminals update`` is refused by the terminal (and the rollout
stops with its reason) until ``--allow-downgrade`` signs the downgrade into the command; after
that, neither captured command can be replayed, not even the one that would now be an upgrade.

The hub's choice of count (:func:`hub.firmware.next_update_count`) is checked on its own below:
above every count it signed or heard a terminal report, and never below its clock.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session

from hub import firmware, protocol
from hub.db import make_engine
from hub.models import AuditLog
from hub.service import HubService
from provisioning.bundle import build_bundle
from provisioning.simdevice import SimDevice, install
from provisioning.simulate import FIRMWARE_DIR
from tests.fixtures.mosquitto import MqttClient

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
NEW, OLD = "0.3.0", "0.2.0"


def make_bundle(tmp: Path, version: str) -> Path:
    fw = tmp / f"fw-{version}"
    shutil.copytree(FIRMWARE_DIR, fw, ignore=shutil.ignore_patterns("__pycache__"))
    app_py = fw / "app" / "app.py"
    text = re.sub(
        r'^FW_VERSION = ".*"$', f'FW_VERSION = "{version}"', app_py.read_text(), flags=re.M
    )
    app_py.write_text(text)
    out = tmp / "bundles" / version
    build_bundle(out, config=None, firmware_dir=fw, compiled=False)
    return out


def sipas_hub(hub: HubService, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`sipas-hub ...` as a technician runs it on the hub (its API, the hub's settings)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO_ROOT),
        "COLUMNS": "200",
        "SIPAS_HUB_OFFICE": hub.settings.office,
        "SIPAS_HUB_DATA_DIR": str(hub.settings.data_dir),
        "SIPAS_HUB_API_PORT": str(hub.settings.api_port),
        "SIPAS_HUB_API_TOKEN": hub.settings.api_token,
    }
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=cwd,
        check=False,
    )


def rollout(api: httpx.Client, body: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    r = api.post("/rollouts", json=body)
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ro: dict[str, Any] = api.get(f"/rollouts/{r.json()['id']}").json()
        if ro["state"] != "running":
            return ro
        time.sleep(0.1)
    raise AssertionError(f"rollout still running after {timeout} s: {ro}")


def update_commands(spy: MqttClient, topic: str) -> list[tuple[bytes, dict[str, Any]]]:
    """Every update command the spy has seen on the terminal's command topic so far."""
    out = []
    while not spy.messages.empty():
        m = spy.messages.get_nowait()
        if m.topic == topic:
            msg = json.loads(m.payload)
            if msg.get("cmd") == "update":
                out.append((bytes(m.payload), msg))
    return out


def refusal(spy: MqttClient, topic: str, cid: str, timeout: float = 15) -> dict[str, Any]:
    def match(m: Any) -> bool:
        if m.topic != topic:
            return False
        msg = json.loads(m.payload)
        return bool(msg.get("id") == cid and msg.get("ok") is False)

    got = spy.receive_until(match, timeout=timeout)
    reply: dict[str, Any] = json.loads(got[-1].payload)
    return reply


def provisioned(hub: HubService, flash: Path) -> tuple[str, Path]:
    """A terminal registered on the hub and installed (the running firmware, OLD) in ``flash``."""
    device = hub.add_terminal(desk="quay-1")
    device.update(heartbeat_min_s=0)  # confirm and report at once (5 s on a desk)
    return device["terminal_id"], install(flash, config=device)


def wait_online(api: httpx.Client, dev: SimDevice) -> None:
    assert dev.wait_ready(timeout=30)["fw"] == OLD
    deadline = time.monotonic() + 20
    while not api.get("/terminals").json()[0]["online"]:
        assert time.monotonic() < deadline, dev.lines()[-10:]
        time.sleep(0.1)


def upload(api: httpx.Client, bundle: Path) -> None:
    p = api.post("/firmware", content=firmware.pack_bundle(firmware.load_bundle(bundle)))
    assert p.status_code == 201, p.text


def test_a_replayed_command_is_refused_and_a_downgrade_needs_allow_downgrade(
    hub: HubService, api: httpx.Client, tmp_path: Path
) -> None:
    tid, root = provisioned(hub, tmp_path / "flash")
    new_bundle = make_bundle(tmp_path, NEW)
    old_bundle = tmp_path / "bundles" / OLD
    build_bundle(old_bundle, config=None, firmware_dir=FIRMWARE_DIR, compiled=False)
    t_cmd = protocol.topic(hub.settings.office, tid, "cmd")
    t_reply = protocol.topic(hub.settings.office, tid, "reply")
    st = hub.settings
    # Anything that can publish on the command topic; here it listens first, then replays.
    spy = MqttClient(st.mqtt_host, st.mqtt_port, st.mqtt_user, st.mqtt_password)
    spy.subscribe(t_cmd)
    spy.subscribe(t_reply)
    try:
        with SimDevice(root, trial_s=60, crash_delay_s=0.2) as dev:
            wait_online(api, dev)

            # 1. the hub's rollout to 0.3.0, its signed command recorded on the way
            upload(api, new_bundle)
            ro = rollout(api, {"version": NEW, "terminal": tid})
            assert ro["state"] == "done", (ro, dev.lines()[-20:])
            dev.wait_until(lambda i: i.get("fw") == NEW and i.get("ota") == "ok", 10, "on 0.3.0")
            [(up_raw, up)] = update_commands(spy, t_cmd)
            count = up["args"]["count"]
            assert (root / "ota_count").read_text() == str(count)
            assert "downgrade" not in up["args"]
            # a terminal on the guard's firmware is not sent the old, count-less signature
            assert "sig" not in up["args"] and len(up["args"]["sig2"]) == 64

            # 2. the same command again, byte for byte: refused, nothing downloaded or staged
            spy.publish(t_cmd, up_raw)
            reply = refusal(spy, t_reply, up["id"])
            assert reply["error"] == (
                f"replayed or outdated command: count {count}, last accepted {count}"
            )
            assert reply["last_count"] == count
            info = dev.info()
            assert (info["fw"], info["ota"]) == (NEW, "ok")
            assert not (root / "app.new").exists()
            assert json.loads((root / "ota.json").read_text()) == {"state": "ok", "version": NEW}
            # ... and the hub says so: which command, which rollout first sent it, why
            deadline = time.monotonic() + 10
            while True:
                rows = api.get("/audit", params={"entity": "terminal", "entity_id": tid}).json()
                refused = [a for a in rows if a["action"] == "update_refused"]
                if refused or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert len(refused) == 1, rows
            detail = refused[0]["detail"]
            detail = json.loads(detail) if isinstance(detail, str) else detail
            assert detail["command"] == up["id"] and detail["sent_in_rollout"] == ro["id"]
            assert detail["reason"] == reply["error"] and detail["last_count"] == count

            # 3. back to 0.2.0 as a technician would: refused by the terminal, the rollout stops
            p = sipas_hub(hub, tmp_path, "terminals", "update", str(old_bundle), "--terminal", tid)
            assert p.returncode == 1, p.stdout + p.stderr
            why = f"refused the update: {OLD} is not newer than the running {NEW}"
            assert why in " ".join(p.stderr.split()) and "--allow-downgrade" in p.stderr
            stopped = api.get("/rollouts").json()[0]
            assert stopped["state"] == "stopped" and why in stopped["reason"]
            assert dev.info()["fw"] == NEW
            [(_, refused_down)] = update_commands(spy, t_cmd)
            assert "downgrade" not in refused_down["args"]

            # 4. ... and taken once the downgrade is signed as one
            p = sipas_hub(
                hub, tmp_path, "terminals", "update", str(old_bundle), "--terminal", tid,
                "--allow-downgrade", "--timeout", "60",
            )  # fmt: skip
            assert p.returncode == 0, p.stdout + p.stderr + "\n".join(dev.lines()[-20:])
            dev.wait_until(lambda i: i.get("fw") == OLD and i.get("ota") == "ok", 10, "on 0.2.0")
            [(down_raw, down)] = update_commands(spy, t_cmd)
            assert down["args"]["downgrade"] is True
            assert down["args"]["count"] > refused_down["args"]["count"] > count
            assert (root / "ota_count").read_text() == str(down["args"]["count"])
            start = [a for a in api.get("/audit", params={"entity": "rollout"}).json()
                     if a["action"] == "start"][0]  # fmt: skip
            sd = start["detail"]
            assert (json.loads(sd) if isinstance(sd, str) else sd)["allow_downgrade"] is True

            # 5. neither capture works any more, not even the one that would now be an upgrade
            for raw, cmd in ((up_raw, up), (down_raw, down)):
                spy.publish(t_cmd, raw)
                reply = refusal(spy, t_reply, cmd["id"])
                assert reply["error"].startswith("replayed or outdated command"), reply
            info = dev.info()
            assert (info["fw"], info["ota"]) == (OLD, "ok")
            assert not (root / "app.new").exists()
    finally:
        spy.close()


def test_a_terminal_whose_count_is_ahead_of_the_hub_is_signed_for_again_once(
    hub: HubService, api: httpx.Client, tmp_path: Path
) -> None:
    """Provisioned from a PC whose clock was ahead of the hub's, a terminal's /ota_count is above
    the count the hub signs: it refuses the first command and says its count; the hub signs once
    more, above it, and the update goes through in the same rollout."""
    tid, root = provisioned(hub, tmp_path / "flash")
    ahead = int(time.time()) + 86_400  # the PC's clock a day ahead of the hub's
    (root / "ota_count").write_text(str(ahead))
    new_bundle = make_bundle(tmp_path, NEW)
    t_cmd = protocol.topic(hub.settings.office, tid, "cmd")
    st = hub.settings
    spy = MqttClient(st.mqtt_host, st.mqtt_port, st.mqtt_user, st.mqtt_password)
    spy.subscribe(t_cmd)
    try:
        with SimDevice(root, trial_s=60, crash_delay_s=0.2) as dev:
            wait_online(api, dev)
            upload(api, new_bundle)
            ro = rollout(api, {"version": NEW, "terminal": tid})
            assert ro["state"] == "done", (ro, dev.lines()[-20:])
            dev.wait_until(lambda i: i.get("fw") == NEW and i.get("ota") == "ok", 10, "on 0.3.0")
            cmds = [c for _, c in update_commands(spy, t_cmd)]
            assert [c["args"]["count"] < ahead for c in cmds] == [True, False], cmds
            assert cmds[1]["args"]["count"] == ahead + 1 and cmds[0]["id"] != cmds[1]["id"]
            assert (root / "ota_count").read_text() == str(ahead + 1)
    finally:
        spy.close()


def test_the_old_signature_goes_only_to_firmware_before_the_guard() -> None:
    assert firmware.needs_sig1("0.1.0") and firmware.needs_sig1("0.1.9-rc1")
    assert firmware.needs_sig1(None) and firmware.needs_sig1("dev")  # unknown: it could be old
    assert not firmware.needs_sig1("0.2.0") and not firmware.needs_sig1("1.0.0")
    assert not firmware.needs_sig1("0.10.0")  # numbers, not text


def test_the_hub_signs_above_every_count_it_signed_or_heard_and_never_below_its_clock(
    tmp_path: Path,
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'hub.db'}")
    tid, now = "t-0123456789ab", 1_800_000_000

    def add(action: str, **detail: Any) -> None:
        with Session(engine) as s:
            s.add(AuditLog(actor="hub", action=action, entity="terminal", entity_id=tid,
                           detail=json.dumps(detail)))  # fmt: skip
            s.commit()

    def nxt(at: float = now) -> int:
        with Session(engine) as s:
            return firmware.next_update_count(s, tid, at)

    assert nxt() == now  # first update: the clock
    add("update_sent", count=now + 500)  # signed while the clock was ahead
    assert nxt() == now + 501  # the clock went back: the audit keeps it rising
    add("update_failed", last_count=now + 900)  # a terminal reported a later count
    assert nxt() == now + 901
    add("update_refused", last_count="garbage")
    add("update_sent", count=2**40)  # not a u32: never signed, ignored
    with Session(engine) as s:  # another terminal's rows and other actions do not count
        s.add(
            AuditLog(
                actor="hub",
                action="update_sent",
                entity="terminal",
                entity_id="t-00000000000f",
                detail=json.dumps({"count": now + 5000}),
            )
        )
        s.add(AuditLog(actor="hub", action="start", entity="rollout", entity_id=tid,
                       detail=json.dumps({"count": now + 5000})))  # fmt: skip
        s.commit()
    assert nxt() == now + 901
    assert nxt(now + 10_000) == now + 10_000  # a database restored from an old backup: the clock
    engine.dispose()
    with pytest.raises(ValueError, match="outside"):
        firmware.update_signature2(b"k", tid, b"{}", 2**32)
