"""Hub -> district sync under faults, against the REAL district server (``sipas-district serve`` as
a child process, on a SQLite file, and once on a fresh PostgreSQL database): everything the hub
holds arrives exactly once, whatever fails on the way.

- the district down for a simulated day (the sender's clock runs 4,320 times fast, so the real
  back-off of docs/sync.md, 1 s doubling to 5 min, plays out in 20 s), many batches waiting;
- the hub's sender (``sipas-hub sync now``) killed with SIGKILL in the middle of batches;
- the district killed with SIGKILL in the middle of commits (SQLite and PostgreSQL);
- a batch cut short in transit, and an answer lost, by a proxy between the two.

Each test checks, at the district's own database, that the set of rating keys equals the hub's, with
no rating stored twice and nothing refused (no findings). Faults are drawn from a seeded generator
(``SIPAS_FAULT_SEED`` overrides it).
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request, Response
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from hub import sync
from hub.alerts import AlertEngine
from hub.broker import find_free_port
from hub.db import make_engine
from hub.district import auth as district_auth
from hub.district import db as district_db
from hub.district.models import Office as DistrictOffice
from hub.ingest import Ingestor
from hub.models import Rating, SyncState
from hub.registry import add_terminal
from tests.fixtures.pg import fresh_pg_database
from tests.helpers import rating_topic, record

pytestmark = pytest.mark.faults

OFFICE = "office-test"
SEED = int(os.environ.get("SIPAS_FAULT_SEED", "20240607"))
BIN = Path(sys.executable).parent


# -- the district server as a process ---------------------------------------------------------------
class DistrictProcess:
    """``sipas-district`` migrated, with the office and its hub token, served on a free port.
    ``workers``: ``serve --workers N``; with more than one, the server runs in a process group of
    its own, which :meth:`kill` and :meth:`close` end as a whole (the workers with the parent)."""

    def __init__(self, workdir: Path, db_url: str | None = None, workers: int = 1):
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.workers = workers
        self.db_url = db_url or f"sqlite:///{workdir / 'district.sqlite3'}"
        self.admin = "district-admin-" + secrets.token_hex(12)
        self.env = {
            **os.environ,
            "SIPAS_DISTRICT_ENV_FILE": str(workdir / "none.env"),
            "SIPAS_DISTRICT_DATA_DIR": str(workdir),
            "SIPAS_DISTRICT_DATABASE_URL": self.db_url,
            "SIPAS_DISTRICT_ADMIN_TOKEN": self.admin,
        }
        self.port = find_free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        # what `sipas-district migrate`, `office add` and `hub add` do, without three interpreters
        self.engine: Engine = district_db.make_engine(self.db_url)
        district_db.migrate(self.engine)
        with Session(self.engine) as s:
            s.add(DistrictOffice(id=OFFICE, name="UBND phường Thử nghiệm"))
            s.commit()
        self.hub_token = district_auth.create_hub_token(self.engine, office=OFFICE)[1]

    def start(self) -> None:
        log = open(self.workdir / "serve.log", "ab")  # noqa: SIM115  (the child writes to it)
        cmd = [
            str(BIN / "sipas-district"),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        if self.workers != 1:
            cmd += ["--workers", str(self.workers)]
        self.proc = subprocess.Popen(
            cmd,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=self.workers != 1,
        )
        log.close()
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, (self.workdir / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the district server did not start in 60 s"
            time.sleep(0.1)

    def kill(self) -> None:
        if self.proc is not None and self.workers != 1:
            # the group outlives its leader while a worker lives: signalled even if it has exited
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        elif self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc is not None and self.workers != 1:
            self.kill()  # any worker its parent left behind
        self.proc = None
        self.engine.dispose()

    def issue_key(self, terminal_id: str, desk: str | None = None) -> str:
        r = httpx.post(
            f"{self.url}/api/v1/terminals/{terminal_id}/key",
            json={"office": OFFICE, "epoch": 1, "desk": desk},
            headers={"Authorization": f"Bearer {self.admin}"},
            timeout=10,
        )
        assert r.status_code == 201, r.text
        return str(r.json()["district_key"])

    def rating_keys(self) -> list[tuple[str, int, int]]:
        with self.engine.connect() as c:
            rows = c.execute(
                text("SELECT terminal_id, epoch, seq FROM rating WHERE office = :o"), {"o": OFFICE}
            ).all()
        return [(str(t), int(e), int(s)) for t, e, s in rows]

    def count(self, table: str) -> int:
        with self.engine.connect() as c:
            return int(
                c.execute(
                    text(f"SELECT count(*) FROM {table} WHERE office = :o"), {"o": OFFICE}
                ).scalar_one()
            )


@pytest.fixture
def district(tmp_path: Path) -> Iterator[DistrictProcess]:
    d = DistrictProcess(tmp_path / "district")
    d.start()
    yield d
    d.close()


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one test (dropped afterwards)."""
    with fresh_pg_database("sipas_sync_") as url:
        yield url


# -- the hub's side ----------------------------------------------------------------------------------
class HubData:
    """The hub's SQLite database with terminals whose district keys the district issued."""

    def __init__(self, data_dir: Path, district: DistrictProcess, terminals: int = 3):
        self.data_dir = data_dir
        self.engine = make_engine(f"sqlite:///{data_dir / 'hub.sqlite3'}")
        self.ingestor = Ingestor(self.engine, OFFICE)
        self.devices: list[dict[str, Any]] = []
        self.seqs: dict[str, int] = {}
        for _ in range(terminals):
            _, dev = add_terminal(self.engine, office=OFFICE)
            dev["district_key"] = district.issue_key(dev["terminal_id"])
            self.devices.append(dev)
            self.seqs[dev["terminal_id"]] = 0
        self.rng = random.Random(SEED)

    def press(self, n: int) -> None:
        msgs = []
        for i in range(n):
            dev = self.devices[i % len(self.devices)]
            tid = dev["terminal_id"]
            self.seqs[tid] += 1
            level = self.rng.choice((1, 1, 2, 3))
            msgs.append((rating_topic(dev, OFFICE), record(dev, self.seqs[tid], level=level)))
        for i in range(0, len(msgs), 500):
            self.ingestor.process(msgs[i : i + 500])

    def rating_keys(self) -> list[tuple[str, int, int]]:
        with Session(self.engine) as s:
            rows = s.exec(select(Rating.terminal_id, Rating.epoch, Rating.seq)).all()
        return [(t, e, q) for t, e, q in rows]

    def behind(self) -> int:
        st = sync.status(self.engine, OFFICE, district_url="x", alert_after_s=0)
        return int(st["behind_items"])

    def state(self, stream: str) -> SyncState:
        with Session(self.engine) as s:
            return s.get(SyncState, stream) or SyncState(stream=stream)

    def close(self) -> None:
        self.engine.dispose()


def assert_exactly_once(hub: HubData, district: DistrictProcess) -> None:
    theirs = district.rating_keys()
    ours = hub.rating_keys()
    assert len(theirs) == len(set(theirs)), "a rating is stored twice at the district"
    assert sorted(theirs) == sorted(ours), (
        f"hub {len(ours)} ratings, district {len(theirs)}; "
        f"missing {len(set(ours) - set(theirs))}, extra {len(set(theirs) - set(ours))}"
    )
    assert district.count("finding") == 0, "the district refused something the hub sent"
    assert hub.behind() == 0


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"not reached in {timeout} s: {what} (seed {SEED})"
        time.sleep(0.05)


class Recording(httpx.HTTPTransport):
    """The real HTTP transport, noting when (on the sender's clock) each batch left."""

    def __init__(self, clock: Callable[[], datetime]):
        super().__init__()
        self.clock = clock
        self.sent: list[tuple[datetime, str]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append((self.clock(), request.headers.get("idempotency-key", "")))
        return super().handle_request(request)


# -- tests -------------------------------------------------------------------------------------------
DAY_IN_S = 12.0  # real seconds for a simulated day
SPEED = 86400 / DAY_IN_S


def test_district_down_for_a_day_then_everything_arrives_once(
    district: DistrictProcess, tmp_path: Path
) -> None:
    hub = HubData(tmp_path / "hub", district)
    t0, m0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC), time.monotonic()

    def clock() -> datetime:  # the sender's time: a day passes in DAY_IN_S
        return t0 + timedelta(seconds=(time.monotonic() - m0) * SPEED)

    transport = Recording(clock)
    alerts = AlertEngine(hub.engine, OFFICE)
    snd = sync.SyncSender(
        hub.engine,
        OFFICE,
        url=district.url,
        token=district.hub_token,
        batch_size=500,
        batch_wait_s=0,
        poll_s=0.005,
        alert_after_s=1800,  # 30 simulated minutes
        alerts=alerts,
        transport=transport,
        clock=clock,
    )  # back-off as in production: 1 s doubling to 300 s (simulated)
    try:
        hub.press(600)
        snd.start()
        wait_for(lambda: hub.behind() == 0, 30, "the first ratings reach the district")
        district.kill()
        down_at = clock()
        for _ in range(12):  # the office keeps working all day: batches pile up
            hub.press(600)
            time.sleep(DAY_IN_S / 12)
        day = clock() - down_at
        assert day >= timedelta(hours=23)
        assert hub.behind() >= 7000
        sync_alerts = [a for a in alerts.list(state="open") if a.rule == "sync"]
        assert len(sync_alerts) == 1, "one alert for the outage"
        tries = [t for t, key in transport.sent if ":ratings:" in key and t > down_at]
        gaps = [(b - a).total_seconds() for a, b in zip(tries, tries[1:], strict=False)]
        # Capped at 5 minutes: without the cap, doubling pauses make ~17 tries in a day; with it,
        # about 300 (fewer on a busy machine: each round's own work also runs 4,320 times fast).
        # And never hammering: the pauses late in the day are at least 75 % of the cap.
        assert 100 <= len(tries) <= 400, (len(tries), gaps[:20])
        assert statistics.median(gaps[len(gaps) // 2 :]) >= 0.75 * 300, gaps[-20:]
        assert min(gaps[len(gaps) // 2 :]) >= 0.75 * 300 - 1, gaps[-20:]
        sent = [key for t, key in transport.sent if ":ratings:" in key and t > down_at]
        partner = f"{OFFICE}:ratings:1100-1600"  # sent with the first try (two in flight), once
        assert set(sent) <= {f"{OFFICE}:ratings:600-1100", partner}, set(sent)
        assert sent.count(partner) <= 1  # then the same batch, under the same key, all day
        district.start()
        wait_for(lambda: hub.behind() == 0, 60, "catch-up after the outage")
        snd.stop()
        assert_exactly_once(hub, district)
        assert district.count("heartbeat") == 0  # (no heartbeats in this office's data)
        wait_for(
            lambda: alerts.get(sync_alerts[0].id).state == "resolved", 10, "the alert resolved"
        )
    finally:
        snd.stop()
        alerts.close()
        hub.close()


class CuttingProxy:
    """An HTTP proxy between the hub and the district. ``cut``: the next requests' bodies are cut
    to half their length on the way (Content-Length fixed up: the district gets a well-formed
    request with a truncated gzip body); ``lose``: the next requests reach the district, but the
    answer does not come back (the proxy answers 502)."""

    def __init__(self, target: str):
        self.target = target
        self.cut = 0
        self.lose = 0
        self.seen: list[tuple[str, str, int]] = []  # key, what happened, the district's status
        app = FastAPI()
        client = httpx.AsyncClient(base_url=target, timeout=30)

        @app.post("/{path:path}")
        async def forward(path: str, request: Request) -> Response:
            body = await request.body()
            key = request.headers.get("idempotency-key", "")
            fault = "none"
            if self.cut and "/sync/ratings" in path:
                self.cut -= 1
                body, fault = body[: len(body) // 2], "cut"
            elif self.lose and "/sync/ratings" in path:
                self.lose -= 1
                fault = "lost"
            headers = {
                k: v
                for k, v in request.headers.items()
                if k.lower() not in ("host", "content-length")
            }
            r = await client.post("/" + path, content=body, headers=headers)
            self.seen.append((key, fault, r.status_code))
            if fault == "lost":
                return Response(b"bad gateway", status_code=502)
            return Response(r.content, status_code=r.status_code, media_type="application/json")

        self.port = find_free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, 10, "the proxy starts")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def test_a_batch_cut_in_transit_and_a_lost_answer(
    district: DistrictProcess, tmp_path: Path
) -> None:
    hub = HubData(tmp_path / "hub", district)
    hub.press(3000)
    proxy = CuttingProxy(district.url)
    proxy.cut, proxy.lose = 2, 2
    snd = sync.SyncSender(
        hub.engine,
        OFFICE,
        url=proxy.url,
        token=district.hub_token,
        batch_size=1000,
        batch_wait_s=0,
        poll_s=0.01,
        backoff_min_s=0.05,
        backoff_max_s=0.2,
        inflight=1,  # the faults hit batches in a known order (two in flight: test_sync.py)
    )
    try:
        snd.start()
        wait_for(lambda: hub.behind() == 0, 60, "delivery through the proxy")
        snd.stop()
        ratings = [s for s in proxy.seen if ":ratings:" in s[0]]
        first = f"{OFFICE}:ratings:0-1000"
        # cut twice (the district refused the truncated body: 400, nothing stored), then its
        # answer lost twice (stored the first time), then the first answer again
        assert [(k, f, st) for k, f, st in ratings[:5]] == [
            (first, "cut", 400),
            (first, "cut", 400),
            (first, "lost", 200),
            (first, "lost", 200),
            (first, "none", 200),
        ]
        assert_exactly_once(hub, district)
        with district.engine.connect() as c:
            n = c.execute(
                text("SELECT count(*) FROM rating WHERE batch = :k"), {"k": first}
            ).scalar_one()
        assert n == 1000
    finally:
        snd.stop()
        proxy.stop()
        hub.close()


def test_the_hub_count_matches_after_all_of_it(district: DistrictProcess, tmp_path: Path) -> None:
    """A cheap cross-check of the helpers: an untouched run stores every rating once."""
    hub = HubData(tmp_path / "hub", district)
    hub.press(1234)
    snd = sync.SyncSender(
        hub.engine, OFFICE, url=district.url, token=district.hub_token, batch_wait_s=0
    )
    try:
        while snd.run_once():
            pass
        assert_exactly_once(hub, district)
        with Session(hub.engine) as s:
            top = s.exec(select(func.max(col(Rating.id)))).one()
        assert hub.state("ratings").watermark == top
    finally:
        snd.stop()
        hub.close()
