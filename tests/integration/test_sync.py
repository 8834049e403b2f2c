"""The hub's sync sender (hub/sync.py) against a receiving endpoint that keeps the rules of
docs/sync.md: bearer token and office, gzip, the idempotency key (the same key and body: the first
answer again; another body: 409), 200 / 4xx / 5xx answers, and duplicates stored once.

The endpoint (``StubDistrict``) is a small FastAPI app served by uvicorn on a free loopback port,
so the sender talks real HTTP; it can be told to fail, hang or stay down. The real district server
(hub/district/) is exercised in tests/faults/test_sync_*.py.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from hub import office as ofc
from hub import protocol, sync
from hub.alerts import Alert, AlertEngine, AlertEvent
from hub.api.app import create_app
from hub.broker import find_free_port
from hub.db import make_engine
from hub.ingest import Ingestor
from hub.models import Heartbeat, Rating, SyncState
from hub.registry import add_terminal
from tests.helpers import rating_topic, record

pytestmark = pytest.mark.integration

OFFICE = "office-test"
TOKEN = "hub-token-" + "x" * 20


# -- the receiving endpoint ------------------------------------------------------------------------
@dataclass
class Call:
    at: float
    stream: str
    key: str
    status: int
    count: int


@dataclass
class StubDistrict:
    """docs/sync.md's receiving side, in memory. ``fail`` holds answers to give before the next
    requests are processed (a status code, or "hang" to answer only after ``hang_s``)."""

    port: int = field(default_factory=find_free_port)
    fail: list[int | str] = field(default_factory=list)
    fail_streams: set[str] | None = None  # only these streams fail (None: all)
    fail_keys: dict[str, list[int]] = field(default_factory=dict)  # answers for these keys first
    always: int | None = None  # answer this to every request while set
    hang_s: float = 2.0
    calls: list[Call] = field(default_factory=list)
    answers: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    stored: dict[str, dict[Any, dict[str, Any]]] = field(default_factory=dict)
    duplicates: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/api/v1/sync/{stream}")
        async def receive(stream: str, request: Request) -> JSONResponse:
            raw = await request.body()
            key = request.headers.get("idempotency-key", "")
            with self.lock:
                planned = self.fail_keys.get(key)
                answer: int | str | None = planned.pop(0) if planned else None
            if answer is None:
                answer = self._fault(stream)
            if answer == "hang":
                time.sleep(self.hang_s)  # blocks this server: a district that stopped answering
            elif answer is not None:
                return self._answer(stream, key, int(answer), {"detail": "injected"}, 0)
            if request.headers.get("authorization") != f"Bearer {TOKEN}":
                return self._answer(stream, key, 401, {"detail": "bad token"}, 0)
            if request.headers.get("content-encoding") != "gzip":
                return self._answer(stream, key, 400, {"detail": "not gzip"}, 0)
            try:
                body = gzip.decompress(raw)
                doc = json.loads(body)
            except (OSError, EOFError, ValueError):
                return self._answer(stream, key, 400, {"detail": "truncated or not JSON"}, 0)
            if doc.get("office") != OFFICE:
                return self._answer(stream, key, 403, {"detail": "not your office"}, 0)
            if doc.get("v") != 1 or doc.get("stream") != stream:
                return self._answer(stream, key, 422, {"detail": "bad batch"}, 0)
            if key != f"{OFFICE}:{stream}:{doc['from']}-{doc['to']}":
                return self._answer(stream, key, 400, {"detail": "key does not match"}, 0)
            digest = hashlib.sha256(body).hexdigest()
            with self.lock:
                if key in self.answers:
                    first_digest, first = self.answers[key]
                    if first_digest != digest:
                        return self._answer(stream, key, 409, {"detail": "another body"}, 0)
                    return self._answer(stream, key, 200, first, len(doc["items"]))
                stored = dups = 0
                table = self.stored.setdefault(stream, {})
                for item in doc["items"]:
                    k = _item_key(stream, item)
                    if k in table:
                        dups += 1
                    else:
                        table[k] = item
                        stored += 1
                self.duplicates += dups
                first = {"stored": stored, "duplicates": dups, "rejected": [], "to": doc["to"]}
                self.answers[key] = (digest, first)
            return self._answer(stream, key, 200, first, len(doc["items"]))

        return app

    def _fault(self, stream: str) -> int | str | None:
        if self.fail_streams is not None and stream not in self.fail_streams:
            return None
        if self.always is not None:
            return self.always
        with self.lock:
            return self.fail.pop(0) if self.fail else None

    def _answer(
        self, stream: str, key: str, status: int, body: dict[str, Any], n: int
    ) -> JSONResponse:
        self.calls.append(Call(time.monotonic(), stream, key, status, n))
        return JSONResponse(body, status_code=status)

    def keys(self, stream: str, status: int | None = 200) -> list[str]:
        return [c.key for c in self.calls if c.stream == stream and status in (None, c.status)]


def _item_key(stream: str, item: dict[str, Any]) -> Any:
    if stream == "ratings":
        return (item["terminal_id"], item["epoch"], item["seq"])
    if stream == "heartbeats":
        return (item["terminal_id"], item["epoch"], item["last_seq"], item["time"])
    if stream == "directory":
        return json.dumps(item, sort_keys=True)
    return item["id"]


class Served:
    """A StubDistrict served by uvicorn in a thread; ``stop`` makes the port refuse again."""

    def __init__(self, stub: StubDistrict):
        self.stub = stub
        cfg = uvicorn.Config(
            stub.app(), host="127.0.0.1", port=stub.port, log_level="error", access_log=False
        )
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the stub district did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def district() -> Iterator[StubDistrict]:
    stub = StubDistrict()
    served = Served(stub)
    yield stub
    served.stop()


# -- the hub's side --------------------------------------------------------------------------------
@dataclass
class Office:
    engine: Engine
    ingestor: Ingestor
    device: dict[str, Any]
    seq: int = 0

    def press(self, n: int, **kw: Any) -> None:
        msgs = []
        for _ in range(n):
            self.seq += 1
            msgs.append((rating_topic(self.device), record(self.device, self.seq, **kw)))
        for i in range(0, len(msgs), 500):
            self.ingestor.process(msgs[i : i + 500])

    def heartbeat(self, last_seq: int, t: int = 1795000000) -> None:
        d = self.device
        tid, epoch = d["terminal_id"], d["epoch"]
        st = {
            "v": 1,
            "state": "online",
            "epoch": epoch,
            "last_seq": last_seq,
            "outbox": 0,
            "time": t,
            "clock": True,
            "tag": protocol.status_tag(bytes.fromhex(d["hub_key"]), tid, epoch, last_seq, t).hex(),
            "dtag": protocol.status_tag(
                bytes.fromhex(d["district_key"]), tid, epoch, last_seq, t
            ).hex(),
        }
        self.ingestor.process([(rating_topic(d, leaf="status"), json.dumps(st).encode())])


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Office]:
    engine = make_engine(f"sqlite:///{tmp_path / 'hub.sqlite3'}")
    with Session(engine) as s:
        ofc.create_desk(
            s, office=OFFICE, data=ofc.DeskCreate(id="quay-1", name="Quầy 1"), actor="t"
        )
        s.commit()
    _, device = add_terminal(engine, office=OFFICE, desk="quay-1")
    yield Office(engine, Ingestor(engine, OFFICE), device)
    engine.dispose()


def sender(office: Office, url: str, **kw: Any) -> sync.SyncSender:
    kw.setdefault("batch_wait_s", 0)
    kw.setdefault("poll_s", 0.02)
    return sync.SyncSender(office.engine, OFFICE, url=url, token=TOKEN, **kw)


def state(engine: Engine, stream: str) -> SyncState:
    with Session(engine) as s:
        return s.get(SyncState, stream) or SyncState(stream=stream)  # none yet: nothing sent


def wait_for(cond: Callable[[], bool], timeout: float = 15, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"not reached in {timeout} s: {what}"
        time.sleep(0.02)


# -- tests -----------------------------------------------------------------------------------------
def test_batches_go_in_order_and_move_the_watermark(office: Office, district: StubDistrict) -> None:
    office.press(2500)
    office.heartbeat(2500)
    with Session(office.engine) as s:
        ofc.exclude(s, rating_id=7, reason="on_behalf", note=None, actor="truong")
        s.commit()
    snd = sender(office, district.url, batch_size=1000)
    while snd.run_once():
        pass
    snd.stop()
    # two full batches may be in flight at once (they can arrive in either order): the ranges
    # are consecutive, each sent once
    got = district.keys("ratings")
    assert sorted(got, key=lambda k: int(k.rsplit(":", 1)[1].split("-")[0])) == [
        f"{OFFICE}:ratings:0-1000",
        f"{OFFICE}:ratings:1000-2000",
        f"{OFFICE}:ratings:2000-2500",
    ]
    assert len(district.stored["ratings"]) == 2500 and district.duplicates == 0
    assert state(office.engine, "ratings").watermark == 2500
    # the heartbeat carries the district tag; the exclusion names its rating by key
    (hb,) = district.stored["heartbeats"].values()
    assert hb["last_seq"] == 2500 and len(hb["dtag"]) == 32
    (ex,) = district.stored["exclusions"].values()
    assert ex["rating"] == [office.device["terminal_id"], 1, 7] and ex["reason"] == "on_behalf"
    (snap,) = district.stored["directory"].values()
    assert snap["desks"] == [{"id": "quay-1", "name": "Quầy 1", "requires_case": False}]
    assert snap["terminals"][0]["id"] == office.device["terminal_id"]
    # nothing new: nothing sent
    calls = len(district.calls)
    snd = sender(office, district.url)
    snd.run_once()
    snd.stop()
    assert len(district.calls) == calls


def test_a_partial_batch_waits_then_goes(office: Office, district: StubDistrict) -> None:
    office.press(10)
    snd = sender(office, district.url, batch_size=1000, batch_wait_s=0.5)
    snd.start()
    t0 = time.monotonic()
    wait_for(lambda: bool(district.keys("ratings")), what="the partial batch")
    waited = time.monotonic() - t0
    snd.stop()
    assert 0.45 <= waited < 3, waited
    assert district.keys("ratings") == [f"{OFFICE}:ratings:0-10"]


def test_a_restart_resumes_from_the_stored_watermark(
    office: Office, district: StubDistrict
) -> None:
    office.press(1500)
    first = sender(office, district.url, batch_size=1000, batch_wait_s=60)
    first.run_once()  # the full batch goes; the 500 left wait for more
    first.stop()
    assert state(office.engine, "ratings").watermark == 1000
    office.press(700)
    again = sender(office, district.url, batch_size=1000)  # "after a restart": a new sender
    while again.run_once():
        pass
    again.stop()
    assert district.keys("ratings") == [
        f"{OFFICE}:ratings:0-1000",
        f"{OFFICE}:ratings:1000-2000",
        f"{OFFICE}:ratings:2000-2200",
    ]
    assert len(district.stored["ratings"]) == 2200 and district.duplicates == 0


def test_backoff_grows_to_the_cap_with_jitter() -> None:
    import random

    rng = random.Random(7).random
    for attempt, nominal in [(1, 1), (2, 2), (3, 4), (9, 256), (10, 300), (40, 300)]:
        draws = [sync.backoff_delay(attempt, cap=300, rng=rng) for _ in range(200)]
        assert all(0.75 * nominal <= d <= nominal for d in draws), (attempt, min(draws))
        assert max(draws) - min(draws) > 0.15 * nominal  # jittered, not in step


def test_server_errors_back_off_and_retry_with_the_same_key(
    office: Office, district: StubDistrict
) -> None:
    office.press(30)
    district.fail = [503, 502, 500, 503]
    district.fail_streams = {"ratings"}
    snd = sender(office, district.url, backoff_min_s=0.2, backoff_max_s=0.8)
    snd.start()
    wait_for(lambda: bool(district.keys("ratings")), what="delivery after four 5xx")
    snd.stop()
    tries = [c for c in district.calls if c.stream == "ratings"]
    assert [c.status for c in tries] == [503, 502, 500, 503, 200]
    assert {c.key for c in tries} == {f"{OFFICE}:ratings:0-30"}  # the same batch each time
    gaps = [b.at - a.at for a, b in zip(tries, tries[1:], strict=False)]
    # nominal pauses 0.2, 0.4, 0.8, 0.8 (the cap), each shortened by up to 25 %
    for gap, nominal in zip(gaps, [0.2, 0.4, 0.8, 0.8], strict=True):
        assert 0.75 * nominal - 0.02 <= gap <= nominal + 0.3, gaps
    assert gaps[0] < gaps[1] < gaps[2], gaps
    st = state(office.engine, "ratings")
    assert (st.watermark, st.attempts, st.failing_since, st.pending_to) == (30, 0, None, None)
    assert len(district.stored["ratings"]) == 30


def test_a_timeout_is_retried_and_the_district_keeps_one_copy(
    office: Office, district: StubDistrict
) -> None:
    office.press(20)
    district.fail = ["hang"]  # processed, but the answer comes after the hub gave up
    district.fail_streams = {"ratings"}
    district.hang_s = 1.0
    snd = sender(office, district.url, timeout_s=0.3, backoff_min_s=0.1)
    snd.start()
    wait_for(lambda: state(office.engine, "ratings").watermark == 20, what="delivery")
    snd.stop()
    st = state(office.engine, "ratings")
    assert st.sent == 20
    assert set(district.keys("ratings", None)) == {f"{OFFICE}:ratings:0-20"}
    assert len(district.stored["ratings"]) == 20 and district.duplicates == 0


def test_connection_refused_then_the_district_comes_up(office: Office) -> None:
    office.press(5)
    stub = StubDistrict()  # not served yet: its port refuses
    snd = sender(office, stub.url, backoff_min_s=0.1, backoff_max_s=0.4)
    snd.run_once()
    st = state(office.engine, "ratings")
    assert st.attempts == 1 and "cannot reach the district" in (st.last_error or "")
    assert st.pending_to == 5 and st.next_attempt_at is not None
    snd.start()
    time.sleep(0.6)
    assert state(office.engine, "ratings").attempts >= 2  # still trying, further apart
    served = Served(stub)
    try:
        wait_for(lambda: state(office.engine, "ratings").watermark == 5, what="delivery")
    finally:
        snd.stop()
        served.stop()
    assert stub.keys("ratings") == [f"{OFFICE}:ratings:0-5"]


def test_a_400_keeps_the_watermark_and_raises_an_alert_until_it_passes(
    office: Office, district: StubDistrict
) -> None:
    office.press(12)
    alerts = AlertEngine(office.engine, OFFICE)
    district.always = 400
    district.fail_streams = {"ratings"}
    snd = sender(office, district.url, backoff_min_s=0.05, backoff_max_s=0.1, alert_after_s=0.5)
    snd.alerts = alerts
    snd.start()
    wait_for(
        lambda: any(a.rule == "sync" for a in alerts.list(state="open")), what="the sync alert"
    )
    st = state(office.engine, "ratings")
    assert st.watermark == 0 and "400" in (st.last_error or "")
    (alert,) = [a for a in alerts.list(state="open") if a.rule == "sync"]
    assert alert.title_vi.startswith("Không đồng bộ được dữ liệu lên máy chủ cấp huyện")
    assert "ratings" in alert.detail["streams"]
    assert state(office.engine, "cases").failing_since is None  # other streams go on
    district.always = None  # fixed at the district
    wait_for(lambda: state(office.engine, "ratings").watermark == 12, what="delivery")
    wait_for(lambda: alerts.get(alert.id).state == "resolved", what="the alert resolved")
    snd.stop()
    alerts.close()
    with Session(office.engine) as s:
        ev = s.exec(select(AlertEvent).where(AlertEvent.alert_id == alert.id)).all()
        sync_alerts = s.exec(select(Alert).where(Alert.rule == "sync")).all()
    assert [e.action for e in ev][-1] == "resolved" and ev[-1].actor == "hub"
    assert len(sync_alerts) == 1  # one alert for the whole outage


def test_exclusions_wait_for_their_rating(office: Office, district: StubDistrict) -> None:
    office.press(3)
    with Session(office.engine) as s:
        ofc.exclude(s, rating_id=2, reason="test", note=None, actor="truong")
        s.commit()
    district.always = 503
    district.fail_streams = {"ratings"}
    snd = sender(office, district.url, backoff_min_s=10)
    snd.run_once()
    assert "exclusions" not in district.stored  # its rating has not reached the district
    district.always = None
    snd.run_once(force=True)
    snd.stop()
    assert len(district.stored["ratings"]) == 3 and len(district.stored["exclusions"]) == 1


def test_a_413_halves_the_batch(office: Office, district: StubDistrict) -> None:
    office.press(40)
    district.fail = [413]
    district.fail_streams = {"ratings"}
    snd = sender(office, district.url, batch_size=40, backoff_min_s=0.01)
    for _ in range(10):
        snd.run_once(force=True)
    snd.stop()
    assert district.keys("ratings") == [f"{OFFICE}:ratings:0-20", f"{OFFICE}:ratings:20-40"]


@pytest.mark.parametrize("failing", ["first", "second"])
def test_two_batches_in_flight_one_fails(
    office: Office, district: StubDistrict, failing: str
) -> None:
    """A catch-up sends two full batches at once. Whichever of the two fails, the watermark never
    passes a range the district has not answered 200 for, the failed range goes again under its
    own key, and every rating is stored once."""
    office.press(3000)
    first, second = f"{OFFICE}:ratings:0-1000", f"{OFFICE}:ratings:1000-2000"
    bad = first if failing == "first" else second
    district.fail_keys = {bad: [503]}
    snd = sender(office, district.url, batch_size=1000, backoff_min_s=0.01)
    snd.run_once()  # the pair goes; one of them is refused
    assert {c.key for c in district.calls if c.stream == "ratings"} == {first, second}
    st = state(office.engine, "ratings")
    assert st.watermark == (0 if failing == "first" else 1000)
    assert st.pending_to == (1000 if failing == "first" else 2000)  # the failed range, again
    for _ in range(10):
        snd.run_once(force=True)
    snd.stop()
    assert state(office.engine, "ratings").watermark == 3000
    assert len(district.stored["ratings"]) == 3000 and district.duplicates == 0
    tries = [(c.key, c.status) for c in district.calls if c.key == bad]
    assert tries == [(bad, 503), (bad, 200)]  # the same range under the same key, once more
    # the other one of the pair went once, or once more answered from the district's memory
    # (it was stored the first time): never stored twice
    assert {c.key for c in district.calls if c.stream == "ratings"} == {
        first,
        second,
        f"{OFFICE}:ratings:2000-3000",
    }


def test_rating_times_go_out_as_isoformat_writes_them(office: Office) -> None:
    """The ratings stream reads times as SQLite stores them (no datetime per row); the text must
    be what ``isoformat()`` gives, byte for byte, or a batch made before an upgrade and sent again
    after it would have another body under the same key (409 for ever at the district)."""
    office.press(3)  # press times in whole seconds (signed), receipt times with microseconds
    with Session(office.engine) as s:
        items = [item for _, item, _ in sync._ratings(s, 0, None, 10)]  # noqa: SLF001
        rows = s.exec(select(Rating).order_by(col(Rating.id))).all()
    assert len(items) == len(rows) == 3
    for item, r in zip(items, rows, strict=True):
        assert item["press_time"] == sync._iso(r.press_time)  # noqa: SLF001
        assert item["received_at"] == sync._iso(r.received_at)  # noqa: SLF001
    assert not items[0]["press_time"].endswith(".000000+00:00")
    assert any(r.received_at.microsecond for r in rows)  # both kinds of time were checked


def test_one_batch_at_a_time_while_failing(office: Office, district: StubDistrict) -> None:
    office.press(3000)
    district.always = 503
    district.fail_streams = {"ratings"}
    snd = sender(office, district.url, batch_size=1000, backoff_min_s=0.01)
    for _ in range(4):
        snd.run_once(force=True)
    snd.stop()
    keys = [c.key for c in district.calls if c.stream == "ratings"]
    # the first round sends a pair (nothing had failed yet); then only the pending range
    assert keys[2:] == [f"{OFFICE}:ratings:0-1000"] * 3, keys


def test_heartbeats_are_logged_when_the_signed_sequence_changes(office: Office) -> None:
    office.press(3)
    for last_seq in (3, 3, 3, 5, 5):
        office.heartbeat(last_seq)
    with Session(office.engine) as s:
        rows = s.exec(select(Heartbeat)).all()
    assert [h.last_seq for h in rows] == [3, 5]


def test_the_directory_goes_again_when_it_changes(office: Office, district: StubDistrict) -> None:
    snd = sender(office, district.url)
    snd.run_once()
    assert district.keys("directory") == [f"{OFFICE}:directory:0-1"]
    snd.run_once()
    assert district.keys("directory") == [f"{OFFICE}:directory:0-1"]  # unchanged: not sent
    with Session(office.engine) as s:
        ofc.create_official(
            s, office=OFFICE, data=ofc.OfficialCreate(id="an", name="Nguyễn Văn An"), actor="t"
        )
        s.commit()
    snd.run_once()
    snd.stop()
    assert district.keys("directory")[-1] == f"{OFFICE}:directory:1-2"
    latest = json.loads(max(district.stored["directory"]))
    assert latest["officials"] == [{"id": "an", "name": "Nguyễn Văn An", "active": True}]


def test_status_in_the_api_and_the_cli(
    office: Office,
    district: StubDistrict,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    office.press(25)
    district.always = 503
    snd = sender(office, district.url, backoff_min_s=60)
    snd.run_once()
    app = create_app(office.engine, token="t" * 32, office=OFFICE)
    app.state.sync = snd

    async def get(path: str, **kw: Any) -> httpx.Response:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://hub"
        ) as c:
            return await c.get(path, **kw)

    r = asyncio.run(get("/api/v1/sync", headers={"Authorization": "Bearer " + "t" * 32}))
    assert r.status_code == 200, r.text
    st = r.json()
    assert asyncio.run(get("/api/v1/sync")).status_code == 401
    ratings = next(x for x in st["streams"] if x["stream"] == "ratings")
    assert st["configured"] and not st["ok"]
    assert ratings["behind_items"] == 25 and ratings["behind_s"] >= 0
    assert "503" in ratings["last_error"] and ratings["next_attempt_at"]
    snd.stop()

    monkeypatch.setenv("SIPAS_HUB_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SIPAS_HUB_OFFICE", OFFICE)
    monkeypatch.setenv("SIPAS_HUB_DISTRICT_URL", district.url)
    monkeypatch.setenv("SIPAS_HUB_DISTRICT_TOKEN", TOKEN)
    monkeypatch.setenv("SIPAS_HUB_ENV_FILE", str(tmp_path / "none.env"))
    monkeypatch.setenv("COLUMNS", "200")
    from hub.cli import app as cli

    runner = CliRunner()
    res = runner.invoke(cli, ["sync", "status"])
    assert res.exit_code == 1, res.output
    assert "ratings" in res.output and "25" in res.output and "503" in res.output
    district.always = None
    res = runner.invoke(cli, ["sync", "now"])
    assert res.exit_code == 0, res.output
    assert "up to date" in res.output
    res = runner.invoke(cli, ["sync", "status", "--json"])
    assert res.exit_code == 0, res.output
    st = json.loads(res.stdout)
    assert st["ok"] and st["behind_items"] == 0
    assert len(district.stored["ratings"]) == 25
