"""Alerts (issue 4): rules over what ingest stored and what terminals report, kept as records that a
supervisor acknowledges, comments and resolves, and delivered live.

``AlertEngine`` is called by the ingest thread right after a commit (``on_ratings``,
``on_quarantine``, ``on_status``) and by a timer (``tick``); the API calls ``acknowledge`` /
``resolve`` / ``comment`` / ``list`` / ``get``. The ingest-facing methods never raise: an alert
that cannot be made is logged and counted, and ingest goes on.

Every new alert and every change is an :class:`AlertEvent` row (append-only history) and is
delivered, in this order and without blocking, to in-process subscribers (the SSE stream), to the
``publish`` callback (MQTT ``sipas/v1/{office}/hub/alerts``) and to an optional webhook (a
background thread with retries).

One condition, one alert: each alert has a dedup key (a desk's window rule, a terminal being
offline, one negative rating, ...) that is held in the unique ``open_key`` column while the alert is
not resolved; the same condition seen again only bumps ``count`` and ``last_at``. After a resolve the
condition may fire again.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import logging
import queue
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import httpx
from pydantic import BaseModel, field_validator
from pydantic import Field as PydField
from sqlalchemy import DateTime, TypeDecorator, not_
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col, select

from hub.models import Rating, Terminal, utcnow

log = logging.getLogger(__name__)

RuleCode = Literal["negative", "window", "offline", "backlog", "forgery", "clock", "sync"]
RULES: tuple[RuleCode, ...] = (
    "negative",
    "window",
    "offline",
    "backlog",
    "forgery",
    "clock",
    "sync",  # raised and resolved by the hub's sync to the district (hub/sync.py)
)
HUB_ACTOR = "hub"  # the actor of alerts the hub creates or resolves by itself

# Level 1 is the most satisfied on every scale (docs/protocol.md); these levels are "không hài lòng".
NEGATIVE_LEVELS: dict[int, frozenset[int]] = {
    3: frozenset({3}),  # Rất hài lòng / Hài lòng / Không hài lòng
    4: frozenset({3, 4}),  # no neutral button
    5: frozenset({4, 5}),  # the SIPAS questionnaire: level 3 is "Bình thường"
}
LEVEL_LABELS: dict[int, dict[int, str]] = {
    3: {1: "Rất hài lòng", 2: "Hài lòng", 3: "Không hài lòng"},
    4: {1: "Rất hài lòng", 2: "Hài lòng", 3: "Không hài lòng", 4: "Rất không hài lòng"},
    5: {
        1: "Rất hài lòng",
        2: "Hài lòng",
        3: "Bình thường",
        4: "Không hài lòng",
        5: "Rất không hài lòng",
    },
}
REASON_LABELS = {1: "thái độ", 2: "thời gian", 3: "hồ sơ, thủ tục", 4: "khác"}
REASON_LABELS_EN = {1: "attitude", 2: "time", 3: "file, procedure", 4: "other"}


def is_negative(level: int, scale: int) -> bool:
    """Whether ``level`` on a ``scale``-level terminal is a dissatisfied rating."""
    return level in NEGATIVE_LEVELS.get(scale, frozenset())


# -- rules ---------------------------------------------------------------------------------------
class OpenPeriod(BaseModel):
    """Opening hours on some weekdays (0 = Monday … 6 = Sunday), in the office's time zone."""

    days: list[int] = PydField(min_length=1)
    start: time
    end: time

    @field_validator("days")
    @classmethod
    def _weekdays(cls, v: list[int]) -> list[int]:
        if any(not 0 <= d <= 6 for d in v):
            raise ValueError("weekdays are 0 (Monday) to 6 (Sunday)")
        return v


def _default_hours() -> list[OpenPeriod]:
    # Mon–Fri 07:00–17:00, and Saturday morning: many one-stop desks ("Bộ phận Một cửa") receive
    # citizens on Saturday mornings so that people who work during the week can come. Terminals stay
    # powered over the lunch break, so it is not a gap.
    return [
        OpenPeriod(days=[0, 1, 2, 3, 4], start=time(7, 0), end=time(17, 0)),
        OpenPeriod(days=[5], start=time(7, 0), end=time(11, 30)),
    ]


class AlertRules(BaseModel):
    """What raises an alert. Defaults follow the brief (HappyOrNot's window rule) and the firmware's
    60-second heartbeat."""

    enabled: set[RuleCode] = PydField(default_factory=lambda: set(RULES))
    # window rule: at least `window_negative_share` negative among at least `window_min_ratings`
    # ratings pressed in the last `window_minutes` (test presses and repeats left out)
    window_minutes: float = PydField(15, gt=0)
    window_min_ratings: int = PydField(4, ge=1)
    window_negative_share: float = PydField(0.5, gt=0, le=1)
    window_per_desk: bool = True
    window_per_office: bool = True
    # office hours: the offline rule only applies while the office is open
    timezone: str = "Asia/Ho_Chi_Minh"
    office_hours: list[OpenPeriod] = PydField(default_factory=_default_hours)
    closed_dates: list[date] = PydField(default_factory=list, description="holidays, Tết, ...")
    opening_grace_s: float = PydField(
        900, ge=0, description="terminals are switched on as staff arrive: no offline alert yet"
    )
    # offline: silent for `offline_after_heartbeats` heartbeat periods, or an "offline" status
    # (the terminal's last will) that lasted `offline_grace_s` (a Wi-Fi blip is not an alert)
    heartbeat_s: float = PydField(60, gt=0)
    offline_after_heartbeats: float = PydField(3, gt=0)
    offline_grace_s: float = PydField(60, ge=0)
    # backlog: outbox depth at or above `backlog_max`, or growing over that many heartbeats in a row
    backlog_max: int = PydField(50, ge=1)
    backlog_growing_heartbeats: int = PydField(3, ge=1)
    # clock: "clock": false in the heartbeat, or the terminal's time this far from the hub's
    clock_max_skew_s: float = PydField(900, gt=0)
    # the clock and "backlog above the maximum" conditions must show in this many heartbeats in a
    # row: the first heartbeat after a boot or a reconnect often has no time yet (the hub sends it)
    # or an outbox that drains within seconds
    confirm_heartbeats: int = PydField(2, ge=1)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        ZoneInfo(v)  # raises if unknown
        return v

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def offline_after(self) -> timedelta:
        return timedelta(seconds=self.heartbeat_s * self.offline_after_heartbeats)

    def opened_at(self, t: datetime) -> datetime | None:
        """The start (UTC) of the opening period ``t`` falls in, or None if the office is closed."""
        local = t.astimezone(self.tz)
        if local.date() in self.closed_dates:
            return None
        for p in self.office_hours:
            if local.weekday() in p.days and p.start <= local.time() < p.end:
                return datetime.combine(local.date(), p.start, self.tz).astimezone(UTC)
        return None

    def is_open(self, t: datetime) -> bool:
        return self.opened_at(t) is not None


# -- tables --------------------------------------------------------------------------------------
class UTCDateTime(TypeDecorator[datetime]):
    """Stored in UTC, read back timezone-aware (SQLite keeps no zone and would give naive times)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else _aware(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else _aware(value)


def _aware(t: datetime) -> datetime:
    return (t.replace(tzinfo=UTC) if t.tzinfo is None else t).astimezone(UTC)


class Alert(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    office: str = Field(index=True)
    desk: str | None = Field(default=None, index=True)
    terminal_id: str | None = None
    official_id: str | None = None
    rule: str = Field(
        index=True, description="negative | window | offline | backlog | forgery | clock | sync"
    )
    severity: str = Field(description="info | warning | critical")
    title_vi: str
    title_en: str
    detail: str = Field(default="{}", description="JSON")
    state: str = Field(default="open", index=True, description="open | acknowledged | resolved")
    dedup_key: str = Field(index=True, description="the condition this alert is about")
    open_key: str | None = Field(
        default=None, unique=True, description="= dedup_key until resolved: one open alert each"
    )
    count: int = Field(default=1, description="times the condition was seen while not resolved")
    last_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class AlertEvent(SQLModel, table=True):
    """The history of an alert, append-only: created, acknowledged, commented, resolved."""

    id: int | None = Field(default=None, primary_key=True)
    alert_id: int = Field(foreign_key="alert.id", index=True)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    actor: str
    action: str = Field(description="created | acknowledged | resolved | commented")
    comment: str | None = None


class AlertEventOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    comment: str | None = None


class AlertOut(BaseModel):
    id: int
    created_at: datetime
    updated_at: datetime
    office: str
    desk: str | None
    terminal_id: str | None
    official_id: str | None
    rule: str
    severity: str
    title_vi: str
    title_en: str
    detail: dict[str, Any]
    state: str
    count: int
    last_at: datetime
    events: list[AlertEventOut] | None = None

    @classmethod
    def of(cls, a: Alert, events: Iterable[AlertEvent] | None = None) -> AlertOut:
        assert a.id is not None
        try:
            detail = json.loads(a.detail)
        except ValueError:
            detail = {"raw": a.detail}
        return cls(
            id=a.id,
            created_at=a.created_at,
            updated_at=a.updated_at,
            office=a.office,
            desk=a.desk,
            terminal_id=a.terminal_id,
            official_id=a.official_id,
            rule=a.rule,
            severity=a.severity,
            title_vi=a.title_vi,
            title_en=a.title_en,
            detail=detail,
            state=a.state,
            count=a.count,
            last_at=a.last_at,
            events=None
            if events is None
            else [AlertEventOut.model_validate(e, from_attributes=True) for e in events],
        )


class AlertNotFound(LookupError):
    pass


class AlertStateError(ValueError):
    """The change does not apply to the alert's state (e.g. resolving a resolved alert)."""


# -- the engine ----------------------------------------------------------------------------------
@dataclass
class _Candidate:
    rule: RuleCode
    key: str
    severity: str
    title_vi: str
    title_en: str
    desk: str | None = None
    terminal_id: str | None = None
    official_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


Publish = Callable[[str, bytes], object]
Subscriber = tuple["queue.Queue[dict[str, Any] | None]", Callable[[], object] | None]


class AlertEngine:
    """Rules, records and delivery of alerts for one office (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        office: str,
        rules: AlertRules | None = None,
        publish: Publish | None = None,
        webhook_url: str | None = None,
        clock: Callable[[], datetime] | None = None,
        *,
        webhook_timeout: float = 3.0,
        webhook_attempts: int = 3,
        webhook_backoff: float = 1.0,
        webhook_transport: httpx.BaseTransport | None = None,
    ):
        self.engine = engine
        self.office = office
        self.rules = rules or AlertRules()
        self.publish = publish
        self.webhook_url = webhook_url
        self.topic = f"sipas/v1/{office}/hub/alerts"
        self._clock = clock or utcnow
        self.counts: Counter[str] = Counter()
        self._lock = threading.RLock()  # one writer of alerts at a time: ingest, timer, API
        self._subs: list[Subscriber] = []
        self._subs_lock = threading.Lock()
        self._outbox: dict[str, deque[int]] = {}  # outbox depths of recent heartbeats per terminal
        self._clock_bad: dict[str, int] = {}  # heartbeats in a row with the clock unset or off
        self._started = self._now()
        self._stop = threading.Event()
        self._hook_q: queue.Queue[bytes] = queue.Queue(maxsize=1000)
        self._hook_thread: threading.Thread | None = None
        if webhook_url:
            self._hook_attempts = max(1, webhook_attempts)
            self._hook_backoff = webhook_backoff
            self._http = httpx.Client(timeout=webhook_timeout, transport=webhook_transport)
            self._hook_thread = threading.Thread(
                target=self._webhook_loop, name="hub-alert-webhook", daemon=True
            )
            self._hook_thread.start()

    def _now(self) -> datetime:
        return _aware(self._clock())

    def _key(self, *parts: object) -> str:
        return ":".join([self.office, *map(str, parts)])

    def _on(self, rule: RuleCode) -> bool:
        return rule in self.rules.enabled

    # -- inputs from ingest (never raise) -------------------------------------------------------
    def on_ratings(self, ratings: Iterable[Any]) -> None:
        """Just-stored ratings (after the commit): single negative and window rules."""
        try:
            self._ratings(builtins.list(ratings))
        except Exception:
            self.counts["errors"] += 1
            log.exception("alert rules failed on a batch of ratings; ingest goes on")

    def on_quarantine(self, topic: str, reason: str) -> None:
        """A message ingest refused: a bad signature, an unknown terminal, a malformed payload."""
        try:
            self._quarantine(topic, reason)
        except Exception:
            self.counts["errors"] += 1
            log.exception("alert rules failed on a quarantined message")

    def on_status(self, terminal_id: str, status: dict[str, Any]) -> None:
        """A terminal's (already validated) status: offline, outbox backlog, clock."""
        try:
            self._status(terminal_id, status)
        except Exception:
            self.counts["errors"] += 1
            log.exception("alert rules failed on a status of %s", terminal_id)

    def on_sync(self, failing_s: float | None, detail: dict[str, Any] | None = None) -> None:
        """The sync to the district (hub/sync.py) has failed for ``failing_s`` seconds, longer than
        its limit (an alert, one for all streams); None: it works again (the hub resolves it)."""
        try:
            key = self._key("sync")
            if failing_s is None:
                self._auto_resolve({key: "đồng bộ đã hoạt động lại / sync works again"})
                return
            if not self._on("sync"):
                return
            minutes = max(1, round(failing_s / 60))
            self._raise(
                [
                    _Candidate(
                        rule="sync",
                        key=key,
                        severity="warning",
                        title_vi=f"Không đồng bộ được dữ liệu lên máy chủ cấp huyện "
                        f"({minutes} phút)",
                        title_en=f"Sync to the district server has failed for {minutes} min",
                        detail={"failing_s": int(failing_s), **(detail or {})},
                    )
                ]
            )
        except Exception:
            self.counts["errors"] += 1
            log.exception("could not raise or resolve the sync alert")

    def tick(self, now: datetime | None = None) -> None:
        """Periodic check (every few seconds): terminals gone silent while the office is open.

        Call it only while the hub's MQTT connection is up: when the hub itself is cut off, every
        terminal looks silent.
        """
        try:
            self._tick(self._now() if now is None else _aware(now))
        except Exception:
            self.counts["errors"] += 1
            log.exception("alert timer failed")

    # -- rules ----------------------------------------------------------------------------------
    def _ratings(self, ratings: builtins.list[Any]) -> None:
        now = self._now()
        since = now - timedelta(minutes=self.rules.window_minutes)
        cands: builtins.list[_Candidate] = []
        recent: builtins.list[Any] = []
        for r in ratings:
            try:
                if (
                    getattr(r, "test", False)
                    or getattr(r, "repeat", False)
                    or getattr(r, "followup", False)
                ):
                    continue
                if self._on("negative") and is_negative(int(r.level), int(r.scale)):
                    cands.append(self._negative(r))
                if _aware(r.press_time) >= since:
                    recent.append(r)
            except Exception:
                self.counts["errors"] += 1
                log.exception("alert rules skipped a rating they could not read: %r", r)
        if recent and self._on("window"):
            try:
                cands.extend(self._window(recent, since))
            except Exception:  # the single-negative alerts still go out
                self.counts["errors"] += 1
                log.exception("window rule failed")
        self._raise(cands)

    def _negative(self, r: Any) -> _Candidate:
        tid = getattr(r, "terminal_id", None)
        desk = getattr(r, "desk", None)
        level, scale = int(r.level), int(r.scale)
        reason = int(getattr(r, "reason", 0) or 0)
        where_vi, where_en = _where(desk, tid)
        key = self._key("negative", tid, getattr(r, "epoch", "-"), getattr(r, "seq", id(r)))
        extra_vi = f" ({REASON_LABELS[reason]})" if reason in REASON_LABELS else ""
        extra_en = f" ({REASON_LABELS_EN[reason]})" if reason in REASON_LABELS_EN else ""
        return _Candidate(
            rule="negative",
            key=key,
            severity="warning",
            title_vi=f"Đánh giá không hài lòng tại {where_vi}{extra_vi}",
            title_en=f"Dissatisfied rating at {where_en}{extra_en}",
            desk=desk,
            terminal_id=tid,
            official_id=getattr(r, "official_id", None),
            detail={
                "level": level,
                "scale": scale,
                "label": LEVEL_LABELS.get(scale, {}).get(level, str(level)),
                "reason": reason,
                "reason_label": REASON_LABELS.get(reason),
                "press_time": _iso(r.press_time),
                "rating": {
                    "terminal_id": tid,
                    "epoch": getattr(r, "epoch", None),
                    "seq": getattr(r, "seq", None),
                },
            },
        )

    def _window(self, recent: builtins.list[Any], since: datetime) -> builtins.list[_Candidate]:
        rules = self.rules
        with Session(self.engine) as s:
            rows = s.exec(
                select(Rating.desk, Rating.terminal_id, Rating.level, Rating.scale).where(
                    Rating.office == self.office,
                    col(Rating.press_time) >= since,
                    not_(col(Rating.test)),
                    not_(col(Rating.repeat)),
                )
            ).all()
        by_desk: dict[tuple[str | None, str | None], builtins.list[bool]] = {}
        for desk, tid, level, scale in rows:
            by_desk.setdefault(_desk_key(desk, tid), []).append(is_negative(level, scale))
        cands = []
        if rules.window_per_desk:
            newest: dict[tuple[str | None, str | None], Any] = {}
            for r in sorted(recent, key=lambda r: _aware(r.press_time)):
                newest[_desk_key(getattr(r, "desk", None), getattr(r, "terminal_id", None))] = r
            for dk, r in newest.items():
                c = self._window_candidate(by_desk.get(dk, []), since, dk, r)
                if c:
                    cands.append(c)
        # the office as a whole; when every rating is from one desk, the desk's alert says it all
        if rules.window_per_office and (len(by_desk) > 1 or not rules.window_per_desk):
            c = self._window_candidate([n for v in by_desk.values() for n in v], since, None, None)
            if c:
                cands.append(c)
        return cands

    def _window_candidate(
        self,
        negatives: builtins.list[bool],
        since: datetime,
        dk: tuple[str | None, str | None] | None,
        newest: Any,
    ) -> _Candidate | None:
        rules = self.rules
        total, neg = len(negatives), sum(negatives)
        if total < rules.window_min_ratings or neg < rules.window_negative_share * total - 1e-9:
            return None
        minutes = f"{rules.window_minutes:g}"
        detail = {
            "scope": "office" if dk is None else "desk",
            "negative": neg,
            "total": total,
            "share": round(neg / total, 3),
            "minutes": rules.window_minutes,
            "since": _iso(since),
        }
        if dk is None:
            return _Candidate(
                rule="window",
                key=self._key("window", "office"),
                severity="critical",
                title_vi=f"Tỷ lệ không hài lòng cao toàn đơn vị: {neg}/{total} trong {minutes} phút",
                title_en=f"High dissatisfaction across the office: {neg} of {total} in {minutes} min",
                detail=detail,
            )
        desk, tid = dk
        where_vi, where_en = _where(desk, tid)
        return _Candidate(
            rule="window",
            key=self._key("window", "desk" if desk else "terminal", desk or tid),
            severity="critical",
            title_vi=f"Tỷ lệ không hài lòng cao tại {where_vi}: {neg}/{total} trong {minutes} phút",
            title_en=f"High dissatisfaction at {where_en}: {neg} of {total} in {minutes} min",
            desk=desk,
            terminal_id=None if desk else tid,
            official_id=getattr(newest, "official_id", None),
            detail=detail,
        )

    def _quarantine(self, topic: str, reason: str) -> None:
        if not self._on("forgery"):
            return
        parts = topic.split("/")
        tid = parts[3][:64] if len(parts) == 5 and parts[:2] == ["sipas", "v1"] else None
        desk = self._desk_of(tid) if tid else None
        low = reason.lower()
        if "hmac" in low or "epoch" in low:
            kind, severity = "signature", "critical"
            vi, en = "Chữ ký không hợp lệ", "Bad signature"
        elif "not registered" in low or "not active" in low or "not this hub" in low:
            kind, severity = "unauthorised", "critical"
            vi, en = "Tin nhắn từ thiết bị không được phép", "Message from an unauthorised sender"
        else:
            kind, severity = "malformed", "warning"
            vi, en = "Tin nhắn không hợp lệ", "Malformed message"
        where_vi, where_en = _where(desk, tid) if tid else ("chủ đề lạ", "an unknown topic")
        self._raise(
            [
                _Candidate(
                    rule="forgery",
                    key=self._key("forgery", tid or "unknown"),
                    severity=severity,
                    title_vi=f"{vi} từ {where_vi}",
                    title_en=f"{en} from {where_en}",
                    desk=desk,
                    terminal_id=tid,
                    detail={"kind": kind, "topic": topic[:512], "reason": reason[:500]},
                )
            ]
        )

    def _status(self, tid: str, status: dict[str, Any]) -> None:
        now = self._now()
        with Session(self.engine) as s:
            term = s.get(Terminal, tid)
        desk = term.desk if term else None
        if status.get("state") == "offline":
            self._outbox.pop(tid, None)
            self._clock_bad.pop(tid, None)
            if term is not None and self.rules.offline_grace_s <= 0:
                term.last_seen, term.last_status = now, json.dumps(status)
                self._raise(self._offline([term], now))
            return
        cands: builtins.list[_Candidate] = []
        resolve = {self._key("offline", tid): "thiết bị đã kết nối lại / terminal back online"}
        for check in (self._clock_check, self._backlog_check):
            c = check(tid, desk, status, now, resolve)
            if c is not None:
                cands.append(c)
        self._raise(cands)
        self._auto_resolve(resolve)

    def _clock_check(
        self, tid: str, desk: str | None, st: dict[str, Any], now: datetime, resolve: dict[str, str]
    ) -> _Candidate | None:
        clock, t = st.get("clock"), st.get("time")
        if not isinstance(clock, bool):
            return None
        skew = abs(t - now.timestamp()) if isinstance(t, int | float) and t > 0 else None
        if clock and (skew is None or skew <= self.rules.clock_max_skew_s):
            self._clock_bad.pop(tid, None)
            resolve[self._key("clock", tid)] = "đồng hồ đã đúng / clock set"
            return None
        # the first heartbeat after a boot may come before the time is set (the hub sends it)
        self._clock_bad[tid] = bad = self._clock_bad.get(tid, 0) + 1
        if bad < self.rules.confirm_heartbeats or not self._on("clock"):
            return None
        where_vi, where_en = _where(desk, tid)
        return _Candidate(
            rule="clock",
            key=self._key("clock", tid),
            severity="warning",
            title_vi=f"Đồng hồ {where_vi} chưa đúng giờ",
            title_en=f"Clock of {where_en} is not set",
            desk=desk,
            terminal_id=tid,
            detail={"clock": clock, "terminal_time": t, "skew_s": skew},
        )

    def _backlog_check(
        self, tid: str, desk: str | None, st: dict[str, Any], now: datetime, resolve: dict[str, str]
    ) -> _Candidate | None:
        depth = st.get("outbox")
        if not isinstance(depth, int) or isinstance(depth, bool):
            return None
        rules = self.rules
        n = rules.backlog_growing_heartbeats
        hist = self._outbox.setdefault(tid, deque(maxlen=max(n + 1, rules.confirm_heartbeats)))
        hist.append(depth)
        recent = builtins.list(hist)
        growing = len(recent) > n and all(
            a < b for a, b in zip(recent[-n - 1 : -1], recent[-n:], strict=True)
        )
        # a terminal back from an outage reports a full outbox that drains within seconds
        high = len(recent) >= rules.confirm_heartbeats and all(
            d >= rules.backlog_max for d in recent[-rules.confirm_heartbeats :]
        )
        if depth == 0:
            resolve[self._key("backlog", tid)] = "đã gửi hết / outbox empty"
        if not (high or growing) or not self._on("backlog"):
            return None
        where_vi, where_en = _where(desk, tid)
        return _Candidate(
            rule="backlog",
            key=self._key("backlog", tid),
            severity="warning",
            title_vi=f"{_cap(where_vi)} tồn {depth} đánh giá chưa gửi được",
            title_en=f"{_cap(where_en)} has {depth} ratings waiting to be sent",
            desk=desk,
            terminal_id=tid,
            detail={"outbox": depth, "recent": recent, "growing": growing},
        )

    def _tick(self, now: datetime) -> None:
        if not self._on("offline") or not self.rules.is_open(now):
            return
        with Session(self.engine) as s:
            terms = s.exec(
                select(Terminal).where(Terminal.office == self.office, col(Terminal.active))
            ).all()
        self._raise(self._offline(builtins.list(terms), now))

    def _offline(self, terms: builtins.list[Terminal], now: datetime) -> builtins.list[_Candidate]:
        """Terminals offline while the office is open (past the opening grace)."""
        rules = self.rules
        opened = rules.opened_at(now)
        if not self._on("offline") or opened is None:
            return []
        if now < opened + timedelta(seconds=rules.opening_grace_s):
            return []
        cands = []
        for term in terms:
            if term.last_seen is None:  # registered, never switched on: not installed yet
                continue
            last = _aware(term.last_seen)
            state = _state(term.last_status)
            if state == "offline":
                due, why = last + timedelta(seconds=rules.offline_grace_s), "offline status"
            else:
                # silence is counted from when the hub itself was up to hear it; a battery
                # terminal sleeps between presses and reports only every beat_s seconds
                after, why = rules.offline_after, "no heartbeat"
                beat_s = _battery_beat_s(term.last_heartbeat)
                if beat_s:
                    after = max(after, timedelta(seconds=beat_s * rules.offline_after_heartbeats))
                    why = "no heartbeat (battery terminal)"
                due = max(last, self._started) + after
            if now < due:
                continue
            where_vi, where_en = _where(term.desk, term.id)
            cands.append(
                _Candidate(
                    rule="offline",
                    key=self._key("offline", term.id),
                    severity="warning",
                    title_vi=f"{_cap(where_vi)} mất kết nối",
                    title_en=f"{_cap(where_en)} is offline",
                    desk=term.desk,
                    terminal_id=term.id,
                    detail={
                        "why": why,
                        "last_seen": _iso(last),
                        "silent_s": int((now - last).total_seconds()),
                    },
                )
            )
        return cands

    def _desk_of(self, tid: str) -> str | None:
        with Session(self.engine) as s:
            term = s.get(Terminal, tid)
        return term.desk if term else None

    # -- records --------------------------------------------------------------------------------
    def _raise(self, cands: builtins.list[_Candidate]) -> None:
        """Create the alerts whose condition has no open alert yet; count the others. One commit."""
        if not cands:
            return
        now = self._now()
        with self._lock:
            try:
                payloads = self._write(cands, now)
            except IntegrityError:  # another writer created one of them just now
                payloads = self._write(cands, now)
            for p in payloads:
                self.counts[f"created:{p['alert']['rule']}"] += 1
                self._deliver(p)

    def _write(
        self, cands: builtins.list[_Candidate], now: datetime
    ) -> builtins.list[dict[str, Any]]:
        with Session(self.engine) as s:
            keys = {c.key for c in cands}
            existing = {
                a.open_key: a for a in s.exec(select(Alert).where(col(Alert.open_key).in_(keys)))
            }
            created: builtins.list[tuple[Alert, AlertEvent]] = []
            for c in cands:
                if c.key in existing:
                    a = existing[c.key]
                    a.count += 1
                    a.last_at = now
                    s.add(a)
                    continue
                a = Alert(
                    created_at=now,
                    updated_at=now,
                    last_at=now,
                    office=self.office,
                    desk=c.desk,
                    terminal_id=c.terminal_id,
                    official_id=c.official_id,
                    rule=c.rule,
                    severity=c.severity,
                    title_vi=c.title_vi,
                    title_en=c.title_en,
                    detail=json.dumps(c.detail, ensure_ascii=False, default=str),
                    dedup_key=c.key,
                    open_key=c.key,
                )
                s.add(a)
                s.flush()
                assert a.id is not None
                ev = AlertEvent(alert_id=a.id, at=now, actor=HUB_ACTOR, action="created")
                s.add(ev)
                existing[c.key] = a
                created.append((a, ev))
            s.commit()
            return [self._payload(a, ev) for a, ev in created]

    def _auto_resolve(self, reasons: dict[str, str]) -> None:
        """Resolve, as the hub, the open alerts whose condition is over (terminal back online...)."""
        with self._lock, Session(self.engine) as s:
            open_ = s.exec(select(Alert).where(col(Alert.open_key).in_(reasons))).all()
            if not open_:
                return
            done = []
            for a in open_:
                assert a.open_key is not None
                ev = self._change(s, a, "resolved", HUB_ACTOR, reasons[a.open_key])
                done.append((a, ev))
            s.commit()
            for a, ev in done:
                self._deliver(self._payload(a, ev))

    def _change(
        self, s: Session, a: Alert, action: str, actor: str, comment: str | None
    ) -> AlertEvent:
        assert a.id is not None
        now = self._now()
        if action == "acknowledged":
            a.state = "acknowledged"
        elif action == "resolved":
            a.state, a.open_key = "resolved", None
        a.updated_at = now
        s.add(a)
        ev = AlertEvent(alert_id=a.id, at=now, actor=actor, action=action, comment=comment)
        s.add(ev)
        s.flush()
        return ev

    def _act(self, alert_id: int, action: str, actor: str, comment: str | None) -> AlertOut:
        actor = (actor or "").strip()
        if not actor:
            raise AlertStateError("say who you are: 'actor' must not be empty")
        if action == "commented" and not (comment or "").strip():
            raise AlertStateError("a comment must not be empty")
        with self._lock, Session(self.engine) as s:
            a = s.get(Alert, alert_id)
            if a is None:
                raise AlertNotFound(f"alert {alert_id} does not exist")
            if action != "commented" and a.state == "resolved":
                raise AlertStateError(f"alert {alert_id} is already resolved")
            if action == "acknowledged" and a.state == "acknowledged":
                raise AlertStateError(f"alert {alert_id} is already acknowledged")
            ev = self._change(s, a, action, actor, comment)
            s.commit()
            payload = self._payload(a, ev)
            self._deliver(payload)
            events = s.exec(
                select(AlertEvent)
                .where(AlertEvent.alert_id == alert_id)
                .order_by(col(AlertEvent.id))
            ).all()
            return AlertOut.of(a, events)

    # -- the supervisor's side ------------------------------------------------------------------
    def acknowledge(self, alert_id: int, actor: str, comment: str | None = None) -> AlertOut:
        """Someone is looking into it. Raises AlertNotFound, AlertStateError."""
        return self._act(alert_id, "acknowledged", actor, comment)

    def resolve(self, alert_id: int, actor: str, comment: str | None = None) -> AlertOut:
        """Done; the same condition may raise a new alert from now on."""
        return self._act(alert_id, "resolved", actor, comment)

    def comment(self, alert_id: int, actor: str, comment: str) -> AlertOut:
        return self._act(alert_id, "commented", actor, comment)

    def get(self, alert_id: int) -> AlertOut:
        with Session(self.engine) as s:
            a = s.get(Alert, alert_id)
            if a is None:
                raise AlertNotFound(f"alert {alert_id} does not exist")
            events = s.exec(
                select(AlertEvent)
                .where(AlertEvent.alert_id == alert_id)
                .order_by(col(AlertEvent.id))
            ).all()
            return AlertOut.of(a, events)

    def list(
        self,
        state: str | None = None,
        limit: int = 100,
        *,
        rule: str | None = None,
        desk: str | None = None,
        before_id: int | None = None,
    ) -> builtins.list[AlertOut]:
        """Newest first. ``state`` may also be "unresolved" (open or acknowledged)."""
        q = select(Alert).where(Alert.office == self.office)
        if state == "unresolved":
            q = q.where(Alert.state != "resolved")
        elif state:
            q = q.where(Alert.state == state)
        if rule:
            q = q.where(Alert.rule == rule)
        if desk:
            q = q.where(Alert.desk == desk)
        if before_id is not None:
            q = q.where(col(Alert.id) < before_id)
        with Session(self.engine) as s:
            rows = s.exec(q.order_by(col(Alert.id).desc()).limit(limit)).all()
            return [AlertOut.of(a) for a in rows]

    def events_since(self, event_id: int, limit: int = 1000) -> builtins.list[dict[str, Any]]:
        """Delivery payloads of the events after ``event_id`` (an SSE client's Last-Event-ID); the
        alert in each is as it is now."""
        with Session(self.engine) as s:
            rows = s.exec(
                select(AlertEvent, Alert)
                .join(Alert, col(Alert.id) == col(AlertEvent.alert_id))
                .where(col(AlertEvent.id) > event_id, Alert.office == self.office)
                .order_by(col(AlertEvent.id))
                .limit(limit)
            ).all()
            return [self._payload(a, ev) for ev, a in rows]

    # -- delivery -------------------------------------------------------------------------------
    def _payload(self, a: Alert, ev: AlertEvent) -> dict[str, Any]:
        return {
            "v": 1,
            "event_id": ev.id,
            "event": ev.action,
            "at": _iso(ev.at),
            "actor": ev.actor,
            "comment": ev.comment,
            "alert": AlertOut.of(a).model_dump(mode="json", exclude={"events"}),
        }

    def subscribe(
        self, notify: Callable[[], object] | None = None, maxsize: int = 1000
    ) -> queue.Queue[dict[str, Any] | None]:
        """A queue that receives every delivery payload from now on (None: the engine is closing).
        ``notify`` is called, from the delivering thread, after each put: an asyncio consumer passes
        ``lambda: loop.call_soon_threadsafe(event.set)``."""
        q: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=maxsize)
        with self._subs_lock:
            if self._stop.is_set():
                q.put_nowait(None)
            else:
                self._subs.append((q, notify))
        return q

    def unsubscribe(self, q: queue.Queue[dict[str, Any] | None]) -> None:
        with self._subs_lock:
            self._subs = [sub for sub in self._subs if sub[0] is not q]

    def _deliver(self, payload: dict[str, Any]) -> None:
        with self._subs_lock:
            subs = builtins.list(self._subs)
        for q, notify in subs:
            try:
                q.put_nowait(payload)
            except queue.Full:  # a consumer that stopped reading: drop it, not the others
                self.unsubscribe(q)
                self.counts["subscriber_dropped"] += 1
                log.warning("an alert subscriber stopped reading; it was dropped")
            if notify:
                try:
                    notify()
                except Exception:
                    log.exception("alert subscriber's notify failed")
        body = json.dumps(payload, ensure_ascii=False).encode()
        if self.publish:
            try:
                self.publish(self.topic, body)
                self.counts["published"] += 1
            except Exception:
                self.counts["publish_failed"] += 1
                log.exception("could not publish an alert on %s", self.topic)
        if self._hook_thread is not None:
            try:
                self._hook_q.put_nowait(body)
            except queue.Full:
                self.counts["webhook_dropped"] += 1
                log.warning("webhook queue full: an alert was not sent to %s", self.webhook_url)

    def _webhook_loop(self) -> None:
        assert self.webhook_url
        while not self._stop.is_set():
            try:
                body = self._hook_q.get(timeout=0.2)
            except queue.Empty:
                continue
            for attempt in range(self._hook_attempts):
                try:
                    r = self._http.post(
                        self.webhook_url,
                        content=body,
                        headers={"Content-Type": "application/json; charset=utf-8"},
                    )
                    r.raise_for_status()
                    self.counts["webhook_sent"] += 1
                    break
                except Exception as e:  # any failure (refused, timeout, 5xx, bad URL): retry
                    log.warning(
                        "webhook %s failed (attempt %d): %s", self.webhook_url, attempt + 1, e
                    )
                    last = attempt + 1 == self._hook_attempts
                    if not last and self._stop.wait(self._hook_backoff * 2**attempt):
                        return
            else:
                self.counts["webhook_failed"] += 1

    def stats(self) -> dict[str, int]:
        return dict(self.counts)

    def close(self) -> None:
        """Stop the webhook thread and end the subscribers' streams."""
        self._stop.set()
        with self._subs_lock:
            subs, self._subs = self._subs, []
        for q, notify in subs:
            with contextlib.suppress(queue.Full):
                q.put_nowait(None)
            if notify:
                with contextlib.suppress(Exception):  # e.g. its event loop is already closed
                    notify()
        if self._hook_thread is not None:
            self._hook_thread.join(timeout=5)
            self._http.close()


# -- helpers -------------------------------------------------------------------------------------
def _desk_key(desk: str | None, tid: str | None) -> tuple[str | None, str | None]:
    """Ratings of a terminal with no desk are grouped by terminal."""
    return (desk, None) if desk else (None, tid)


def _where(desk: str | None, tid: str | None) -> tuple[str, str]:
    if desk:
        return f"quầy {desk}", f"desk {desk}"
    return f"thiết bị {tid}", f"terminal {tid}"


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _battery_beat_s(last_heartbeat: str | None) -> float | None:
    """A battery terminal's heartbeat period (it is silent while it sleeps), else None."""
    try:
        st = json.loads(last_heartbeat or "")
    except ValueError:
        return None
    if not isinstance(st, dict) or st.get("power_mode") != "battery":
        return None
    beat = st.get("beat_s")
    return float(beat) if isinstance(beat, int | float) and 0 < beat <= 7 * 86400 else None


def _state(last_status: str | None) -> str | None:
    try:
        st = json.loads(last_status or "")
    except ValueError:
        return None
    return st.get("state") if isinstance(st, dict) else None


def _iso(t: datetime) -> str:
    return _aware(t).isoformat()
