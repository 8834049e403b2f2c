"""A technician registers a terminal through the API, sees its health, and replaces it: the desk's
history stays and the old terminal's credentials stop working."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from hub.service import HubService
from provisioning.simulate import SimTerminal
from tests.fixtures.hub import pump

pytestmark = pytest.mark.e2e


def test_register_health_and_replace(hub: HubService, api: httpx.Client, tmp_path: Path) -> None:
    api.post("/desks", json={"id": "quay-1", "name": "Quầy 1"}).raise_for_status()
    r = api.post("/terminals", json={"terminal_id": "t-00000000aa01", "desk_id": "quay-1"})
    assert r.status_code == 201
    old = SimTerminal({**r.json(), "heartbeat_min_s": 0}, tmp_path / "old")
    try:
        old.press(1)
        pump([old], lambda: old.depth() == 0)
        pump([old], lambda: api.get("/terminals").json()[0]["outbox"] == 0)  # heartbeat on drain
        [h] = api.get("/terminals").json()
        assert h["online"] and h["fw"] == "0.2.0" and h["desk"] == "quay-1" and h["outbox"] == 0

        r = api.post(
            "/terminals/t-00000000aa01/replace", json={"new_terminal_id": "t-00000000aa02"}
        )
        assert r.status_code == 201 and r.json()["terminal_id"] == "t-00000000aa02"
        new = SimTerminal(r.json(), tmp_path / "new")
        try:
            new.press(2)
            pump([new], lambda: new.depth() == 0)
        finally:
            new.stop()
        old.press(3)  # the broker dropped the old account on reload: it can no longer deliver
        for _ in range(50):
            old.step(10)
        assert old.depth() == 1
    finally:
        old.stop()
    rows = api.get("/ratings").json()
    assert [(x["terminal_id"], x["desk"]) for x in rows] == [
        ("t-00000000aa01", "quay-1"),
        ("t-00000000aa02", "quay-1"),
    ]
    health = {t["id"]: t for t in api.get("/terminals").json()}
    assert (
        health["t-00000000aa01"]["active"] is False and health["t-00000000aa02"]["desk"] == "quay-1"
    )
    assert api.post("/terminals/t-00000000aa01/replace", json={}).status_code == 409
    assert api.post("/terminals", json={"terminal_id": "t-00000000aa02"}).status_code == 409
