"""Simulated terminals (the real firmware) -> Mosquitto -> hub -> district server: the district's
monthly figures for the office equal the hub's.

The district (``sipas-district serve``, a child process on a SQLite file) issues each terminal's
district key, as provisioning does; the hub runs with sync on (SIPAS_HUB_DISTRICT_URL/_TOKEN). The
figures compared per month (office time): the count of ratings per level, and the valid count
(ratings without a standing exclusion: the hub's automatic ones at ingest and one a supervisor
makes). The district's report API is not there yet, so its stored rows are read.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlmodel import Session, select

from hub import office as ofc
from hub.models import Rating
from hub.service import HubService
from provisioning.simulate import SimTerminal
from tests.faults.test_sync_faults import OFFICE, DistrictProcess
from tests.fixtures.hub import make_settings, pump

pytestmark = pytest.mark.e2e


def month(t: Any) -> str:
    if isinstance(t, str):
        t = datetime.fromisoformat(t)
    t = t.replace(tzinfo=UTC) if t.tzinfo is None else t
    return t.astimezone(ofc.OFFICE_TZ).strftime("%Y-%m")


def figures(rows: list[tuple[str, int, int, int, Any]], excluded: set[tuple[str, int, int]]) -> Any:
    per_level: Counter[tuple[str, int]] = Counter()
    valid: Counter[str] = Counter()
    for tid, epoch, seq, level, press in rows:
        per_level[(month(press), level)] += 1
        if (tid, epoch, seq) not in excluded:
            valid[month(press)] += 1
    return dict(per_level), dict(valid)


def hub_figures(hub: HubService) -> Any:
    with Session(hub.engine) as s:
        cols = (Rating.terminal_id, Rating.epoch, Rating.seq, Rating.level, Rating.press_time)
        rows = [tuple(r) for r in s.exec(select(*cols)).all()]
        ok = {tuple(r[:3]) for r in s.exec(select(*cols).where(ofc.valid())).all()}
    excluded = {tuple(r[:3]) for r in rows} - ok
    return figures(rows, excluded)  # type: ignore[arg-type]


def district_figures(district: DistrictProcess) -> Any:
    with district.engine.connect() as c:
        rows = c.execute(
            text(
                "SELECT terminal_id, epoch, seq, level, press_time FROM rating "
                "WHERE office = :o AND verified"
            ),
            {"o": OFFICE},
        ).all()
        ex = c.execute(
            text(
                "SELECT hub_id, terminal_id, epoch, seq, reverses FROM exclusion WHERE office = :o"
            ),
            {"o": OFFICE},
        ).all()
    taken_back = {r.reverses for r in ex if r.reverses is not None}
    excluded = {
        (r.terminal_id, r.epoch, r.seq)
        for r in ex
        if r.reverses is None and r.hub_id not in taken_back
    }
    return figures([tuple(r) for r in rows], excluded)  # type: ignore[misc]


def test_the_districts_monthly_figures_equal_the_hubs(tmp_path: Path) -> None:
    district = DistrictProcess(tmp_path / "district")
    district.start()
    hub = HubService(
        make_settings(
            tmp_path / "hub",
            district_url=district.url,
            district_token=district.hub_token,
            sync_batch_wait_s=0.2,
        )
    )
    terminals: list[SimTerminal] = []
    try:
        hub.start()
        api = httpx.Client(
            base_url=hub.api_url, headers={"Authorization": f"Bearer {hub.settings.api_token}"}
        )
        for desk in ("quay-1", "quay-2"):
            api.post("/desks", json={"id": desk, "name": f"Quầy {desk[-1]}"}).raise_for_status()
        api.post("/officials", json={"id": "an", "name": "Nguyễn Văn An"}).raise_for_status()
        api.post("/duty/check-in", json={"desk_id": "quay-1", "official_id": "an"})
        for desk in ("quay-1", "quay-2"):
            device = hub.add_terminal(desk=desk)
            device["district_key"] = district.issue_key(device["terminal_id"], desk)
            terminals.append(SimTerminal(device, tmp_path / "terminals" / device["terminal_id"]))
        pump(terminals, lambda: all(t.app.online() for t in terminals), timeout=20)
        for i in range(24):
            for n, t in enumerate(terminals):
                t.press((i + n) % 3 + 1)
        pump(terminals, lambda: all(t.depth() == 0 for t in terminals), timeout=60)
        [first, *_] = api.get("/ratings", params={"desk": "quay-2", "limit": 5}).json()
        r = api.post(f"/ratings/{first['id']}/exclusions", json={"reason": "on_behalf"})
        assert r.status_code == 201, r.text

        deadline = time.monotonic() + 60
        while True:
            pump(terminals, lambda: True, timeout=1)  # heartbeats keep coming
            st = api.get("/sync").json()
            if st["behind_items"] == 0 and st["ok"]:
                break
            assert time.monotonic() < deadline, st
            time.sleep(0.2)
        ours, theirs = hub_figures(hub), district_figures(district)
        assert sum(ours[0].values()) == 48
        assert 0 < sum(ours[1].values()) < 48  # the supervisor's exclusion at least
        assert theirs == ours
        assert district.count("finding") == 0  # every record's district tag verified
        api.close()
    finally:
        for t in terminals:
            t.stop()
        hub.stop()
        district.close()
