"""The hub brings its report rollups up to date when it starts (hub/service.py `_warm_reports`):
after an upgrade that changed their layout, the rebuild runs at start, not when a supervisor opens
the first report."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlmodel import Session

from hub import reports
from hub.db import make_engine
from hub.models import Rating
from hub.periods import resolve
from hub.reports.rollup import SCHEMA_VERSION, rollups_for
from hub.service import HubService
from tests.fixtures.hub import make_settings

T0 = datetime(2026, 11, 10, 2, 0, tzinfo=UTC)  # Tuesday 10/11/2026 09:00 office time


def _state(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as c:
        return {n: int(v) for n, v in c.execute("SELECT name, value FROM report_state")}


def test_rollups_of_an_older_version_are_rebuilt_at_start(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "hub")
    engine = make_engine(settings.db_url)  # the hub's database, no hub running (no race)
    ro = rollups_for(engine)
    ro.refresh()  # rollups made (empty) by an older version...
    ro.close()
    with Session(engine) as s:  # ... then ratings it never rolled up
        for seq in range(1, 41):
            s.add(Rating(terminal_id="t-1", epoch=1, seq=seq, office="office-test",
                         desk="quay-1", level=1 + seq % 3, scale=3, channel="terminal",
                         press_time=T0 + timedelta(minutes=seq), official_id="an",
                         link_status="no_case", raw=bytes(48)))  # fmt: skip
        s.commit()
    engine.dispose()
    db = settings.data_dir / "hub.sqlite3"
    with sqlite3.connect(db) as c:  # rollups as an older version left them
        c.execute("UPDATE report_state SET value = ? WHERE name = 'schema'", (SCHEMA_VERSION - 1,))
    assert _state(db)["rating"] == 0

    hub = HubService(settings)
    hub.start(api=False)
    try:
        deadline = time.monotonic() + 20
        while True:  # no report is asked for: the start alone brings them up to date
            st = _state(db)
            if st.get("schema") == SCHEMA_VERSION and st.get("rating") == 40:
                break
            assert time.monotonic() < deadline, f"rollups not rebuilt at start: {st}"
            time.sleep(0.05)
        period = resolve("month:2026-11")
        got = reports.satisfaction(hub.engine, period, by="office")["total"]
        want = reports.satisfaction(hub.engine, period, by="office", direct=True)["total"]
        assert got["valid"] == want["valid"] == 40
        assert got["levels"] == want["levels"]
    finally:
        hub.stop()
