"""The alerts API served by uvicorn on a free loopback port over a real SQLite file: list, read,
acknowledge, resolve, comment, and the live Server-Sent Events stream."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy.engine import Engine
from sqlmodel import Session

from hub import alerts as alerts_mod  # noqa: F401  (registers the alert tables before create_all)
from hub.alerts import AlertEngine
from hub.api.app import create_app
from hub.broker import find_free_port
from hub.db import make_engine
from hub.models import Rating, Terminal, utcnow

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
OFFICE = "office-test"
TOKEN = "test-token-5b1f0c"
T1 = "t-000000000001"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'hub.sqlite3'}")
    with Session(engine) as s:
        s.add(Terminal(id=T1, office=OFFICE, desk="quay-1", hub_key="00" * 32, mqtt_password="x"))
        s.commit()
    yield engine
    engine.dispose()


@pytest.fixture
def alerts(db: Engine) -> Iterator[AlertEngine]:
    eng = AlertEngine(db, OFFICE)
    yield eng
    eng.close()


@pytest.fixture
def app(db: Engine, alerts: AlertEngine) -> FastAPI:
    app = create_app(db, token=TOKEN)  # includes the alerts router
    app.state.alert_ping_seconds = 0.2
    app.state.alerts = alerts
    return app


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run ``app`` with uvicorn in a thread; yields its base URL."""
    port = find_free_port()
    cfg = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws="none",
        timeout_graceful_shutdown=2,
    )
    srv = uvicorn.Server(cfg)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        assert thread.is_alive(), "uvicorn stopped"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def server(app: FastAPI) -> Iterator[str]:
    with serve(app) as url:
        yield url + "/api/v1/alerts"


@pytest.fixture
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server.removesuffix("/api/v1/alerts"), headers=AUTH, timeout=10
    ) as c:
        yield c


_seq = iter(range(1, 1_000_000))


def negative(db: Engine, alerts: AlertEngine, at: datetime | None = None) -> None:
    """A dissatisfied rating stored, then handed to the rules as ingest does after its commit."""
    r = Rating(
        terminal_id=T1,
        epoch=1,
        seq=next(_seq),
        office=OFFICE,
        desk="quay-1",
        level=3,
        scale=3,
        press_time=at or utcnow(),
        raw=bytes(48),
    )
    with Session(db) as s:
        s.add(r)
        s.commit()
        s.refresh(r)
    alerts.on_ratings([r])


def test_token_required(server: str) -> None:
    with httpx.Client(base_url=server.removesuffix("/api/v1/alerts"), timeout=10) as anon:
        for path in ("/api/v1/alerts", "/api/v1/alerts/1", "/api/v1/alerts/stream"):
            r = anon.get(path)
            assert r.status_code == 401, path
        r = anon.post("/api/v1/alerts/1/resolve", json={"actor": "x"})
        assert r.status_code == 401
        assert "Bearer" in r.json()["detail"]


def test_list_get_and_filters(client: httpx.Client, db: Engine, alerts: AlertEngine) -> None:
    negative(db, alerts)
    alerts.on_status(T1, {"v": 1, "state": "online", "clock": False})
    alerts.on_status(T1, {"v": 1, "state": "online", "clock": False})
    r = client.get("/api/v1/alerts")
    assert r.status_code == 200
    body = r.json()
    assert [a["rule"] for a in body] == ["clock", "negative"]
    assert body[1]["title_vi"] == "Đánh giá không hài lòng tại quầy quay-1"
    assert body[1]["detail"]["label"] == "Không hài lòng"
    assert body[1]["created_at"].endswith("Z") or body[1]["created_at"].endswith("+00:00")
    assert [a["rule"] for a in client.get("/api/v1/alerts?rule=clock").json()] == ["clock"]
    assert client.get("/api/v1/alerts?desk=quay-2").json() == []
    assert len(client.get("/api/v1/alerts?state=open&limit=1").json()) == 1
    assert client.get("/api/v1/alerts?state=bogus").status_code == 422
    one = client.get(f"/api/v1/alerts/{body[1]['id']}").json()
    assert [e["action"] for e in one["events"]] == ["created"]
    r = client.get("/api/v1/alerts/999")
    assert (r.status_code, r.json()["detail"]) == (404, "alert 999 does not exist")


def test_acknowledge_comment_resolve(client: httpx.Client, db: Engine, alerts: AlertEngine) -> None:
    negative(db, alerts)
    [a] = client.get("/api/v1/alerts").json()
    base = f"/api/v1/alerts/{a['id']}"
    r = client.post(f"{base}/acknowledge", json={"actor": "truong.bo.phan"})
    assert r.status_code == 200 and r.json()["state"] == "acknowledged"
    r = client.post(f"{base}/acknowledge", json={"actor": "truong.bo.phan"})
    assert (r.status_code, r.json()["detail"]) == (409, f"alert {a['id']} is already acknowledged")
    r = client.post(f"{base}/comment", json={"actor": "truong.bo.phan", "comment": "Đã gọi lại"})
    assert r.status_code == 200
    assert client.post(f"{base}/comment", json={"actor": "x", "comment": ""}).status_code == 422
    # the actor is optional (a personal token acts as its holder), but never empty
    assert client.post(f"{base}/resolve", json={"actor": "", "comment": "x"}).status_code == 422
    r = client.post(f"{base}/resolve", json={"actor": "truong.bo.phan", "comment": "Xong"})
    assert r.status_code == 200 and r.json()["state"] == "resolved"
    r = client.post(f"{base}/resolve", json={"actor": "truong.bo.phan"})
    assert (r.status_code, r.json()["detail"]) == (409, f"alert {a['id']} is already resolved")
    r = client.post("/api/v1/alerts/999/acknowledge", json={"actor": "x"})
    assert (r.status_code, r.json()["detail"]) == (404, "alert 999 does not exist")
    events = client.get(base).json()["events"]
    assert [(e["action"], e["actor"], e["comment"]) for e in events] == [
        ("created", "hub", None),
        ("acknowledged", "truong.bo.phan", None),
        ("commented", "truong.bo.phan", "Đã gọi lại"),
        ("resolved", "truong.bo.phan", "Xong"),
    ]


def test_no_alert_engine_is_a_clear_503(db: Engine) -> None:
    app = create_app(db, token=TOKEN)
    with serve(app) as url:
        r = httpx.get(f"{url}/api/v1/alerts", headers=AUTH)
    assert (r.status_code, r.json()["detail"]) == (503, "alerts are not running on this hub")


# -- the live stream, over a real socket -----------------------------------------------------
def read_events(lines: Iterator[str], n: int, deadline: float) -> tuple[list[dict], int]:
    """The next ``n`` alert events (and how many pings came along)."""
    got: list[dict] = []
    pings = 0
    event: dict[str, str] = {}
    for line in lines:
        assert time.monotonic() < deadline, f"only {len(got)} of {n} events in time"
        if line == ": ping":
            pings += 1
        elif line == "":
            if event.get("event") == "alert":
                data = json.loads(event["data"])
                assert int(event["id"]) == data["event_id"]
                got.append(data)
                if len(got) == n:
                    return got, pings
            event = {}
        elif not line.startswith(":"):
            k, _, v = line.partition(": ")
            event[k] = v
    raise AssertionError("the stream ended")


def test_stream_delivers_alerts_created_after_connecting(
    server: str, db: Engine, alerts: AlertEngine
) -> None:
    timeout = httpx.Timeout(5.0)
    with (
        httpx.Client(headers=AUTH, timeout=timeout) as c,
        c.stream("GET", f"{server}/stream") as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        assert next(lines) == "retry: 3000"  # subscribed and streaming
        t0 = time.monotonic()
        negative(db, alerts)
        [created], _ = read_events(lines, 1, time.monotonic() + 5)
        assert time.monotonic() - t0 < 1.0  # the brief: within 1 s of the rating being stored
        assert (created["event"], created["alert"]["rule"]) == ("created", "negative")
        assert created["alert"]["title_vi"] == "Đánh giá không hài lòng tại quầy quay-1"
        # a change made through the API arrives too, after a ping or two
        time.sleep(0.5)
        httpx.post(
            f"{server}/{created['alert']['id']}/acknowledge",
            json={"actor": "truong.bo.phan"},
            headers=AUTH,
        ).raise_for_status()
        [acked], pings = read_events(lines, 1, time.monotonic() + 5)
        assert (acked["event"], acked["alert"]["state"]) == ("acknowledged", "acknowledged")
        assert pings >= 1
    time.sleep(0.1)
    assert alerts._subs == []  # the disconnected client was unsubscribed


def test_stream_resumes_after_last_event_id(server: str, db: Engine, alerts: AlertEngine) -> None:
    negative(db, alerts, at=utcnow() - timedelta(minutes=1))
    negative(db, alerts)
    [first, second] = alerts.events_since(0)
    headers = {**AUTH, "Last-Event-ID": str(first["event_id"])}
    with (
        httpx.Client(headers=headers, timeout=5.0) as c,
        c.stream("GET", f"{server}/stream") as r,
    ):
        lines = r.iter_lines()
        [replayed], _ = read_events(lines, 1, time.monotonic() + 5)
        assert replayed["event_id"] == second["event_id"]
        negative(db, alerts)
        [live], _ = read_events(lines, 1, time.monotonic() + 5)
        assert live["event_id"] > second["event_id"]


def test_stream_ends_when_the_engine_closes(server: str, alerts: AlertEngine) -> None:
    with (
        httpx.Client(headers=AUTH, timeout=5.0) as c,
        c.stream("GET", f"{server}/stream") as r,
    ):
        lines = r.iter_lines()
        assert next(lines) == "retry: 3000"
        alerts.close()  # the hub shutting down: the stream ends instead of holding uvicorn
        rest = list(lines)
        assert all(line in ("", ": ping") for line in rest)
