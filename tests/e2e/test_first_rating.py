"""A press on a simulated terminal reaches the hub's API through real Mosquitto, and the terminal
forgets it only once the hub has committed it."""

from __future__ import annotations

import time

import httpx
import pytest
from sqlmodel import Session, func, select

from hub.models import Quarantine, Rating
from hub.service import HubService
from tests.fixtures.hub import pump

pytestmark = pytest.mark.e2e


def count(hub: HubService, model: type = Rating) -> int:
    with Session(hub.engine) as s:
        return int(s.exec(select(func.count()).select_from(model)).one())


def test_press_is_stored_acknowledged_and_served(
    hub: HubService, api: httpx.Client, terminal_factory
) -> None:
    term = terminal_factory(desk="quay-1")
    seq = term.press(2)
    assert seq == 1 and term.depth() == 1
    assert term.board.feedbacks[-1][0] in ("saved", "saved_offline")
    pump([term], lambda: term.depth() == 0)
    rows = api.get("/ratings").raise_for_status().json()
    assert len(rows) == 1
    r = rows[0]
    assert (r["terminal_id"], r["epoch"], r["seq"], r["level"], r["scale"], r["desk"]) == (
        term.terminal_id,
        1,
        1,
        2,
        3,
        "quay-1",
    )
    assert (
        r["clock_unknown"] is False
        and abs(
            time.time()
            - time.mktime(time.strptime(r["press_time"][:19], "%Y-%m-%dT%H:%M:%S"))
            + time.timezone
        )
        < 120
    )
    assert len(r["district_tag"]) == 32  # stored as received, for the district to verify


def test_api_refuses_requests_without_the_token(hub: HubService) -> None:
    resp = httpx.get(f"{hub.api_url}/ratings")
    assert resp.status_code == 401 and "token" in resp.json()["detail"]


def test_broker_puback_alone_does_not_empty_the_outbox(hub: HubService, terminal_factory) -> None:
    term = terminal_factory()
    pump([term], term.app.online)
    hub.ingest.stop()  # the broker is up, the hub is not listening
    term.press(1)
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        term.step(10)
    assert term.depth() == 1, "the terminal deleted a rating the hub never stored"
    hub.ingest = hub.new_ingest()
    hub.ingest.start()
    pump([term], lambda: term.depth() == 0)
    assert count(hub) == 1


def test_broker_killed_mid_run_loses_nothing_and_duplicates_nothing(
    hub: HubService, terminal_factory
) -> None:
    a, b = terminal_factory(desk="quay-1"), terminal_factory(desk="quay-2")
    for t in (a, b):
        t.press(1)
    pump([a, b], lambda: a.depth() == 0 and b.depth() == 0)
    assert hub.broker is not None
    hub.broker.kill()  # SIGKILL: no clean shutdown
    for level in (3, 2, 1):
        a.press(level)
        b.press(level)
        for t in (a, b):
            t.step(0)
    assert a.depth() == 3 and b.depth() == 3
    assert {k for k, _ in a.board.feedbacks[-3:]} <= {"saved_offline", "repeat"}
    hub.broker.start()
    pump([a, b], lambda: a.depth() == 0 and b.depth() == 0, timeout=30)
    with Session(hub.engine) as s:
        keys = s.exec(select(Rating.terminal_id, Rating.seq)).all()
    assert sorted(keys) == sorted([(t.terminal_id, n) for t in (a, b) for n in (1, 2, 3, 4)])


def test_terminal_restart_resends_unacknowledged_without_duplicates(
    hub: HubService, terminal_factory, tmp_path
) -> None:
    from provisioning.simulate import SimTerminal

    term = terminal_factory()
    hub.ingest.stop()
    for level in (1, 2, 3):
        term.press(level)
    term.stop()  # power cut with three ratings in flash
    hub.ingest = hub.new_ingest()
    hub.ingest.start()
    again = SimTerminal(term.cfg, tmp_path / "terminals" / term.terminal_id)
    try:
        assert again.depth() == 3 and again.app.outbox.next_seq() == 4
        pump([again], lambda: again.depth() == 0)
        time.sleep(0.5)  # let any broker redelivery of the first session's publishes arrive
        with Session(hub.engine) as s:
            seqs = sorted(s.exec(select(Rating.seq)).all())
        assert seqs == [1, 2, 3]
    finally:
        again.stop()


def test_forged_rating_is_quarantined_and_rejected(hub: HubService, terminal_factory) -> None:
    term = terminal_factory()
    term.app.hub_key = bytes(32)  # signs with the wrong key
    term.press(3)
    pump([term], lambda: term.depth() == 0)  # the hub said "rejected": nothing to resend
    assert count(hub) == 0 and count(hub, Quarantine) == 1
    assert ("error", 0) in term.board.feedbacks
