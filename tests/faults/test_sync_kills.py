"""Hub -> district sync when one side is killed with SIGKILL, against the real district server
(helpers and the other faults: test_sync_faults.py): the hub's sender in the middle of batches, the
district in the middle of commits (on SQLite and on PostgreSQL). Everything arrives exactly once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub import sync
from tests.faults.test_sync_faults import (  # noqa: F401  (pg_database is a fixture)
    BIN,
    OFFICE,
    SEED,
    DistrictProcess,
    HubData,
    assert_exactly_once,
    pg_database,
    wait_for,
)

pytestmark = pytest.mark.faults


@pytest.fixture
def district(tmp_path: Path) -> Iterator[DistrictProcess]:
    d = DistrictProcess(tmp_path / "district")
    d.start()
    yield d
    d.close()


def test_the_hub_killed_in_the_middle_of_batches(district: DistrictProcess, tmp_path: Path) -> None:
    hub = HubData(tmp_path / "hub", district)
    hub.press(8000)
    env = {
        **os.environ,
        "SIPAS_HUB_ENV_FILE": str(tmp_path / "none.env"),
        "SIPAS_HUB_DATA_DIR": str(hub.data_dir),
        "SIPAS_HUB_OFFICE": OFFICE,
        "SIPAS_HUB_DISTRICT_URL": district.url,
        "SIPAS_HUB_DISTRICT_TOKEN": district.hub_token,
        "SIPAS_HUB_SYNC_BATCH_SIZE": "25",  # hundreds of short batches: kills land mid-batch
    }
    rng = random.Random(SEED)
    in_flight = 0
    try:
        for _ in range(3):
            p = subprocess.Popen(
                [str(BIN / "sipas-hub"), "sync", "now"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_for(lambda: hub.state("ratings").last_attempt_at is not None, 30, "sending")
            before = hub.state("ratings").watermark
            wait_for(lambda b=before: hub.state("ratings").watermark > b, 30, "progress")
            time.sleep(rng.uniform(0.05, 0.4))
            os.kill(p.pid, signal.SIGKILL)
            p.wait(10)
            in_flight += hub.state("ratings").pending_to is not None
        assert in_flight >= 1, "no kill fell in the middle of a batch"
        assert hub.behind() > 0
        p = subprocess.run(
            [str(BIN / "sipas-hub"), "sync", "now"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert p.returncode == 0, p.stdout + p.stderr
        assert_exactly_once(hub, district)
    finally:
        hub.close()


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_the_district_killed_in_the_middle_of_commits(
    db: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("pg_database") if db == "postgresql" else None
    district = DistrictProcess(tmp_path / "district", url)
    district.start()
    hub = HubData(tmp_path / "hub", district)
    hub.press(8000)
    rng = random.Random(SEED)
    snd = sync.SyncSender(
        hub.engine,
        OFFICE,
        url=district.url,
        token=district.hub_token,
        batch_size=500,
        batch_wait_s=0,
        poll_s=0.01,
        backoff_min_s=0.05,
        backoff_max_s=0.5,
    )
    try:
        snd.start()
        for _ in range(2):
            before = hub.state("ratings").watermark
            wait_for(lambda b=before: hub.state("ratings").watermark > b, 60, "progress")
            time.sleep(rng.uniform(0.0, 0.3))  # batches are being committed all the time
            district.kill()
            time.sleep(0.3)
            assert hub.state("ratings").attempts >= 1 or hub.behind() == 0
            district.start()
        wait_for(lambda: hub.behind() == 0, 90, "catch-up")
        assert_exactly_once(hub, district)
    finally:
        snd.stop()
        hub.close()
        district.close()
