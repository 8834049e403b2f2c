"""The district API is stateless: ``sipas-district serve --workers 2`` on a fresh PostgreSQL
database, with three offices' hubs sending at once, gives the same result as one process would.

Each round, every office sends its next ratings batch (docs/sync.md: gzip, ``Idempotency-Key``
``{office}:ratings:{from}-{to}``) over several connections AT THE SAME TIME, and those connections
are held by different worker processes (the test finds out which worker accepted each connection
from /proc, before it sends), together with a signed heartbeat that covers the batch (a gap the
heartbeat opens must close when the ratings commit, whichever worker takes which). Meanwhile the
satisfaction report is read over and over (each read refreshes the report rollups in whichever
worker answers it).

Checked: two worker processes of the server really answer; every copy of a batch gets 200 with the
same answer, and a resend afterwards gets it again; every rating is stored exactly once and nothing
is refused; the offices list, the integrity summary and the satisfaction report read through the
API agree with what was sent; a report never goes backwards while ratings arrive; no worker died.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.faults.test_sync_faults import (  # noqa: F401  (pg_database is a fixture)
    OFFICE,
    DistrictProcess,
    pg_database,
    wait_for,
)
from tests.fixtures.district import Term, add_office, batch, new_terminal

pytestmark = pytest.mark.faults

WORKERS = 2
OFFICES = (OFFICE, "office-b", "office-c")
TERMINALS = 2  # per office
ROUNDS = 4  # batches per office, one after the other, as a hub sends them
PER_BATCH = 300  # ratings per batch
COPIES = 3  # the same batch sent at once over this many connections, spread over the workers
DAY0 = 1_780_000_000  # 2026-05-28 UTC; the ratings fall on three office days
PERIOD = {"from": "2026-05-01", "to": "2026-06-30"}
SYNC = "/api/v1/sync/"


# -- which worker process holds a connection (/proc, no psutil) ----------------------------------
_STARTED = re.compile(r"Started server process \[(\d+)\]")


def started_workers(d: DistrictProcess) -> list[int]:
    """The PIDs of the ``Started server process [PID]`` lines of the server's log, in order."""
    return [int(p) for p in _STARTED.findall(log_of(d))]


def log_of(d: DistrictProcess) -> str:
    return (d.workdir / "serve.log").read_text(errors="replace")


def parent_pid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])  # "pid (comm) state ppid ..."


def _sockets(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if link.startswith("socket:["):
            out.add(link[8:-1])
    return out


def _server_end(server_port: int, client_port: int) -> str | None:
    """The inode of the server's end of the loopback connection from ``client_port`` (None before
    a process has accepted it: the kernel gives it an inode at accept)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        local, remote, inode = f[1], f[2], f[9]
        if (
            int(local.rsplit(":", 1)[1], 16) == server_port
            and int(remote.rsplit(":", 1)[1], 16) == client_port
            and inode != "0"
        ):
            return inode
    return None


class Conn:
    """One HTTP/1.1 connection to the district, and the worker process that accepted it (a
    connection stays with the process that accepted it: every request on it goes there)."""

    def __init__(self, d: DistrictProcess, workers: list[int]):
        self.http = http.client.HTTPConnection("127.0.0.1", d.port, timeout=60)
        self.worker = 0
        try:
            self.http.connect()
            assert self.http.sock is not None
            port = self.http.sock.getsockname()[1]
            deadline = time.monotonic() + 30
            while not self.worker:
                inode = _server_end(d.port, port)
                for pid in workers:
                    if inode is not None and inode in _sockets(pid):
                        self.worker = pid
                assert self.worker or time.monotonic() < deadline, (
                    f"no worker of {workers} accepted the connection from port {port} in 30 s"
                )
                time.sleep(0.01)
        except BaseException:
            self.http.close()
            raise

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        self.http.request("POST", path, body=body, headers=headers)
        r = self.http.getresponse()
        data = r.read()
        try:
            return r.status, json.loads(data)
        except ValueError:
            return r.status, data.decode(errors="replace")

    def close(self) -> None:
        self.http.close()


def spread(d: DistrictProcess, workers: list[int], n: int) -> list[Conn]:
    """``n`` connections, as evenly over the workers as the kernel lets (at most ceil(n/workers)
    each, so every worker holds at least one when n >= the number of workers)."""
    cap = math.ceil(n / len(workers))
    kept: list[Conn] = []
    per: Counter[int] = Counter()
    try:
        for _ in range(200):
            c = Conn(d, workers)
            if per[c.worker] < cap:
                kept.append(c)
                per[c.worker] += 1
                if len(kept) == n:
                    return kept
            else:
                c.close()
        raise AssertionError(f"200 connections, accepted by {dict(per)}: a worker takes none")
    except BaseException:
        for c in kept:
            c.close()
        raise


# -- the offices' data ------------------------------------------------------------------------------
class Office:
    """An office's hub token, its terminals (signing like the firmware) and its batches."""

    def __init__(self, d: DistrictProcess, office: str):
        self.id = office
        self.token = d.hub_token if office == OFFICE else add_office(d.engine, office)
        self.terms: list[Term] = [new_terminal(d.engine, office) for _ in range(TERMINALS)]
        self.levels: Counter[str] = Counter()
        self.keys: set[tuple[str, int, int]] = set()
        self.ratings: list[tuple[bytes, dict[str, str], int]] = []  # body, headers, to
        self.heartbeats: list[tuple[bytes, dict[str, str], int]] = []
        seq = dict.fromkeys(range(TERMINALS), 0)
        hb_at = 0
        for r in range(ROUNDS):
            items = []
            for i in range(PER_BATCH):
                n = i % TERMINALS
                t = self.terms[n]
                seq[n] += 1
                level = 1 + (seq[n] * 7 + n + len(office)) % 3
                day = DAY0 + (seq[n] % 3) * 86400
                items.append(t.item(seq[n], level, raw=t.record(seq[n], level, t=day).hex()))
                self.levels[str(level)] += 1
                self.keys.add((t.terminal_id, t.epoch, seq[n]))
            body, headers = batch(office, "ratings", r * PER_BATCH, items)
            self.ratings.append((body, self.auth(headers), (r + 1) * PER_BATCH))
            beats = [
                term.heartbeat(seq[n], t=DAY0 + 100_000 + r) for n, term in enumerate(self.terms)
            ]
            body, headers = batch(office, "heartbeats", hb_at, beats)
            hb_at += len(beats)
            self.heartbeats.append((body, self.auth(headers), hb_at))

    def auth(self, headers: dict[str, str]) -> dict[str, str]:
        return {**headers, "Authorization": f"Bearer {self.token}"}


# -- the report, read over and over while the batches arrive ------------------------------------------
class ReportReader(threading.Thread):
    """Reads ``/reports/satisfaction`` by office in a loop (new connections: any worker answers);
    notes errors and any office whose count went down from one read to the next."""

    def __init__(self, d: DistrictProcess):
        super().__init__(daemon=True)
        self.d = d
        self.stop = threading.Event()
        self.reads = 0
        self.problems: list[str] = []
        self.last: dict[str, int] = {}

    def read(self) -> dict[str, dict[str, Any]]:
        r = httpx.get(
            f"{self.d.url}/api/v1/reports/satisfaction",
            params={**PERIOD, "by": "office"},
            headers={"Authorization": f"Bearer {self.d.admin}"},
            timeout=60,
        )
        assert r.status_code == 200, (r.status_code, r.text[:500])
        return {row["office"]: row for row in r.json()["rows"]}

    def run(self) -> None:
        while True:
            try:
                rows = self.read()
            except Exception as e:  # noqa: BLE001 - noted, the test fails on it
                self.problems.append(f"report read failed: {e!r}")
                return
            self.reads += 1
            for office, row in rows.items():
                if row["valid"] < self.last.get(office, 0):
                    self.problems.append(
                        f"{office}: the report went from {self.last[office]} to {row['valid']}"
                    )
                self.last[office] = row["valid"]
            if self.stop.wait(0.05):
                return


# -- the test ---------------------------------------------------------------------------------------
@pytest.fixture
def district(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[DistrictProcess]:
    url = request.getfixturevalue("pg_database")  # a fresh database, dropped after the test
    d = DistrictProcess(tmp_path / "district", url, workers=WORKERS)
    try:
        d.start()
        yield d
    finally:
        d.close()  # the parent and its workers (their process group), even after a failure


def test_two_workers_store_every_batch_once(district: DistrictProcess) -> None:
    d = district
    # 1. two worker processes, children of the server's process, answering
    wait_for(lambda: len(started_workers(d)) >= WORKERS, 60, "both workers start")
    workers = started_workers(d)
    assert d.proc is not None
    assert len(set(workers)) == WORKERS, log_of(d)[-3000:]
    assert all(parent_pid(p) == d.proc.pid for p in workers), (workers, d.proc.pid)
    assert httpx.get(f"{d.url}/api/v1/health", timeout=10).json()["ok"] is True

    offices = [Office(d, o) for o in OFFICES]
    reader = ReportReader(d)
    reader.start()
    answers: dict[str, dict[str, Any]] = {}  # idempotency key -> the answer
    served_by: dict[str, set[int]] = {}  # idempotency key -> the workers that answered a copy

    def send(conn: Conn, go: threading.Barrier, item: tuple[bytes, dict[str, str], int]) -> Any:
        body, headers, _ = item
        stream = headers["Idempotency-Key"].split(":")[1]
        go.wait(30)
        return conn.post(SYNC + stream, body, headers)

    # 2. every round: each office's ratings batch COPIES times at once, over connections held by
    #    both workers, and its heartbeat; all offices at the same moment
    try:
        with ThreadPoolExecutor(len(OFFICES) * (COPIES + 1)) as pool:
            for r in range(ROUNDS):
                jobs: list[tuple[tuple[bytes, dict[str, str], int], Conn]] = []
                try:
                    for o in offices:
                        conns = spread(d, workers, COPIES)
                        jobs += [(o.ratings[r], c) for c in conns]
                        jobs.append((o.heartbeats[r], Conn(d, workers)))
                    go = threading.Barrier(len(jobs))
                    futures = [pool.submit(send, c, go, item) for item, c in jobs]
                    results = [f.result(timeout=120) for f in futures]
                finally:
                    for _, c in jobs:
                        c.close()
                for (item, conn), (status, answer) in zip(jobs, results, strict=True):
                    key = item[1]["Idempotency-Key"]
                    assert status == 200, (key, status, answer)
                    assert answers.setdefault(key, answer) == answer, (
                        f"copies of {key} got different answers: {answers[key]} and {answer}"
                    )
                    served_by.setdefault(key, set()).add(conn.worker)
        for o in offices:
            for _, headers, to in o.ratings:
                key = headers["Idempotency-Key"]
                # stored once: the first copy stored every item, the others got its answer
                assert answers[key] == {
                    "stored": PER_BATCH,
                    "duplicates": 0,
                    "rejected": [],
                    "to": to,
                }, key
                assert served_by[key] == set(workers), (key, served_by[key])
            for _, headers, to in o.heartbeats:
                key = headers["Idempotency-Key"]
                assert answers[key] == {
                    "stored": TERMINALS,
                    "duplicates": 0,
                    "rejected": [],
                    "to": to,
                }, key
    finally:
        reader.stop.set()
        reader.join(60)
    assert not reader.is_alive()
    assert reader.problems == [], reader.problems
    assert reader.reads >= 1

    # a resend later (a hub that lost the answer) gets the first answer again, from any worker
    for o in offices:
        for body, headers, _ in o.ratings:
            r = httpx.post(d.url + SYNC + "ratings", content=body, headers=headers, timeout=60)
            assert (r.status_code, r.json()) == (200, answers[headers["Idempotency-Key"]])

    # every rating exactly once, nothing refused (at the database)
    with d.engine.connect() as c:
        rows = c.execute(text("SELECT office, terminal_id, epoch, seq FROM rating")).all()
        findings = c.execute(text("SELECT count(*) FROM finding")).scalar_one()
        batches = c.execute(text("SELECT count(*) FROM sync_batch")).scalar_one()
    for o in offices:
        theirs = [(t, e, s) for office, t, e, s in rows if office == o.id]
        assert len(theirs) == len(set(theirs)) == ROUNDS * PER_BATCH, o.id
        assert set(theirs) == o.keys, o.id
    assert len(rows) == len(OFFICES) * ROUNDS * PER_BATCH
    assert findings == 0
    assert batches == len(OFFICES) * ROUNDS * 2  # one row per key, however many copies

    # 3. what a district auditor reads through the API agrees with what the hubs sent
    admin = {"Authorization": f"Bearer {d.admin}"}
    listed = httpx.get(f"{d.url}/api/v1/offices", headers=admin, timeout=60).json()
    assert {x["id"]: (x["ratings"], x["ratings_unverified"], x["forged"]) for x in listed} == {
        o.id: (ROUNDS * PER_BATCH, 0, 0) for o in offices
    }
    # (each round's heartbeat raced its ratings: a gap it saw must have closed when they committed)
    assert {x["id"]: x["suspected_deletions"] for x in listed} == {o.id: 0 for o in offices}
    summary = httpx.get(f"{d.url}/api/v1/integrity", headers=admin, timeout=60).json()
    assert {x["office"]: x["ok"] for x in summary} == {o.id: True for o in offices}, summary
    rows_by_office = reader.read()
    assert {o: (row["valid"], row["levels"]) for o, row in rows_by_office.items()} == {
        o.id: (ROUNDS * PER_BATCH, dict(sorted(o.levels.items()))) for o in offices
    }

    # the same two workers all along: none died and was replaced
    assert started_workers(d) == workers, log_of(d)[-3000:]
    assert "died" not in log_of(d), log_of(d)[-3000:]
    assert all(parent_pid(p) == d.proc.pid for p in workers)
