"""The hub's over-the-air rollout against terminals on a real Mosquitto (docs/protocol.md,
"Application bundle and over-the-air update").

The terminals here are real MQTT clients scripted in the test, answering as the firmware's
``app/ota.py`` would: they check the command's signature with an HMAC of their own, download the
manifest and the app files from the hub's URL (no token) and check every sha256, then reply and
send heartbeats. Each one can instead refuse, roll back, stay silent, or never confirm the trial.
(tests/e2e/test_rollout_real_terminal.py runs the real firmware through the same rollout.)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session, col, select

from hub import protocol, registry
from hub.db import make_engine
from hub.models import AuditLog, Rollout, RolloutStep, Terminal
from hub.service import HubService
from tests.fixtures.hub import make_settings
from tests.fixtures.mosquitto import OFFICE, MqttClient, TestMosquitto
from tests.integration.test_firmware_bundle import _tar, make_bundle

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
OLD, NEW = "0.1.0", "0.2.0"


class Timeline:
    """What every scripted terminal did, in order, from all threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[float, str, str]] = []

    def add(self, tid: str, what: str) -> None:
        with self.lock:
            self.events.append((time.monotonic(), tid, what))

    def of(self, tid: str) -> list[str]:
        with self.lock:
            return [w for _, t, w in self.events if t == tid]

    def order(self, what: str) -> list[str]:
        with self.lock:
            return [t for _, t, w in self.events if w == what]


class ScriptedTerminal:
    """A terminal's MQTT side, answering ``update`` the way ``mode`` says:

    ok: reply ok, go offline (reboot), heartbeat fw=NEW ota=trial, then ota=ok;
    refuse: reply ok=false with an error; rolled_back: reply ok, come back on OLD with
    ota=rolled_back; silent: never answer; trial: reply ok, come back on NEW in trial forever."""

    def __init__(
        self,
        device: dict[str, Any],
        timeline: Timeline,
        *,
        mode: str = "ok",
        fw: str = OLD,
        ota: str | None = "ok",
        prior: str | None = None,
    ) -> None:
        self.device = device
        self.tid: str = device["terminal_id"]
        self.key = bytes.fromhex(device["hub_key"])
        self.timeline = timeline
        self.mode = mode
        self.fw, self.ota = fw, (prior or ota)
        self.commands: list[dict[str, Any]] = []
        self.checks: dict[str, bool] = {}
        self.error: BaseException | None = None
        deadline = time.monotonic() + 10
        while True:  # the hub reloads the broker's accounts: retry until it lets us in
            try:
                self.mqtt = MqttClient(
                    device["broker_host"], device["broker_port"], self.tid,
                    device["mqtt_password"], client_id=self.tid,
                )  # fmt: skip
                break
            except (ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.mqtt.subscribe(self.topic("cmd"))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        self.heartbeat()

    def topic(self, leaf: str) -> str:
        return protocol.topic(OFFICE, self.tid, leaf)

    def heartbeat(self, state: str = "online") -> None:
        if state != "online":
            self.mqtt.publish(self.topic("status"), b'{"v":1,"state":"offline"}', retain=True)
            return
        now = int(time.time())
        st: dict[str, Any] = {
            "v": 1, "state": "online", "fw": self.fw, "epoch": 1, "last_seq": 0, "outbox": 0,
            "uptime": 5, "boots": 1, "time": now, "clock": True,
            "tag": protocol.status_tag(self.key, self.tid, 1, 0, now).hex(),
        }  # fmt: skip
        if self.ota is not None:
            st["ota"] = self.ota
        self.mqtt.publish(self.topic("status"), json.dumps(st), retain=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.mqtt.receive(timeout=0.2)
            except Exception:
                continue
            try:
                self._command(json.loads(msg.payload))
            except BaseException as e:  # reported by the test
                self.error = e
                return

    def _command(self, cmd: dict[str, Any]) -> None:
        if cmd.get("cmd") != "update":
            return
        self.commands.append(cmd)
        self.timeline.add(self.tid, "cmd")
        if self.mode == "silent":
            return
        args = cmd["args"]
        manifest = httpx.get(args["url"] + "manifest.json", timeout=5).content
        mine = hmac.new(
            self.key, b"SIPAS-U1" + self.tid.encode() + b"\x00" + manifest, hashlib.sha256
        ).hexdigest()
        self.checks["sig"] = hmac.compare_digest(mine, args["sig"])
        m = json.loads(manifest)
        self.checks["version"] = m["version"] == args["version"]
        self.checks["files"] = all(
            hashlib.sha256(httpx.get(args["url"] + e["path"], timeout=5).content).hexdigest()
            == e["sha256"]
            for e in m["app"]
        )
        if self.mode == "refuse":
            self._reply(cmd, ok=False, error="sha256 of app/app.mpy does not match")
            return
        self._reply(cmd, ok=True, staged=args["version"])
        self.heartbeat("offline")  # it reboots
        self.timeline.add(self.tid, "reboot")
        if self.mode == "rolled_back":
            self.ota = "rolled_back"
            self.heartbeat()
            return
        self.fw, self.ota = args["version"], "trial"
        self.heartbeat()
        if self.mode == "trial":
            return
        time.sleep(0.2)
        self.ota = "ok"
        self.heartbeat()
        self.timeline.add(self.tid, "confirmed")

    def _reply(self, cmd: dict[str, Any], **kw: Any) -> None:
        self.mqtt.publish(self.topic("reply"), json.dumps({"v": 1, "id": cmd["id"], **kw}))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.mqtt.close()


@pytest.fixture
def timeline() -> Timeline:
    return Timeline()


@pytest.fixture
def terminals(hub: HubService, timeline: Timeline) -> Iterator[Callable[..., ScriptedTerminal]]:
    made: list[ScriptedTerminal] = []

    def make(desk: str = "quay-1", **kw: Any) -> ScriptedTerminal:
        device = hub.add_terminal(desk=desk)
        t = ScriptedTerminal(device, timeline, **kw)
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()
    for t in made:
        assert t.error is None, f"{t.tid}: {t.error!r}"


@pytest.fixture
def bundle(api: httpx.Client, tmp_path: Path) -> Path:
    src = make_bundle(tmp_path / "bundle", NEW)
    api.post("/firmware", content=_tar(src)).raise_for_status()
    return src


def wait_heard(hub: HubService, terms: list[ScriptedTerminal], timeout: float = 10) -> None:
    """Until the hub has every terminal's first heartbeat (online, with its fw)."""
    engine = hub.engine
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with Session(engine) as s:
            rows = {t.id: registry.health(t) for t in s.exec(select(Terminal)).all()}
        if all(rows.get(t.tid, {}).get("online") and rows[t.tid]["fw"] for t in terms):
            return
        time.sleep(0.05)
    raise AssertionError("the hub did not hear every terminal's heartbeat")


def run_rollout(api: httpx.Client, timeout: float = 20, **body: Any) -> dict[str, Any]:
    r = api.post("/rollouts", json={"version": NEW, **body})
    assert r.status_code == 202, r.text
    rid = r.json()["id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ro: dict[str, Any] = api.get(f"/rollouts/{rid}").json()
        if ro["state"] != "running":
            return ro
        time.sleep(0.05)
    raise AssertionError(f"rollout {rid} still running after {timeout} s")


def audit(hub: HubService) -> list[tuple[str, str, str]]:
    with Session(hub.engine) as s:
        rows = s.exec(
            select(AuditLog)
            .where(col(AuditLog.entity).in_(["rollout", "terminal"]))
            .order_by(col(AuditLog.id))
        ).all()
        return [(a.action, a.entity_id, a.detail) for a in rows if a.action != "add"]


def test_all_terminals_one_at_a_time_with_their_own_signature(
    hub: HubService,
    api: httpx.Client,
    bundle: Path,
    terminals: Callable[..., ScriptedTerminal],
    timeline: Timeline,
) -> None:
    terms = [terminals("quay-2"), terminals("quay-1"), terminals("quay-1")]
    wait_heard(hub, terms)
    ro = run_rollout(api, all=True)
    assert ro["state"] == "done" and ro["reason"] is None, ro
    order = [st["terminal"] for st in ro["terminals"]]
    assert order == sorted(t.tid for t in terms[1:]) + [terms[0].tid]  # by desk, then id
    assert [st["state"] for st in ro["terminals"]] == ["updated"] * 3
    assert all(st["from_fw"] == OLD for st in ro["terminals"])

    # never two terminals updating at once: each command comes after the previous confirmation
    assert timeline.order("cmd") == order
    seq = [(t, w) for _, t, w in timeline.events if w in ("cmd", "confirmed")]
    assert seq == [(tid, w) for tid in order for w in ("cmd", "confirmed")]
    for a, b in zip(ro["terminals"], ro["terminals"][1:], strict=False):
        assert b["started_at"] >= a["finished_at"]

    url = f"http://127.0.0.1:{hub.settings.api_port}/api/v1/firmware/{NEW}/"
    for t in terms:
        assert len(t.commands) == 1
        assert t.commands[0]["args"]["url"] == url and t.commands[0]["args"]["version"] == NEW
        assert t.checks == {"sig": True, "version": True, "files": True}, t.tid
    assert len({t.commands[0]["args"]["sig"] for t in terms}) == 3  # one key per terminal

    rows = audit(hub)
    assert [(a, e) for a, e, _ in rows] == (
        [("start", str(ro["id"]))]
        + [(a, tid) for tid in order for a in ("update_sent", "updated")]
        + [("done", str(ro["id"]))]
    )
    assert json.loads(rows[0][2])["target"] == "all"
    assert api.get("/terminals").json()[0]["fw"] == NEW


def test_a_refusal_stops_the_rollout_and_leaves_the_rest_untouched(
    hub: HubService,
    api: httpx.Client,
    bundle: Path,
    terminals: Callable[..., ScriptedTerminal],
    timeline: Timeline,
) -> None:
    terms = sorted([terminals(), terminals(), terminals()], key=lambda t: t.tid)
    first, refusing, last = terms  # a desk's terminals are updated in the order of their ids
    refusing.mode = "refuse"
    wait_heard(hub, terms)
    ro = run_rollout(api, desk="quay-1")
    assert ro["state"] == "stopped"
    assert ro["reason"] == (
        f"{refusing.tid}: refused the update: sha256 of app/app.mpy does not match"
    )
    assert [(st["terminal"], st["state"]) for st in ro["terminals"]] == [
        (first.tid, "updated"),
        (refusing.tid, "failed"),
        (last.tid, "not_started"),
    ]
    assert first.fw == NEW and refusing.fw == OLD and last.fw == OLD
    assert timeline.of(last.tid) == [] and last.commands == []  # never sent anything
    acts = [(a, e) for a, e, _ in audit(hub)]
    assert ("update_failed", refusing.tid) in acts and acts[-1] == ("stopped", str(ro["id"]))


def test_a_rollback_stops_the_rollout(
    hub: HubService,
    api: httpx.Client,
    bundle: Path,
    terminals: Callable[..., ScriptedTerminal],
    timeline: Timeline,
) -> None:
    # The terminal's last update had rolled back already: that old heartbeat must not count.
    t = terminals(mode="rolled_back", prior="rolled_back")
    wait_heard(hub, [t])
    ro = run_rollout(api, terminal=t.tid)
    assert ro["state"] == "stopped"
    assert ro["reason"] == f"{t.tid}: the new version did not come up: rolled back to {OLD}"
    assert timeline.of(t.tid) == ["cmd", "reboot"]
    step = ro["terminals"][0]
    assert step["state"] == "failed" and step["command_id"] == t.commands[0]["id"]


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("silent", "no reply to the update command within 3 s"),
        ("trial", f"did not come back on {NEW} within 3 s (last heartbeat: fw {NEW}, ota trial)"),
    ],
)
def test_no_confirmation_within_the_timeout_stops_the_rollout(
    hub: HubService,
    api: httpx.Client,
    bundle: Path,
    terminals: Callable[..., ScriptedTerminal],
    mode: str,
    reason: str,
) -> None:
    stuck = terminals(mode=mode)
    other = terminals("quay-2")
    wait_heard(hub, [stuck, other])
    started = time.monotonic()
    ro = run_rollout(api, all=True, timeout_s=3)
    assert time.monotonic() - started >= 3
    assert ro["state"] == "stopped" and ro["reason"] == f"{stuck.tid}: {reason}"
    assert [st["state"] for st in ro["terminals"]] == ["failed", "not_started"]
    assert other.commands == [] and other.fw == OLD
    if mode == "trial":
        assert ro["terminals"][0]["state"] == "failed"


def test_terminals_already_on_the_version_are_skipped(
    hub: HubService,
    api: httpx.Client,
    bundle: Path,
    terminals: Callable[..., ScriptedTerminal],
    timeline: Timeline,
) -> None:
    done = terminals(fw=NEW)
    todo = terminals()
    wait_heard(hub, [done, todo])
    ro = run_rollout(api, desk="quay-1")
    assert ro["state"] == "done"
    states = {st["terminal"]: (st["state"], st["reason"]) for st in ro["terminals"]}
    assert states == {done.tid: ("skipped", f"already on {NEW}"), todo.tid: ("updated", None)}
    assert done.commands == [] and timeline.of(done.tid) == []
    assert ("update_skipped", done.tid) in [(a, e) for a, e, _ in audit(hub)]
    # the same rollout again: nothing to do, nothing sent
    again = run_rollout(api, desk="quay-1")
    assert again["state"] == "done" and again["counts"] == {"skipped": 2}
    assert len(todo.commands) == 1


def test_an_offline_terminal_stops_the_rollout_at_once(
    hub: HubService, api: httpx.Client, bundle: Path, terminals: Callable[..., ScriptedTerminal]
) -> None:
    t = terminals()
    wait_heard(hub, [t])
    t.heartbeat("offline")
    deadline = time.monotonic() + 5
    while api.get("/terminals").json()[0]["online"] and time.monotonic() < deadline:
        time.sleep(0.05)
    ro = run_rollout(api, terminal=t.tid, timeout_s=60, timeout=5)
    assert ro["state"] == "stopped" and "offline" in ro["reason"] and t.commands == []


def test_one_rollout_at_a_time_and_clear_refusals(
    hub: HubService, api: httpx.Client, bundle: Path, terminals: Callable[..., ScriptedTerminal]
) -> None:
    t = terminals(mode="silent")
    wait_heard(hub, [t])
    first = api.post("/rollouts", json={"version": NEW, "terminal": t.tid, "timeout_s": 60})
    assert first.status_code == 202
    second = api.post("/rollouts", json={"version": NEW, "all": True})
    assert second.status_code == 409
    assert f"rollout {first.json()['id']} is still running" in second.json()["detail"]
    assert api.get("/rollouts").json()[0]["state"] == "running"

    for body, status, words in [
        ({"version": "9.9.9", "all": True}, 400, "not imported"),
        ({"version": NEW, "desk": "nowhere"}, 400, "no active terminal on desk nowhere"),
        ({"version": NEW, "terminal": "t-000000000000"}, 400, "not registered"),
        ({"version": NEW, "all": True, "desk": "quay-1"}, 422, "exactly one"),
    ]:
        r = api.post("/rollouts", json=body)
        assert r.status_code == status and words in r.text, (body, r.text)
    assert api.get("/rollouts/999").status_code == 404
    assert (
        httpx.post(f"{hub.api_url}/rollouts", json={"version": NEW, "all": True}).status_code == 401
    )


def test_refuses_an_update_url_terminals_cannot_reach(
    hub: HubService, api: httpx.Client, bundle: Path, terminals: Callable[..., ScriptedTerminal]
) -> None:
    t = terminals()
    wait_heard(hub, [t])
    hub.settings.advertised_host = "0.0.0.0"
    r = api.post("/rollouts", json={"version": NEW, "all": True})
    assert r.status_code == 400 and "SIPAS_HUB_ADVERTISED_HOST" in r.json()["detail"]
    assert t.commands == [] and api.get("/rollouts").json() == []


def test_stopping_the_hub_mid_rollout_marks_it_interrupted(
    hub: HubService, api: httpx.Client, bundle: Path, terminals: Callable[..., ScriptedTerminal]
) -> None:
    t = terminals(mode="silent")
    wait_heard(hub, [t])
    rid = api.post("/rollouts", json={"version": NEW, "all": True, "timeout_s": 60}).json()["id"]
    deadline = time.monotonic() + 5
    while not t.commands and time.monotonic() < deadline:
        time.sleep(0.05)
    hub.stop()
    again = HubService(hub.settings)
    try:
        ro = again.rollouts.get(rid)
        assert ro is not None and ro["state"] == "interrupted"
        assert ro["reason"] == "the hub was stopped during the rollout"
        assert ro["terminals"][0]["state"] == "interrupted"
        assert "check the version it reports" in ro["terminals"][0]["reason"]
    finally:
        again.engine.dispose()


def test_a_hub_crash_mid_rollout_is_reported_as_interrupted_after_restart(
    mosquitto: TestMosquitto, tmp_path: Path
) -> None:
    """The hub process is SIGKILLed while it waits for a terminal; the next start says so."""
    data = tmp_path / "hub"
    settings = make_settings(
        data,
        manage_broker=False,
        mqtt_user=mosquitto.hub_user,
        mqtt_password=mosquitto.hub_password,
    )
    settings.mqtt_port = mosquitto.port
    settings.data_dir.mkdir(parents=True)
    engine = make_engine(settings.db_url)
    _, device = registry.add_terminal(engine, office=OFFICE, desk="quay-1")
    engine.dispose()
    mosquitto.add_terminal(device["terminal_id"], device["mqtt_password"])
    device.update(broker_host=mosquitto.host, broker_port=mosquitto.port)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "SIPAS_HUB_OFFICE": OFFICE,
        "SIPAS_HUB_DATA_DIR": str(data),
        "SIPAS_HUB_MANAGE_BROKER": "false",
        "SIPAS_HUB_MQTT_PORT": str(mosquitto.port),
        "SIPAS_HUB_MQTT_USER": mosquitto.hub_user,
        "SIPAS_HUB_MQTT_PASSWORD": mosquitto.hub_password,
        "SIPAS_HUB_API_PORT": str(settings.api_port),
        "SIPAS_HUB_API_TOKEN": settings.api_token,
    }
    log = tmp_path / "hub.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hub.cli", "run"], env=env, cwd=tmp_path,
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    timeline = Timeline()
    t = None
    try:
        deadline = time.monotonic() + 20
        while b"hub running" not in log.read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        t = ScriptedTerminal(device, timeline, mode="silent")
        api = httpx.Client(
            base_url=f"http://127.0.0.1:{settings.api_port}/api/v1",
            headers={"Authorization": f"Bearer {settings.api_token}"},
        )
        with api:
            src = make_bundle(tmp_path / "bundle", NEW)
            api.post("/firmware", content=_tar(src)).raise_for_status()
            while not api.get("/terminals").json()[0]["online"]:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            r = api.post("/rollouts", json={"version": NEW, "all": True, "timeout_s": 60})
            assert r.status_code == 202, r.text
            while not t.commands:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        engine = make_engine(settings.db_url)
        with Session(engine) as s:  # what the crash left: still "running"
            assert s.exec(select(Rollout.state)).one() == "running"
        engine.dispose()
        again = HubService(settings)  # what `sipas-hub run` does first
        try:
            ro = again.rollouts.get(r.json()["id"])
            assert ro is not None and ro["state"] == "interrupted", ro
            assert ro["reason"] == "the hub restarted during the rollout"
            assert ro["terminals"][0]["state"] == "interrupted"
            with Session(again.engine) as s:
                last = s.exec(select(AuditLog).order_by(col(AuditLog.id).desc())).first()
                assert last is not None and (last.action, last.entity) == ("interrupted", "rollout")
                assert s.exec(select(RolloutStep.state)).all() == ["interrupted"]
        finally:
            again.engine.dispose()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if t is not None:
            t.close()
