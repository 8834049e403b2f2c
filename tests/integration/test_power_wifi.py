"""Wi-Fi outage and recovery of a mains terminal (the real firmware on the host simulator) against a
real hub and Mosquitto: while the access point is gone the terminal keeps serving presses and
re-associates on its back-off, then delivers what was pressed meanwhile as soon as it is back."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from provisioning.simulate import SimTerminal
from tests.fixtures.hub import pump

pytestmark = pytest.mark.integration


def test_wifi_outage_then_recovery(
    terminal_factory: Callable[..., SimTerminal], api: httpx.Client
) -> None:
    sim = terminal_factory()
    sim.board.wifi_manual = True  # the station comes back only when the firmware reconnects it
    sim.app.cfg = {**sim.app.cfg, "lockout_s": 0}  # two ratings, not a rating and a repeat
    sim.press(1)
    pump([sim], lambda: sim.depth() == 0)
    sim.board.network = False  # the access point goes away
    pump([sim], lambda: not sim.app.online())
    start = len(sim.board.wifi_attempts)
    assert sim.press(2) == 2 and sim.board.feedbacks[-1] == ("saved_offline", 2)
    t_end = time.monotonic() + 6
    while time.monotonic() < t_end:
        sim.step(20)
    tries = sim.board.wifi_attempts[start:]
    assert 1 <= len(tries) <= 3  # at 0 and after 4 s (+ jitter): no reconnect storm
    sim.board.network = True  # back: the next attempt associates, the broker is tried at once
    pump([sim], lambda: sim.depth() == 0, timeout=15)
    rows = sorted(api.get("/ratings").json(), key=lambda r: r["id"])
    assert [r["seq"] for r in rows] == [1, 2]
