"""Alert rules, records and delivery on a real SQLite file, with an injected clock."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from hub import alerts as alerts_mod  # noqa: F401  (registers the alert tables before create_all)
from hub.alerts import (
    Alert,
    AlertEngine,
    AlertEvent,
    AlertNotFound,
    AlertRules,
    AlertStateError,
    is_negative,
)
from hub.broker import find_free_port
from hub.db import make_engine
from hub.models import Rating, Terminal

pytestmark = pytest.mark.unit
OFFICE = "office-test"
T1, T2 = "t-000000000001", "t-000000000002"
# Wednesday 19/11/2025 09:00 in Hà Nội (UTC+7)
WED_9 = datetime(2025, 11, 19, 2, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'hub.sqlite3'}")
    with Session(engine) as s:
        for tid, desk in ((T1, "quay-1"), (T2, "quay-2")):
            s.add(Terminal(id=tid, office=OFFICE, desk=desk, hub_key="00" * 32, mqtt_password="x"))
        s.commit()
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock(WED_9)


@pytest.fixture
def make(db: Engine, clock: Clock) -> Iterator[Callable[..., AlertEngine]]:
    made: list[AlertEngine] = []

    def make(**kw: Any) -> AlertEngine:
        kw.setdefault("clock", clock)
        eng = AlertEngine(db, OFFICE, **kw)
        made.append(eng)
        return eng

    yield make
    for eng in made:
        eng.close()


@pytest.fixture
def alerts(make: Callable[..., AlertEngine]) -> AlertEngine:
    return make()


_seq = iter(range(1, 1_000_000))


def rate(
    db: Engine,
    level: int,
    *,
    at: datetime,
    tid: str = T1,
    scale: int = 3,
    test: bool = False,
    repeat: bool = False,
    official: str | None = None,
) -> Rating:
    """Store a rating as ingest would (the alert rules read the table)."""
    desk = {T1: "quay-1", T2: "quay-2"}.get(tid)
    r = Rating(
        terminal_id=tid,
        epoch=1,
        seq=next(_seq),
        office=OFFICE,
        desk=desk,
        level=level,
        scale=scale,
        press_time=at,
        received_at=at,
        test=test,
        repeat=repeat,
        official_id=official,
        raw=bytes(48),
    )
    with Session(db) as s:
        s.add(r)
        s.commit()
        s.refresh(r)
    return r


def all_alerts(db: Engine, rule: str | None = None) -> list[Alert]:
    with Session(db) as s:
        q = select(Alert).order_by(col(Alert.id))
        if rule:
            q = q.where(Alert.rule == rule)
        return list(s.exec(q).all())


def events(db: Engine, alert_id: int) -> list[AlertEvent]:
    with Session(db) as s:
        q = select(AlertEvent).where(AlertEvent.alert_id == alert_id).order_by(col(AlertEvent.id))
        return list(s.exec(q).all())


def heard(db: Engine, tid: str, at: datetime, state: str = "online") -> None:
    """What ingest does with a status: last_seen and last_status on the terminal."""
    with Session(db) as s:
        term = s.get(Terminal, tid)
        assert term is not None
        term.last_seen, term.last_status = at, json.dumps({"v": 1, "state": state})
        s.add(term)
        s.commit()


# -- levels and office hours ---------------------------------------------------------------------
def test_negative_levels_follow_the_scale() -> None:
    assert [lv for lv in range(1, 4) if is_negative(lv, 3)] == [3]
    assert [lv for lv in range(1, 5) if is_negative(lv, 4)] == [3, 4]
    assert [lv for lv in range(1, 6) if is_negative(lv, 5)] == [4, 5]
    assert not is_negative(3, 7)  # unknown scale: never a false alarm


def test_office_hours_weekdays_and_saturday_morning() -> None:
    rules = AlertRules(closed_dates=[date(2025, 11, 20)])
    local = timedelta(hours=7)  # Asia/Ho_Chi_Minh, no daylight saving

    def at(y: int, m: int, d: int, hh: int, mm: int = 0) -> datetime:
        return datetime(y, m, d, hh, mm, tzinfo=UTC) - local

    assert rules.is_open(at(2025, 11, 19, 7, 0))  # Wednesday opening
    assert rules.is_open(at(2025, 11, 19, 16, 59))
    assert not rules.is_open(at(2025, 11, 19, 17, 0))
    assert not rules.is_open(at(2025, 11, 19, 6, 59))
    assert rules.is_open(at(2025, 11, 22, 11, 0))  # Saturday morning
    assert not rules.is_open(at(2025, 11, 22, 14, 0))  # Saturday afternoon
    assert not rules.is_open(at(2025, 11, 23, 9, 0))  # Sunday
    assert not rules.is_open(at(2025, 11, 20, 9, 0))  # a closed date (holiday)
    assert rules.opened_at(at(2025, 11, 19, 9, 30)) == at(2025, 11, 19, 7, 0)


# -- single negative -----------------------------------------------------------------------------
def test_single_negative_fires_once_with_a_vietnamese_title(
    db: Engine, alerts: AlertEngine
) -> None:
    good = rate(db, 1, at=WED_9)
    bad = rate(db, 3, at=WED_9, official="nguyen.van.a")
    alerts.on_ratings([good, bad])
    alerts.on_ratings([bad])  # the same rating again (redelivery) is not a second alert
    [a] = all_alerts(db)
    assert (a.rule, a.state, a.desk, a.terminal_id) == ("negative", "open", "quay-1", T1)
    assert a.title_vi == "Đánh giá không hài lòng tại quầy quay-1"
    assert a.title_en == "Dissatisfied rating at desk quay-1"
    assert a.official_id == "nguyen.van.a"
    assert json.loads(a.detail)["label"] == "Không hài lòng"
    assert [e.action for e in events(db, a.id or 0)] == ["created"]
    assert a.created_at.tzinfo is not None


def test_negative_with_its_reason(db: Engine, alerts: AlertEngine) -> None:
    r = rate(db, 3, at=WED_9)
    r.reason = 1  # thái độ (attitude), chosen after the frown
    alerts.on_ratings([r])
    [a] = all_alerts(db)
    assert a.title_vi == "Đánh giá không hài lòng tại quầy quay-1 (thái độ)"
    assert a.title_en == "Dissatisfied rating at desk quay-1 (attitude)"


def test_negative_on_4_and_5_level_scales(db: Engine, alerts: AlertEngine) -> None:
    alerts.on_ratings([rate(db, 2, scale=4, at=WED_9), rate(db, 3, scale=5, at=WED_9)])
    assert all_alerts(db) == []
    alerts.on_ratings([rate(db, 3, scale=4, at=WED_9), rate(db, 5, scale=5, at=WED_9)])
    labels = [json.loads(a.detail)["label"] for a in all_alerts(db, "negative")]
    assert labels == ["Không hài lòng", "Rất không hài lòng"]


def test_test_presses_and_repeats_are_ignored(db: Engine, alerts: AlertEngine) -> None:
    rows = [rate(db, 3, at=WED_9, test=True) for _ in range(3)]
    rows += [rate(db, 3, at=WED_9, repeat=True) for _ in range(3)]
    alerts.on_ratings(rows)
    assert all_alerts(db) == []  # neither single-negative nor window (6 negative presses)


# -- window rule ---------------------------------------------------------------------------------
def test_window_fires_at_2_of_4_per_desk(db: Engine, alerts: AlertEngine) -> None:
    for i, level in enumerate([3, 1, 3]):
        alerts.on_ratings([rate(db, level, at=WED_9 + timedelta(minutes=i))])
    assert all_alerts(db, "window") == []  # only 3 ratings
    alerts.on_ratings([rate(db, 1, at=WED_9 + timedelta(minutes=3))])
    [w] = all_alerts(db, "window")
    assert w.desk == "quay-1" and w.severity == "critical"
    assert w.title_vi == "Tỷ lệ không hài lòng cao tại quầy quay-1: 2/4 trong 15 phút"
    assert json.loads(w.detail)["scope"] == "desk"
    assert all_alerts(db, "window") == [w]  # one desk: no separate office-wide alert


@pytest.mark.parametrize("levels", [(3, 1, 1, 2), (3, 3, 3)], ids=["1-of-4", "3-ratings"])
def test_window_does_not_fire_at_1_of_4_or_3_ratings(
    db: Engine, alerts: AlertEngine, levels: tuple[int, ...]
) -> None:
    alerts.on_ratings([rate(db, lv, at=WED_9) for lv in levels])
    assert all_alerts(db, "window") == []
    assert len(all_alerts(db, "negative")) == levels.count(3)


def test_window_only_counts_the_last_15_minutes(
    db: Engine, alerts: AlertEngine, clock: Clock
) -> None:
    old = [rate(db, 3, at=WED_9 - timedelta(minutes=20)) for _ in range(3)]
    clock.now = WED_9
    alerts.on_ratings(old + [rate(db, 1, at=WED_9)])
    assert all_alerts(db, "window") == []


def test_window_fires_per_office(db: Engine, alerts: AlertEngine) -> None:
    rows = [rate(db, lv, at=WED_9, tid=tid) for tid in (T1, T2) for lv in (3, 1)]
    alerts.on_ratings(rows)
    [w] = all_alerts(db, "window")
    assert w.desk is None
    assert w.title_vi == "Tỷ lệ không hài lòng cao toàn đơn vị: 2/4 trong 15 phút"


def test_window_dedup_while_open_and_again_after_resolve(
    db: Engine, alerts: AlertEngine, clock: Clock
) -> None:
    alerts.on_ratings([rate(db, lv, at=WED_9) for lv in (3, 3, 1, 1)])
    [w] = all_alerts(db, "window")
    alerts.on_ratings([rate(db, 3, at=WED_9)])
    alerts.acknowledge(w.id or 0, "truong.bo.phan")
    alerts.on_ratings([rate(db, 3, at=WED_9)])  # acknowledged is still open
    [w] = all_alerts(db, "window")
    assert w.count == 3
    alerts.resolve(w.id or 0, "truong.bo.phan", "đã xử lý")
    clock.advance(minutes=1)
    alerts.on_ratings([rate(db, 3, at=clock.now)])
    first, second = all_alerts(db, "window")
    assert (first.state, second.state) == ("resolved", "open")
    assert first.dedup_key == second.dedup_key and first.open_key is None


# -- terminal state ------------------------------------------------------------------------------
def test_offline_by_silence_only_during_office_hours(
    db: Engine, make: Callable[..., AlertEngine], clock: Clock
) -> None:
    alerts = make()
    heard(db, T1, WED_9)
    heard(db, T2, WED_9)
    alerts.tick(WED_9 + timedelta(minutes=2))
    assert all_alerts(db) == []
    heard(db, T2, WED_9 + timedelta(minutes=3))
    alerts.tick(WED_9 + timedelta(minutes=3, seconds=1))  # T1 silent for 3 heartbeats
    [a] = all_alerts(db)
    assert (a.rule, a.terminal_id, a.title_vi) == ("offline", T1, "Quầy quay-1 mất kết nối")
    alerts.tick(WED_9 + timedelta(minutes=4))
    assert len(all_alerts(db)) == 1
    # back online: resolved by the hub itself
    alerts.on_status(T1, {"v": 1, "state": "online", "outbox": 0, "clock": True})
    [a] = all_alerts(db)
    assert a.state == "resolved"
    assert [(e.action, e.actor) for e in events(db, a.id or 0)][-1] == ("resolved", "hub")


def test_a_sleeping_battery_terminal_is_not_offline_until_its_heartbeats_stop(
    db: Engine, make: Callable[..., AlertEngine]
) -> None:
    alerts = make()
    heard(db, T1, WED_9)
    with Session(db) as s:  # its last heartbeat: battery mode, one heartbeat an hour
        term = s.get(Terminal, T1)
        assert term is not None
        term.last_heartbeat = json.dumps(
            {"v": 1, "state": "online", "power_mode": "battery", "beat_s": 3600}
        )
        s.add(term)
        s.commit()
    alerts.tick(WED_9 + timedelta(hours=2))  # asleep between presses: normal
    assert all_alerts(db) == []
    alerts.tick(WED_9 + timedelta(hours=3, seconds=1))  # three hourly heartbeats missed
    [a] = all_alerts(db)
    assert (a.rule, a.terminal_id) == ("offline", T1)
    assert json.loads(a.detail)["why"] == "no heartbeat (battery terminal)"


@pytest.mark.parametrize(
    "local",
    [
        datetime(2025, 11, 23, 9, 0),  # Sunday
        datetime(2025, 11, 22, 14, 0),  # Saturday afternoon
        datetime(2025, 11, 19, 20, 0),  # Wednesday evening
        datetime(2025, 11, 19, 7, 10),  # just opened: terminals are being switched on
    ],
)
def test_no_offline_alert_when_the_office_is_closed(
    db: Engine, make: Callable[..., AlertEngine], clock: Clock, local: datetime
) -> None:
    now = local.replace(tzinfo=UTC) - timedelta(hours=7)
    clock.now = now - timedelta(days=1)
    alerts = make()
    heard(db, T1, now - timedelta(hours=5))
    alerts.tick(now)
    assert all_alerts(db) == []


def test_offline_on_saturday_morning(
    db: Engine, make: Callable[..., AlertEngine], clock: Clock
) -> None:
    now = datetime(2025, 11, 22, 3, 0, tzinfo=UTC)  # 10:00 in Hà Nội
    clock.now = now - timedelta(hours=1)
    alerts = make()
    heard(db, T1, now - timedelta(minutes=30))
    alerts.tick(now)
    assert [a.terminal_id for a in all_alerts(db, "offline")] == [T1]


def test_silence_counts_from_hub_start(db: Engine, make: Callable[..., AlertEngine]) -> None:
    heard(db, T1, WED_9 - timedelta(hours=1))  # the hub was down, not (only) the terminal
    alerts = make()
    alerts.tick(WED_9 + timedelta(minutes=2))
    assert all_alerts(db) == []
    alerts.tick(WED_9 + timedelta(minutes=3, seconds=1))
    assert len(all_alerts(db, "offline")) == 1


def test_offline_status_after_a_grace(db: Engine, make: Callable[..., AlertEngine]) -> None:
    alerts = make()
    heard(db, T1, WED_9, state="offline")  # the last will, as ingest stores it
    alerts.on_status(T1, {"v": 1, "state": "offline"})
    alerts.tick(WED_9 + timedelta(seconds=30))  # a Wi-Fi blip is not an alert
    assert all_alerts(db) == []
    alerts.tick(WED_9 + timedelta(seconds=61))
    [a] = all_alerts(db)
    assert json.loads(a.detail)["why"] == "offline status"


def test_offline_status_at_once_without_grace(db: Engine, make: Callable[..., AlertEngine]) -> None:
    alerts = make(rules=AlertRules(offline_grace_s=0))
    alerts.on_status(T1, {"v": 1, "state": "offline"})
    assert [a.rule for a in all_alerts(db)] == ["offline"]


def test_offline_status_outside_hours_is_no_alert(
    db: Engine, make: Callable[..., AlertEngine], clock: Clock
) -> None:
    clock.now = WED_9 + timedelta(hours=12)  # 21:00
    alerts = make(rules=AlertRules(offline_grace_s=0))
    alerts.on_status(T1, {"v": 1, "state": "offline"})
    assert all_alerts(db) == []


def online(**kw: Any) -> dict[str, Any]:
    return {"v": 1, "state": "online", **kw}


def test_backlog_above_threshold_and_growing(db: Engine, alerts: AlertEngine) -> None:
    alerts.on_status(T1, online(outbox=120, clock=True))  # back from an outage, draining
    alerts.on_status(T1, online(outbox=0, clock=True))
    alerts.on_status(T1, online(outbox=60, clock=True))
    assert all_alerts(db) == []
    alerts.on_status(T1, online(outbox=61, clock=True))  # above the maximum twice in a row
    [a] = all_alerts(db)
    assert (a.rule, a.title_vi) == ("backlog", "Quầy quay-1 tồn 61 đánh giá chưa gửi được")
    for depth in (1, 2, 5, 5, 9):  # not growing on every heartbeat: no alert
        alerts.on_status(T2, online(outbox=depth))
    assert len(all_alerts(db)) == 1
    for depth in (10, 11, 12):  # 9 → 12: growing over 3 heartbeats in a row
        alerts.on_status(T2, online(outbox=depth))
    assert [a.terminal_id for a in all_alerts(db, "backlog")] == [T1, T2]
    assert json.loads(all_alerts(db)[1].detail)["growing"] is True
    alerts.on_status(T1, online(outbox=0))
    assert [a.state for a in all_alerts(db, "backlog")] == ["resolved", "open"]


def test_clock_unsynced_or_far_off(db: Engine, alerts: AlertEngine, clock: Clock) -> None:
    now = int(clock.now.timestamp())
    alerts.on_status(T1, online(clock=False, time=0))  # just booted: the hub sends the time
    alerts.on_status(T1, online(clock=True, time=now))
    alerts.on_status(T1, online(clock=False, time=0))
    assert all_alerts(db) == []
    alerts.on_status(T1, online(clock=False, time=0))  # still unset a heartbeat later
    [a] = all_alerts(db)
    assert (a.rule, a.title_vi) == ("clock", "Đồng hồ quầy quay-1 chưa đúng giờ")
    for _ in range(3):
        alerts.on_status(T2, online(clock=True, time=now - 3600))
    b = all_alerts(db, "clock")[1]
    assert (b.terminal_id, b.count, json.loads(b.detail)["skew_s"]) == (T2, 2, 3600)
    alerts.on_status(T1, online(clock=True, time=now + 5))
    assert [a.state for a in all_alerts(db, "clock")] == ["resolved", "open"]


def test_forgery_per_terminal_while_open(db: Engine, alerts: AlertEngine) -> None:
    bad_tag = "hub HMAC tag does not verify (forged or corrupted)"
    for _ in range(3):
        alerts.on_quarantine(f"sipas/v1/{OFFICE}/{T1}/rating", bad_tag)
    alerts.on_quarantine(f"sipas/v1/{OFFICE}/t-0000000000ff/rating", "terminal not registered")
    alerts.on_quarantine("garbage", "topic is not sipas/v1/...")
    a, b, c = all_alerts(db, "forgery")
    assert (a.terminal_id, a.count, a.severity) == (T1, 3, "critical")
    assert a.title_vi == "Chữ ký không hợp lệ từ quầy quay-1"
    assert json.loads(b.detail)["kind"] == "unauthorised"
    assert (c.terminal_id, json.loads(c.detail)["kind"]) == (None, "malformed")


def test_rules_can_be_switched_off(db: Engine, make: Callable[..., AlertEngine]) -> None:
    alerts = make(rules=AlertRules(enabled={"window", "offline"}))
    alerts.on_ratings([rate(db, 3, at=WED_9)])
    alerts.on_quarantine(f"sipas/v1/{OFFICE}/{T1}/rating", "hub HMAC tag does not verify")
    for _ in range(3):
        alerts.on_status(T1, online(outbox=99, clock=False))
    assert all_alerts(db) == []


# -- the supervisor's side -----------------------------------------------------------------------
def test_acknowledge_comment_resolve(db: Engine, alerts: AlertEngine) -> None:
    alerts.on_ratings([rate(db, 3, at=WED_9)])
    [a] = alerts.list()
    aid = a.id
    assert alerts.acknowledge(aid, "truong.bo.phan").state == "acknowledged"
    with pytest.raises(AlertStateError, match=f"alert {aid} is already acknowledged"):
        alerts.acknowledge(aid, "truong.bo.phan")
    alerts.comment(aid, "truong.bo.phan", "Đã gặp công dân")
    with pytest.raises(AlertStateError, match="must not be empty"):
        alerts.comment(aid, "truong.bo.phan", "  ")
    out = alerts.resolve(aid, "truong.bo.phan", "Đã xin lỗi")
    assert out.state == "resolved"
    with pytest.raises(AlertStateError, match=f"alert {aid} is already resolved"):
        alerts.resolve(aid, "truong.bo.phan")
    with pytest.raises(AlertStateError, match=f"alert {aid} is already resolved"):
        alerts.acknowledge(aid, "truong.bo.phan")
    alerts.comment(aid, "pho.phong", "Đã xem")  # a resolved alert still takes comments
    with pytest.raises(AlertNotFound, match="alert 999 does not exist"):
        alerts.resolve(999, "x")
    got = alerts.get(aid)
    assert [(e.action, e.actor, e.comment) for e in got.events or []] == [
        ("created", "hub", None),
        ("acknowledged", "truong.bo.phan", None),
        ("commented", "truong.bo.phan", "Đã gặp công dân"),
        ("resolved", "truong.bo.phan", "Đã xin lỗi"),
        ("commented", "pho.phong", "Đã xem"),
    ]
    assert [x.id for x in alerts.list(state="resolved")] == [aid]
    assert alerts.list(state="unresolved") == []


def test_list_filters_newest_first(db: Engine, alerts: AlertEngine) -> None:
    alerts.on_ratings([rate(db, 3, at=WED_9), rate(db, 3, at=WED_9, tid=T2)])
    alerts.on_status(T1, online(clock=False))
    alerts.on_status(T1, online(clock=False))
    assert [a.rule for a in alerts.list()] == ["clock", "negative", "negative"]
    assert [a.desk for a in alerts.list(rule="negative", desk="quay-2")] == ["quay-2"]
    assert len(alerts.list(limit=1)) == 1


# -- delivery ------------------------------------------------------------------------------------
def test_publish_and_subscribers_get_each_change(
    db: Engine, make: Callable[..., AlertEngine]
) -> None:
    published: list[tuple[str, bytes]] = []
    alerts = make(publish=lambda t, p: published.append((t, p)))
    q = alerts.subscribe()
    alerts.on_ratings([rate(db, 3, at=WED_9)])
    [(topic, payload)] = published
    assert topic == f"sipas/v1/{OFFICE}/hub/alerts"
    msg = json.loads(payload)
    assert (msg["v"], msg["event"], msg["alert"]["rule"]) == (1, "created", "negative")
    assert msg["alert"]["title_vi"] == "Đánh giá không hài lòng tại quầy quay-1"
    assert q.get_nowait() == msg
    alerts.acknowledge(msg["alert"]["id"], "truong.bo.phan")
    got = q.get_nowait()
    assert got is not None
    assert (got["event"], got["actor"], got["alert"]["state"]) == (
        "acknowledged",
        "truong.bo.phan",
        "acknowledged",
    )
    assert got["event_id"] > msg["event_id"]
    alerts.unsubscribe(q)
    alerts.on_ratings([rate(db, 3, at=WED_9)])
    assert q.empty() and len(published) == 3
    assert [p["event"] for p in alerts.events_since(0)] == ["created", "acknowledged", "created"]


class _Hook(BaseHTTPRequestHandler):
    bodies: queue.Queue[bytes]
    fail_first: list[int]

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.fail_first:
            self.fail_first.pop()
            self.send_response(503)
        else:
            self.bodies.put(body)
            self.send_response(204)
        self.end_headers()

    def log_message(self, *_a: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, queue.Queue[bytes], list[int]]]:
    bodies: queue.Queue[bytes] = queue.Queue()
    fail_first = [1]  # the first POST gets a 503: the engine must retry
    handler = type("Hook", (_Hook,), {"bodies": bodies, "fail_first": fail_first})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/alerts", bodies, fail_first
    server.shutdown()
    server.server_close()
    thread.join()


def test_webhook_receives_alerts_with_retry(
    db: Engine, make: Callable[..., AlertEngine], webhook: tuple[str, queue.Queue[bytes], list[int]]
) -> None:
    url, bodies, fail_first = webhook
    alerts = make(webhook_url=url, webhook_backoff=0.01)
    alerts.on_ratings([rate(db, 3, at=WED_9)])
    msg = json.loads(bodies.get(timeout=5))
    assert (msg["event"], msg["alert"]["rule"]) == ("created", "negative")
    assert fail_first == []  # it was refused once, then sent again
    deadline = time.monotonic() + 5
    while alerts.stats().get("webhook_sent") != 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert alerts.stats()["webhook_sent"] == 1


def test_a_dead_webhook_does_not_hold_up_ingest(
    db: Engine, make: Callable[..., AlertEngine]
) -> None:
    dead = f"http://127.0.0.1:{find_free_port()}/alerts"  # nothing listens there
    alerts = make(webhook_url=dead, webhook_attempts=2, webhook_backoff=0.01)
    alerts.on_ratings([rate(db, 3, at=WED_9)])  # warm up (statement compilation)
    row = rate(db, 3, at=WED_9)
    t0 = time.perf_counter()
    alerts.on_ratings([row])
    elapsed = time.perf_counter() - t0
    assert elapsed < 0.05, f"on_ratings took {elapsed * 1000:.1f} ms"
    assert len(all_alerts(db)) == 2
    deadline = time.monotonic() + 10
    while alerts.stats().get("webhook_failed", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert alerts.stats()["webhook_failed"] == 2  # counted, never raised


def test_bad_input_never_raises(db: Engine, make: Callable[..., AlertEngine]) -> None:
    def boom(_t: str, _p: bytes) -> None:
        raise OSError("broker gone")

    alerts = make(publish=boom)
    alerts.on_ratings([object(), rate(db, 3, at=WED_9)])  # the good one still alerts
    alerts.on_ratings(None)  # type: ignore[arg-type]
    alerts.on_status("t-unknown", {"state": "online", "outbox": "many", "clock": "maybe"})
    alerts.on_status(T1, {"v": 1, "state": "online", "outbox": True, "time": "noon"})
    alerts.on_quarantine("", "")
    assert [a.rule for a in all_alerts(db)] == ["negative", "forgery"]
    stats = alerts.stats()
    assert stats["errors"] == 2 and stats["publish_failed"] == 2
