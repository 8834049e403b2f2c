"""A dissatisfied press becomes an alert for the supervisor within a second, through the real hub."""

from __future__ import annotations

import time

import httpx
import pytest

from hub.service import HubService
from tests.fixtures.hub import pump

pytestmark = pytest.mark.e2e


def test_negative_press_raises_an_alert_within_one_second(
    hub: HubService, api: httpx.Client, terminal_factory
) -> None:
    term = terminal_factory(desk="quay-1")
    pump([term], term.app.online)
    term.press(3)  # "Không hài lòng"
    pump([term], lambda: term.depth() == 0)
    stored_at = time.monotonic()
    deadline = stored_at + 1.0
    alerts: list = []
    while time.monotonic() < deadline and not alerts:
        alerts = api.get("/alerts").json()
        time.sleep(0.02)
    assert alerts, "no alert within 1 s of the rating being stored"
    [a] = alerts
    assert (a["rule"], a["desk"], a["state"]) == ("negative", "quay-1", "open")
    assert "không hài lòng" in a["title_vi"].lower()
    r = api.post(
        f"/alerts/{a['id']}/acknowledge", json={"actor": "truong-bo-phan", "comment": "đã gọi lại"}
    )
    assert r.status_code == 200 and r.json()["state"] == "acknowledged"
