"""Cancelling an over-the-air rollout (``POST /api/v1/rollouts/{id}/cancel``, ``sipas-hub terminals
rollouts cancel ID``) on a real hub with its own Mosquitto.

The terminal being updated when the cancel comes is the real firmware booted like the chip
(provisioning/simdevice.py, as in tests/e2e/test_rollout_real_terminal.py): it is paused (SIGSTOP)
before the rollout starts, so the hub has sent it the command but it has not acted on it yet when
the cancel arrives. Resumed, it updates (or, with a build that cannot start, rolls back) on its own;
only then does the rollout end, and the terminals after it (scripted ones from test_rollout.py,
which record every command they get) must never have been sent anything.
"""

from __future__ import annotations

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
from typer.testing import CliRunner

from hub.api.auth import SUPERVISOR, create_token
from hub.cli import app as cli_app
from hub.models import AuditLog
from hub.service import HubService
from provisioning.bundle import build_bundle
from provisioning.simdevice import SimDevice, install
from tests.e2e.test_rollout_real_terminal import firmware_copy, tar_dir
from tests.integration.test_firmware_bundle import _tar, make_bundle
from tests.integration.test_rollout import OLD, ScriptedTerminal, Timeline, wait_heard

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
NEW = "0.9.0-cancel"  # the real firmware's bundle
TECH = "ky-thuat-lan"  # the person named by X-SIPAS-Actor with the bootstrap token


class HeldTerminal(ScriptedTerminal):
    """A scripted terminal that holds an ``update`` command until the test releases it: the hub
    sees it "being updated" for as long as the test needs."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        self.received = threading.Event()
        self.release = threading.Event()
        super().__init__(*args, **kw)

    def _command(self, cmd: dict[str, Any]) -> None:
        if cmd.get("cmd") == "update":
            self.received.set()
            self.release.wait(30)
        super()._command(cmd)


@pytest.fixture
def terminals(hub: HubService) -> Iterator[Callable[..., ScriptedTerminal]]:
    made: list[ScriptedTerminal] = []
    timeline = Timeline()

    def make(desk: str = "quay-2", *, held: bool = False, **kw: Any) -> ScriptedTerminal:
        kind = HeldTerminal if held else ScriptedTerminal
        t = kind(hub.add_terminal(desk=desk), timeline, **kw)
        made.append(t)
        return t

    yield make
    for t in made:
        if isinstance(t, HeldTerminal):
            t.release.set()
        t.close()
    for t in made:
        assert t.error is None, f"{t.tid}: {t.error!r}"


@pytest.fixture
def tech(hub: HubService) -> Iterator[httpx.Client]:
    """The technician's API client: the bootstrap token, acting for a named person."""
    headers = {"Authorization": f"Bearer {hub.settings.api_token}", "X-SIPAS-Actor": TECH}
    with httpx.Client(base_url=hub.api_url, headers=headers, timeout=20) as c:
        yield c


@pytest.fixture
def sipas_hub(hub: HubService, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """``sipas-hub ...`` in its own process with the hub's settings, as on the Pi."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(REPO_ROOT),
            **cli_env(hub),
        }
        p = subprocess.Popen(
            [sys.executable, "-m", "hub.cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp_path,  # no stray .env
        )
        started.append(p)
        return p

    yield start
    for p in started:  # a failed test must not leave one behind
        if p.poll() is None:
            p.kill()
        p.communicate()


def run(p: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=60)
    return p.returncode, out, err


def cli_env(hub: HubService) -> dict[str, str]:
    return {
        "COLUMNS": "200",
        "SIPAS_HUB_OFFICE": hub.settings.office,
        "SIPAS_HUB_DATA_DIR": str(hub.settings.data_dir),
        "SIPAS_HUB_API_PORT": str(hub.settings.api_port),
        "SIPAS_HUB_API_TOKEN": hub.settings.api_token,
    }


def wait_rollout(
    api: httpx.Client, rid: int, until: Callable[[dict[str, Any]], bool], timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        ro: dict[str, Any] = api.get(f"/rollouts/{rid}").json()
        if until(ro):
            return ro
        assert time.monotonic() < deadline, ro
        time.sleep(0.05)


def ended(ro: dict[str, Any]) -> bool:
    return ro["state"] not in ("running", "cancelling")


def first_sent(ro: dict[str, Any]) -> bool:
    return ro["terminals"][0]["state"] == "sent"


def rollout_audit(hub: HubService, rid: int) -> list[tuple[str, str, dict[str, Any]]]:
    """(action, actor, detail) of the rollout's own audit rows, in order."""
    with Session(hub.engine) as s:
        rows = s.exec(
            select(AuditLog)
            .where(AuditLog.entity == "rollout", AuditLog.entity_id == str(rid))
            .order_by(col(AuditLog.id))
        ).all()
        return [(a.action, a.actor, json.loads(a.detail)) for a in rows]


def sent_to(hub: HubService) -> list[str]:
    """Every terminal the hub ever sent an update command to, from the audit log."""
    with Session(hub.engine) as s:
        rows = s.exec(select(AuditLog).where(AuditLog.action == "update_sent")).all()
        return [a.entity_id for a in rows]


@pytest.mark.parametrize("broken", [False, True], ids=["confirms", "rolls_back"])
def test_cancel_lets_the_terminal_being_updated_finish_and_sends_nothing_more(
    hub: HubService,
    tech: httpx.Client,
    terminals: Callable[..., ScriptedTerminal],
    tmp_path: Path,
    broken: bool,
) -> None:
    device = hub.add_terminal(desk="quay-1")  # all terminals go by desk: this one first
    device["heartbeat_min_s"] = 0
    tid = device["terminal_id"]
    root = install(tmp_path / "flash", config=device)
    bundle = tmp_path / "bundle"
    fw = firmware_copy(tmp_path / "fw", NEW, broken=broken)
    build_bundle(bundle, config=None, firmware_dir=fw, compiled=False)
    tech.post("/firmware", content=tar_dir(bundle)).raise_for_status()
    later = [terminals(), terminals()]  # desk quay-2: after the real one
    wait_heard(hub, later)
    with SimDevice(root, trial_s=60, crash_delay_s=0.2) as dev:
        old = dev.wait_ready(timeout=30)["fw"]
        deadline = time.monotonic() + 20
        while not {t["id"]: t["online"] for t in tech.get("/terminals").json()}.get(tid):
            assert time.monotonic() < deadline, dev.lines()[-10:]
            time.sleep(0.05)
        life = dev.current
        assert life is not None
        life.proc.send_signal(signal.SIGSTOP)  # it will get the command, not act on it yet
        try:
            r = tech.post("/rollouts", json={"version": NEW, "all": True, "timeout_s": 60})
            assert r.status_code == 202, r.text
            rid = r.json()["id"]
            wait_rollout(tech, rid, first_sent, timeout=10)

            r = tech.post(f"/rollouts/{rid}/cancel")
            assert r.status_code == 202, r.text
            ro = r.json()
            assert ro["state"] == "cancelling"
            assert ro["cancel"]["by"] == f"api:{TECH}"
            assert [st["state"] for st in ro["terminals"]] == ["sent", "pending", "pending"]
            # while it waits for the terminal: no second cancel, no other rollout
            again = tech.post(f"/rollouts/{rid}/cancel")
            assert again.status_code == 409
            assert "already being cancelled" in again.json()["detail"]
            assert f"terminal {tid}" in again.json()["detail"]
            busy = tech.post("/rollouts", json={"version": NEW, "all": True})
            assert busy.status_code == 409 and "is being cancelled" in busy.json()["detail"]
            listed = tech.get("/rollouts").json()[0]
            assert (listed["id"], listed["state"]) == (rid, "cancelling")
        finally:
            life.proc.send_signal(signal.SIGCONT)

        ro = wait_rollout(tech, rid, ended, timeout=60)
        if broken:  # it tried the new version, which could not start, and went back by itself
            info = dev.wait_until(lambda i: i.get("fw") == old, 20, "back on the old version")
            assert info["ota"] == "rolled_back"
            first = ("failed", f"the new version did not come up: rolled back to {old}")
        else:  # it finished its update: the new version runs and is confirmed
            info = dev.wait_until(lambda i: i.get("fw") == NEW, 20, "on the new version")
            assert info["ota"] == "ok"
            first = ("updated", None)
    assert ro["state"] == "cancelled", ro
    expect = f"cancelled by api:{TECH}"
    assert ro["reason"] == (expect if not broken else f"{expect}; {tid}: {first[1]}")
    steps = ro["terminals"]
    assert (steps[0]["terminal"], steps[0]["state"], steps[0]["reason"]) == (tid, *first)
    assert [st["state"] for st in steps[1:]] == ["not_started", "not_started"]
    assert all("cancelled" in st["reason"] for st in steps[1:])
    # no other terminal was sent anything, and they still run the old version
    assert [t.commands for t in later] == [[], []]
    assert [t.fw for t in later] == [OLD, OLD]
    assert sent_to(hub) == [tid]

    audit = rollout_audit(hub, rid)
    assert [(a, who) for a, who, _ in audit] == [
        ("start", f"api:{TECH}"),
        ("cancel", f"api:{TECH}"),  # who cancelled; the row's time is when
        ("cancelled", "hub"),
    ]
    assert audit[1][2] == {"version": NEW, "updating": tid, "not_started": 2}
    assert audit[2][2]["reason"] == ro["reason"]
    with Session(hub.engine) as s:
        row = s.exec(select(AuditLog).where(AuditLog.action == "cancel")).one()
        assert ro["cancel"]["at"].startswith(row.at.isoformat()[:19])

    listed = tech.get("/rollouts").json()[0]
    assert (listed["id"], listed["state"], listed["reason"]) == (rid, "cancelled", ro["reason"])
    assert listed["counts"] == {first[0]: 1, "not_started": 2}
    # the hub is free again: the next rollout starts
    nxt = tech.post("/rollouts", json={"version": NEW, "terminal": later[0].tid})
    assert nxt.status_code == 202, nxt.text
    assert wait_rollout(tech, nxt.json()["id"], ended)["state"] == "done"


def test_nothing_to_cancel_is_409_unknown_is_404_and_only_technicians_cancel(
    hub: HubService, tech: httpx.Client, terminals: Callable[..., ScriptedTerminal], tmp_path: Path
) -> None:
    tech.post("/firmware", content=_tar(make_bundle(tmp_path / "b", NEW))).raise_for_status()
    done_t, refusing = terminals(fw=NEW), terminals("quay-3", mode="refuse")
    wait_heard(hub, [done_t, refusing])

    r = tech.post("/rollouts/4242/cancel")
    assert r.status_code == 404
    assert r.json()["detail"] == (
        "no rollout 4242 on this hub: `sipas-hub terminals rollouts` lists them"
    )

    done = tech.post("/rollouts", json={"version": NEW, "terminal": done_t.tid}).json()["id"]
    assert wait_rollout(tech, done, ended)["state"] == "done"
    r = tech.post(f"/rollouts/{done}/cancel")
    assert r.status_code == 409
    assert f"rollout {done} already finished at " in r.json()["detail"]
    assert f"every terminal runs {NEW}; nothing to cancel" in r.json()["detail"]

    stopped = tech.post("/rollouts", json={"version": NEW, "terminal": refusing.tid}).json()["id"]
    assert wait_rollout(tech, stopped, ended)["state"] == "stopped"
    r = tech.post(f"/rollouts/{stopped}/cancel")
    assert r.status_code == 409
    d = r.json()["detail"]
    assert f"rollout {stopped} already ended (stopped at " in d and "refused the update" in d
    assert "start a new rollout (sipas-hub terminals update)" in d
    assert [a for a, _, _ in rollout_audit(hub, stopped)] == ["start", "stopped"]  # unchanged

    held = terminals("quay-4", held=True)
    wait_heard(hub, [held])
    rid = tech.post(
        "/rollouts", json={"version": NEW, "terminal": held.tid, "timeout_s": 30}
    ).json()["id"]
    wait_rollout(tech, rid, first_sent)
    _, sup = create_token(hub.engine, name="to-truong", role=SUPERVISOR)
    with httpx.Client(base_url=hub.api_url, headers={"Authorization": f"Bearer {sup}"}) as c:
        r = c.post(f"/rollouts/{rid}/cancel")
        assert r.status_code == 403 and "it needs: admin" in r.json()["detail"]
        assert c.get(f"/rollouts/{rid}").json()["state"] == "running"  # supervisors may look
    assert httpx.post(f"{hub.api_url}/rollouts/{rid}/cancel").status_code == 401
    assert tech.post(f"/rollouts/{rid}/cancel").status_code == 202
    assert isinstance(held, HeldTerminal)
    held.release.set()
    ro = wait_rollout(tech, rid, ended)
    # the cancel came while its only (so last) terminal was updating, and that one confirmed:
    # every terminal runs the version, so the rollout is done (the cancel is said in the reason)
    assert (ro["state"], ro["terminals"][0]["state"]) == ("done", "updated")
    assert ro["reason"] == (
        f"every terminal was updated: the cancel by api:{TECH} came while the last one was "
        "updating (nothing was left to cancel)"
    )
    r = tech.post(f"/rollouts/{rid}/cancel")
    assert r.status_code == 409
    d = r.json()["detail"]
    assert d.startswith(f"rollout {rid} already finished at ")
    assert d.endswith(f"every terminal runs {NEW}; nothing to cancel")


def test_cli_cancels_through_the_running_hub(
    hub: HubService,
    tech: httpx.Client,
    terminals: Callable[..., ScriptedTerminal],
    sipas_hub: Callable[..., subprocess.Popen[str]],
    tmp_path: Path,
) -> None:
    tech.post("/firmware", content=_tar(make_bundle(tmp_path / "b", NEW))).raise_for_status()
    first = terminals("quay-1", held=True)
    rest = [terminals(), terminals()]
    wait_heard(hub, [first, *rest])
    rid = tech.post("/rollouts", json={"version": NEW, "all": True, "timeout_s": 30}).json()["id"]
    wait_rollout(tech, rid, first_sent)

    cli = sipas_hub("terminals", "rollouts", "cancel", str(rid))
    # the CLI waits for the terminal being updated; the hub says "cancelling" meanwhile
    ro = wait_rollout(tech, rid, lambda ro: ro["state"] == "cancelling")
    assert ro["cancel"]["by"].startswith("api:cli:")  # the person running the CLI
    assert cli.poll() is None
    assert isinstance(first, HeldTerminal)
    first.release.set()
    code, out, err = run(cli)
    assert code == 0, err
    assert f"terminal {first.tid} is finishing its update" in err
    assert "never interrupted mid-flash" in err and "no other terminal will be sent" in err
    assert f"rollout {rid}: {NEW} to all (cancelled)" in out
    assert f"cancelled by {ro['cancel']['by']}" in err and "2 not_started, 1 updated" in err
    assert [t.commands for t in rest] == [[], []] and first.fw == NEW

    # the rest in this process (the same command line, without another interpreter start-up)
    def again(*args: str) -> tuple[int, str, str]:
        res = CliRunner().invoke(cli_app, ["terminals", "rollouts", *args], env=cli_env(hub))
        return res.exit_code, res.stdout, res.stderr

    code, out, err = again()
    assert code == 0, err
    row = next(ln for ln in out.splitlines() if ln.lstrip("│ ").startswith(str(rid)))
    assert "cancelled" in row and f"cancelled by {ro['cancel']['by']}" in row

    code, out, err = again(str(rid))  # as before cancel existed: one rollout in detail
    assert code == 0 and "not_started" in out and f"cancel asked by {ro['cancel']['by']} at " in out

    code, _, err = again("cancel", str(rid))
    assert code == 5 and "nothing to cancel" in err and "already cancelled" in err
    code, _, err = again("cancel", "4242")
    assert code == 2 and "no rollout 4242 on this hub" in err
