"""A battery-mode terminal (deep sleep between presses, woken by the button) against a real hub and
Mosquitto: every press arrives once and in order across sleep cycles, the lockout holds across a
sleep, the terminal sleeps again once the hub has acknowledged, and when the hub is unreachable it
gives up within its awake bound and keeps the ratings for the next wake."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session

from hub.models import Terminal
from hub.service import HubService
from provisioning.simulate import SimTerminal
from tests.fixtures.hub import pump

pytestmark = pytest.mark.e2e
AWAKE_MAX_S = 4


def battery_terminal(hub: HubService, tmp_path: Path, **cfg: Any) -> SimTerminal:
    device = hub.add_terminal(desk="quay-1")
    cfg = {
        "power_mode": "battery",
        "battery_awake_max_s": AWAKE_MAX_S,
        "reason_s": 0,
        "lockout_s": 2,
        **cfg,
    }
    sim = SimTerminal({**device, **cfg}, tmp_path / device["terminal_id"])
    sim.board.power, sim.board.vsupply = "battery", 3.91
    return sim


def sleep_again(sim: SimTerminal, timeout: float = 10) -> dict[str, Any]:
    pump([sim], lambda: sim.asleep, timeout=timeout)
    last: dict[str, Any] = sim.board.sleeps[-1]
    return last


def test_presses_across_sleep_cycles_arrive_once_in_order(
    hub: HubService, api: httpx.Client, tmp_path: Path
) -> None:
    sim = battery_terminal(hub, tmp_path)
    try:
        sleep_again(sim)  # power-on: connects, first heartbeat, sleeps
        levels = [1, 2, 3, 2, 1]
        for i, level in enumerate(levels):
            if i == 2:
                time.sleep(2.2)  # asleep past the 2 s lockout
            assert sim.button(level) == i + 1  # the press that woke it is stored at once
            assert sim.board.feedbacks[-1][1] == level
            nap = sleep_again(sim)
            assert sim.depth() == 0  # asleep only once the hub acknowledged it
            assert nap["awake_ms"] < AWAKE_MAX_S * 1000
        assert len(sim.board.sleeps) == 1 + len(levels)
    finally:
        sim.stop()
    rows = sorted(api.get("/ratings").json(), key=lambda r: r["id"])
    assert [(r["seq"], r["level"]) for r in rows] == [(i + 1, x) for i, x in enumerate(levels)]
    # the lockout survived the deep sleep (tick counters restart; the RTC does not): the second
    # press, 1 s after the first across a sleep, is a repeat; the third, after 2.2 s, is not
    assert [r["repeat"] for r in rows] == [False, True, False, True, True]
    [health] = api.get("/terminals").json()
    assert health["vsupply"] == 3.91 and health["power"] == "battery"
    with Session(hub.engine) as s:
        term = s.get(Terminal, sim.terminal_id)
        assert term is not None and term.last_heartbeat
        beat = json.loads(term.last_heartbeat)
    assert beat["power_mode"] == "battery" and beat["wakes"] >= 1


def test_unreachable_hub_bounds_the_awake_time_and_keeps_ratings(
    hub: HubService, api: httpx.Client, tmp_path: Path
) -> None:
    sim = battery_terminal(hub, tmp_path, lockout_s=0)
    try:
        sleep_again(sim)
        sim.board.unreachable_s = 60  # the hub is switched off: connects time out
        assert sim.button(1) == 1
        nap = sleep_again(sim, timeout=AWAKE_MAX_S + 5)
        assert AWAKE_MAX_S * 1000 <= nap["awake_ms"] <= AWAKE_MAX_S * 1000 + 1500
        assert sim.depth() == 1  # kept in flash for the next wake
        assert nap["timer_ms"] == sim.cfg["battery_retry_s"] * 1000  # and a timer to retry
        assert sim.button(2) == 2  # another press while the hub is still off
        sleep_again(sim, timeout=AWAKE_MAX_S + 5)
        assert sim.board.feedbacks[-1] == ("saved_offline", 2)  # the last wake did not reach it
        sim.board.unreachable_s = 0  # the hub is back: the next press sends everything
        assert sim.button(3) == 3
        nap = sleep_again(sim)
        assert sim.depth() == 0 and nap["awake_ms"] < AWAKE_MAX_S * 1000
    finally:
        sim.stop()
    rows = sorted(api.get("/ratings").json(), key=lambda r: r["id"])
    assert [r["seq"] for r in rows] == [1, 2, 3]
