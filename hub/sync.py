"""Hub -> district sync (DESIGN.md 4.8, the contract in docs/sync.md): an HTTP outbox.

Each stream (ratings, cases, duty log, exclusions, corrections, heartbeats, paper ballot boxes, and
the directory of desks, officials and terminals) has a watermark in the hub's database
(``SyncState``): the last hub id the district has answered ``200`` for. Everything past it goes
in batches of at most ``batch_size`` items; a partial batch waits ``batch_wait_s`` for more.

- **Exactly once.** The watermark moves only after a ``200``. The batch in flight is written down
  (``pending_to``) before it is sent, so a retry, even after a crash or a restart, sends the same
  range under the same ``Idempotency-Key``, and the district answers it as it did the first time.
- **Back-off.** A refused connection, a timeout, a ``5xx`` or a ``4xx`` makes the stream wait 1 s,
  2 s, 4 s, ... up to ``backoff_max_s`` (5 min), each pause shortened by a random share of at most
  25 % (jitter: many hubs coming back after a district outage do not knock in step). A ``413``
  halves the stream's batch. A restart tries at once (it is often the technician's fix).
- **Order.** The directory and cases go before the ratings that name them; exclusions and
  corrections wait until the rating they are about has been sent (the district would otherwise
  reject them as naming an unknown rating, for good).
- **Alert.** Failing for longer than ``alert_after_s`` raises one "sync" alert; the hub resolves it
  when every stream gets through again.

``SyncSender`` runs in a background thread of the hub service (``start``/``stop``); ``run_once``
is one round (``sipas-hub sync now``). A file lock in the data directory keeps the service and
a technician's command from sending the same batch at the same time.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import gzip
import hashlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson
from sqlalchemy import String, type_coerce
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from hub.models import (
    Case,
    Correction,
    Desk,
    DutyEvent,
    Exclusion,
    Heartbeat,
    Official,
    PaperBox,
    PaperTally,
    Rating,
    SyncState,
    Terminal,
    utcnow,
)

if TYPE_CHECKING:
    from hub.alerts import AlertEngine
    from hub.config import Settings

log = logging.getLogger(__name__)

VERSION = 1
# Sent in this order in each round: what ratings name first, what names ratings after them.
STREAMS = (
    "directory",
    "cases",
    "duty",
    "ratings",
    "exclusions",
    "corrections",
    "heartbeats",
    "paper",
)
BACKOFF_MIN_S = 1.0
JITTER = 0.25  # a pause is shortened by up to this share
LOCK_FILE = "sync.lock"


def backoff_delay(
    attempt: int, *, base: float = BACKOFF_MIN_S, cap: float = 300, rng: Callable[[], float]
) -> float:
    """The pause after the ``attempt``-th failure in a row: base doubling to cap, jittered."""
    nominal = min(cap, base * 2 ** min(max(attempt, 1) - 1, 40))
    return nominal * (1 - JITTER * rng())


def _aware(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _iso(t: datetime | None) -> str | None:
    return None if t is None else _aware(t).isoformat()


def _iso_stored(v: Any) -> str | None:
    """``_iso`` of a time column read without its type's conversion: SQLite gives the text it
    stores ('2026-01-01 07:30:00.250000', UTC), other databases a datetime. A catch-up turns
    millions of these into ISO text; the text needs no datetime in between."""
    if v is None:
        return None
    if isinstance(v, str):
        if len(v) in (19, 26) and v[10] == " " and v[4] == "-":
            if v.endswith(".000000"):  # as isoformat() writes it: no fraction for whole seconds
                v = v[:19]
            return f"{v[:10]}T{v[11:]}+00:00"
        return _iso(datetime.fromisoformat(v))
    return _iso(v)


# -- the streams' items (docs/sync.md, "Streams and their watermarks") --------------------------------
Row = tuple[int, dict[str, Any], int | None]  # position, item, the rating it is about (gating)


def _ratings(s: Session, after: int, upto: int | None, limit: int) -> list[Row]:
    # The times are read as stored (no datetime per row: see _iso_stored); all rows at once.
    q = (
        sa_select(
            col(Rating.id),
            col(Rating.terminal_id),
            col(Rating.epoch),
            col(Rating.seq),
            col(Rating.raw),
            col(Rating.channel),
            col(Rating.desk),
            col(Rating.official_id),
            col(Case.code),
            col(Rating.link_status),
            type_coerce(col(Rating.press_time), String),
            type_coerce(col(Rating.received_at), String),
            col(Rating.clock_unknown),
        )
        .outerjoin(Case, col(Case.id) == col(Rating.case_id))
        .where(col(Rating.id) > after)
    )
    if upto is not None:
        q = q.where(col(Rating.id) <= upto)
    rows: Any = s.connection().execute(q.order_by(col(Rating.id)).limit(limit)).all()
    iso = _iso_stored
    return [
        (
            rid,
            {
                "terminal_id": tid,
                "epoch": ep,
                "seq": seq,
                "raw": raw.hex(),
                "channel": ch,
                "desk": desk,
                "official_id": off,
                "case_code": code,
                "link_status": link,
                "press_time": iso(press),
                "received_at": iso(recv),
                "clock_unknown": bool(cu),
            },
            None,
        )
        for rid, tid, ep, seq, raw, ch, desk, off, code, link, press, recv, cu in rows
    ]


def _cases(s: Session, after: int, upto: int | None, limit: int) -> list[Row]:
    return [
        (
            c.id,
            {
                "id": c.id,
                "code": c.code,
                "desk_id": c.desk_id,
                "procedure": c.procedure,
                "field": c.field,
                "official_id": c.official_id,
                "handed_back_at": _iso(c.handed_back_at),
                "source": c.source,
            },
            None,
        )
        for c in s.exec(_range(Case, after, upto, limit))
        if c.id is not None
    ]


def _duty(s: Session, after: int, upto: int | None, limit: int) -> list[Row]:
    return [
        (
            e.id,
            {
                "id": e.id,
                "desk_id": e.desk_id,
                "official_id": e.official_id,
                "kind": e.kind,
                "at": _iso(e.at),
                "actor": e.actor,
            },
            None,
        )
        for e in s.exec(_range(DutyEvent, after, upto, limit))
        if e.id is not None
    ]


def _annotations(model: Any) -> Callable[[Session, int, int | None, int], list[Row]]:
    def fetch(s: Session, after: int, upto: int | None, limit: int) -> list[Row]:
        q = (
            select(model, Rating.terminal_id, Rating.epoch, Rating.seq)
            .join(Rating, col(Rating.id) == col(model.rating_id))
            .where(col(model.id) > after)
        )
        if upto is not None:
            q = q.where(col(model.id) <= upto)
        out: list[Row] = []
        for a, tid, ep, seq in s.exec(q.order_by(col(model.id)).limit(limit)):
            assert a.id is not None
            item: dict[str, Any] = {"id": a.id, "rating": [tid, ep, seq]}
            if isinstance(a, Exclusion):
                item.update(reason=a.reason, note=a.note)
            else:
                item.update(official_id=a.official_id, reason=a.reason)
            item.update(actor=a.actor, created_at=_iso(a.created_at), reverses=a.reverses)
            out.append((a.id, item, a.rating_id))
        return out

    return fetch


def _heartbeats(s: Session, after: int, upto: int | None, limit: int) -> list[Row]:
    out: list[Row] = []
    for h in s.exec(_range(Heartbeat, after, upto, limit)):
        assert h.id is not None
        try:  # the state the terminal reported with it ("online")
            st = json.loads(h.status)
            status = st.get("state") if isinstance(st, dict) else None
        except ValueError:
            status = None
        item = {
            "terminal_id": h.terminal_id,
            "epoch": h.epoch,
            "last_seq": h.last_seq,
            "time": h.time,
            "dtag": h.dtag,
            "status": status,
        }
        out.append((h.id, item, None))
    return out


def _paper(s: Session, after: int, upto: int | None, limit: int) -> list[Row]:
    boxes = s.exec(_range(PaperBox, after, upto, limit)).all()
    tallies: dict[int, list[dict[str, Any]]] = {}
    ids = [b.id for b in boxes if b.id is not None]
    if ids:
        for t in s.exec(
            select(PaperTally).where(col(PaperTally.box_id).in_(ids)).order_by(col(PaperTally.id))
        ):
            tallies.setdefault(t.box_id, []).append(
                {
                    "desk_id": t.desk_id,
                    "official_id": t.official_id,
                    "field": t.field,
                    "scale": t.scale,
                    "level": t.level,
                    "count": t.count,
                }
            )
    out: list[Row] = []
    for b in boxes:
        assert b.id is not None
        item = {
            "id": b.id,
            "desk_id": b.desk_id,
            "opened_at": _iso(b.opened_at),
            "period_start": _iso(b.period_start),
            "period_end": _iso(b.period_end),
            "witnesses": b.witnesses,
            "seal_intact": b.seal_intact,
            "ballots": b.ballots,
            "invalid_ballots": b.invalid_ballots,
            "note": b.note,
            "supersedes": b.supersedes,
            "actor": b.actor,
            "tallies": tallies.get(b.id, []),
        }
        out.append((b.id, item, None))
    return out


def _range(model: Any, after: int, upto: int | None, limit: int) -> Any:
    q = select(model).where(col(model.id) > after)
    if upto is not None:
        q = q.where(col(model.id) <= upto)
    return q.order_by(col(model.id)).limit(limit)


@dataclass(frozen=True)
class _Table:
    model: Any
    fetch: Callable[[Session, int, int | None, int], list[Row]]
    time_col: Any  # when a row was recorded on the hub: how far behind the district is
    gated: bool = False  # items about a rating wait until that rating is sent


TABLES: dict[str, _Table] = {
    "cases": _Table(Case, _cases, Case.recorded_at),
    "duty": _Table(DutyEvent, _duty, DutyEvent.recorded_at),
    "ratings": _Table(Rating, _ratings, Rating.received_at),
    "exclusions": _Table(Exclusion, _annotations(Exclusion), Exclusion.created_at, gated=True),
    "corrections": _Table(Correction, _annotations(Correction), Correction.created_at, gated=True),
    "heartbeats": _Table(Heartbeat, _heartbeats, Heartbeat.received_at),
    "paper": _Table(PaperBox, _paper, PaperBox.recorded_at),
}


def directory_snapshot(s: Session, office: str) -> dict[str, Any]:
    """Desks, officials and terminals as the district keeps them (the ``directory`` item)."""
    desks = s.exec(select(Desk).where(Desk.office == office).order_by(col(Desk.id))).all()
    officials = s.exec(
        select(Official).where(Official.office == office).order_by(col(Official.id))
    ).all()
    terminals = s.exec(
        select(Terminal).where(Terminal.office == office).order_by(col(Terminal.id))
    ).all()
    return {
        "desks": [{"id": d.id, "name": d.name, "requires_case": d.requires_case} for d in desks],
        "officials": [{"id": o.id, "name": o.name, "active": o.active} for o in officials],
        "terminals": [
            {"id": t.id, "desk": t.desk, "epoch": t.epoch, "active": t.active} for t in terminals
        ],
    }


def _digest(snapshot: dict[str, Any]) -> str:
    return hashlib.sha256(_dumps(snapshot)).hexdigest()


def _dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON, keys in the order given: the same object is always the same bytes."""
    return orjson.dumps(obj)


def _state(s: Session, stream: str) -> SyncState:
    st = s.get(SyncState, stream)
    if st is None:
        st = SyncState(stream=stream)
        s.add(st)
    return st


def _directory_version(s: Session, office: str, now: datetime) -> tuple[SyncState, dict[str, Any]]:
    """The directory's state with its version bumped if the snapshot changed (committed)."""
    st = _state(s, "directory")
    snap = directory_snapshot(s, office)
    digest = _digest(snap)
    if digest != st.digest:
        st.version += 1
        st.digest = digest
        st.changed_at = now
        s.add(st)
        s.commit()
        s.refresh(st)
    return st, snap


# -- status ----------------------------------------------------------------------------------------
def status(
    engine: Engine,
    office: str,
    *,
    district_url: str | None,
    alert_after_s: float,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Per stream: how far behind the district is (items, seconds), the last success and error,
    the next attempt. Read from the database: the service, the API and the CLI see the same."""
    now = now or utcnow()
    streams: list[dict[str, Any]] = []
    with Session(engine) as s:
        for name in STREAMS:
            if name == "directory":
                st = s.get(SyncState, name) or SyncState(stream=name)
                snap = directory_snapshot(s, office)
                changed = _digest(snap) != st.digest
                head = st.version + (1 if changed else 0)
                behind = 1 if head > st.watermark else 0
                since = now if changed else st.changed_at
                oldest = since if behind else None
            else:
                st = s.get(SyncState, name) or SyncState(stream=name)
                t = TABLES[name]
                behind = s.exec(
                    select(func.count()).select_from(t.model).where(col(t.model.id) > st.watermark)
                ).one()
                head = st.watermark + behind
                oldest = (
                    s.exec(
                        select(t.time_col)
                        .where(col(t.model.id) > st.watermark)
                        .order_by(col(t.model.id))
                        .limit(1)
                    ).first()
                    if behind
                    else None
                )
            streams.append(
                {
                    "stream": name,
                    "watermark": st.watermark,
                    "head": head,
                    "behind_items": behind,
                    "behind_s": max(0.0, (now - _aware(oldest)).total_seconds()) if oldest else 0.0,
                    "pending_to": st.pending_to,
                    "attempts": st.attempts,
                    "failing_since": _iso(st.failing_since),
                    "last_success_at": _iso(st.last_success_at),
                    "last_attempt_at": _iso(st.last_attempt_at),
                    "last_error": st.last_error,
                    "last_error_at": _iso(st.last_error_at),
                    "next_attempt_at": _iso(st.next_attempt_at),
                    "sent": st.sent,
                    "rejected": st.rejected,
                }
            )
    failing = [x for x in streams if x["failing_since"]]
    since = min((x["failing_since"] for x in failing), default=None)
    successes = [x["last_success_at"] for x in streams if x["last_success_at"]]
    return {
        "configured": bool(district_url),
        "district_url": district_url or None,
        "office": office,
        "ok": not failing,
        "failing_since": since,
        "alert_after_s": alert_after_s,
        "last_success_at": max(successes, default=None),
        "behind_items": sum(x["behind_items"] for x in streams),
        "behind_s": max((x["behind_s"] for x in streams), default=0.0),
        "streams": streams,
    }


# -- the sender ------------------------------------------------------------------------------------
@dataclass
class Batch:
    stream: str
    start: int  # the watermark before it (exclusive)
    to: int  # the last item's position (inclusive)
    items: list[dict[str, Any]]
    full: bool = False  # as many items as the batch size: more may be waiting
    _body: bytes | None = field(default=None, repr=False, compare=False)

    def key(self, office: str) -> str:
        return f"{office}:{self.stream}:{self.start}-{self.to}"

    def body(self, office: str) -> bytes:
        """The request body (made once: a prepared batch brings it ready)."""
        if self._body is None:
            self._body = self._make_body(office)
        return self._body

    def _make_body(self, office: str) -> bytes:
        doc = {
            "v": VERSION,
            "office": office,
            "stream": self.stream,
            "from": self.start,
            "to": self.to,
            "items": self.items,
        }
        # mtime 0: the same batch is the same bytes, whenever it is sent. Level 1: a third of
        # level 6's time for ~8 % more bytes (JSON of hex records compresses ~5:1 either way).
        return gzip.compress(_dumps(doc), compresslevel=1, mtime=0)


class SyncError(Exception):
    """A batch did not get through; the text says why (shown in the status)."""

    def __init__(self, text: str, status: int | None = None):
        super().__init__(text)
        self.status = status


class SyncSender:
    """Sends the hub's streams to the district (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        office: str,
        *,
        url: str,
        token: str,
        batch_size: int = 1000,
        batch_wait_s: float = 5.0,
        timeout_s: float = 30.0,
        backoff_min_s: float = BACKOFF_MIN_S,
        backoff_max_s: float = 300.0,
        alert_after_s: float = 1800.0,
        poll_s: float = 1.0,
        alerts: AlertEngine | None = None,
        lock_path: Path | None = None,
        transport: httpx.BaseTransport | None = None,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], datetime] = utcnow,
        inflight: int = 2,
    ):
        if not url or not token:
            raise ValueError("sync needs the district's address and a hub token")
        self.engine = engine
        self.office = office
        self.url = url.rstrip("/")
        self.batch_size = batch_size
        self.batch_wait_s = batch_wait_s
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.alert_after_s = alert_after_s
        self.poll_s = poll_s
        self.alerts = alerts
        self.lock_path = lock_path
        self._rng = rng
        self._clock = clock
        self.inflight = max(1, min(2, inflight))
        self._client = functools.partial(
            httpx.Client,
            timeout=timeout_s,
            transport=transport,
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "Content-Encoding": "gzip",
                "User-Agent": "sipas-hub-sync/1",
            },
        )
        self._http = self._client()
        self._http2: httpx.Client | None = None  # the second lane (two batches in flight)
        self._limit: dict[str, int] = {}  # a stream's batch after a 413 (halved each time)
        self._partial_since: dict[str, float] = {}  # monotonic time a partial batch was first seen
        # The next batch of a stream, read and packed while the district stores the one before
        # (a catch-up then costs the district's time, not the district's plus the hub's).
        self._prep: ThreadPoolExecutor | None = None  # made when needed, again after stop()
        self._next: dict[str, tuple[int, int, Future[list[Batch]]]] = {}
        # During a catch-up two batches of a stream are in flight at once: the district stores
        # one while it reads and checks the other (its database and its Python work overlap).
        self._lane2: ThreadPoolExecutor | None = None
        self._round = threading.Lock()  # one round at a time in this process
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._alert_open: bool | None = None  # unknown until the first round
        self._alert_seen: float | None = None
        self.rounds = 0

    @classmethod
    def from_settings(cls, engine: Engine, settings: Settings, **kw: Any) -> SyncSender:
        return cls(
            engine,
            settings.office,
            url=settings.district_url,
            token=settings.district_token,
            batch_size=settings.sync_batch_size,
            batch_wait_s=settings.sync_batch_wait_s,
            timeout_s=settings.sync_timeout_s,
            backoff_max_s=settings.sync_backoff_max_s,
            alert_after_s=settings.sync_alert_after_minutes * 60,
            lock_path=settings.data_dir / LOCK_FILE,
            **kw,
        )

    # -- the thread -------------------------------------------------------------------------------
    def start(self) -> None:
        """Send in the background. Back-off pauses left by an earlier run are dropped: a restart
        tries at once."""
        with Session(self.engine) as s:
            for st in s.exec(select(SyncState)).all():
                if st.next_attempt_at is not None:
                    st.next_attempt_at = None
                    s.add(st)
            s.commit()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="hub-sync", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the request in flight (at most ``timeout`` seconds; a request still out then
        is abandoned: its batch goes again, under the same key, next time)."""
        self._stop.set()
        self._wake.set()
        for pool in (self._prep, self._lane2):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        self._prep = self._lane2 = None
        self._next.clear()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("sync: a request to the district is still out; abandoned")
            else:
                self._close_clients()
            self._thread = None
        else:
            self._close_clients()

    def _close_clients(self) -> None:
        self._http.close()
        if self._http2 is not None:
            self._http2.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wake(self) -> None:
        """Look for something to send now (e.g. after a change)."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            more = False
            try:
                more = self.run_once()
            except Exception:
                log.exception("sync round failed; trying again shortly")
            if more:
                continue  # a full batch went: the next one is ready
            self._wake.wait(self.poll_s)
            self._wake.clear()

    # -- one round --------------------------------------------------------------------------------
    def run_once(self, *, force: bool = False, wait_lock: float = 0.0) -> bool:
        """Try every stream once: send what is due (``force``: everything waiting, back-off and
        partial-batch wait ignored). True when a full batch went (more may be waiting)."""
        with self._round, self._file_lock(wait_lock) as locked:
            if not locked:
                return False  # another process (`sipas-hub sync now`) is sending
            self.rounds += 1
            more = False
            for stream in STREAMS:
                if self._stop.is_set() and not force:
                    break
                more |= self._step(stream, force)
            self._check_alert()
            return more

    @contextlib.contextmanager
    def _file_lock(self, wait: float) -> Iterator[bool]:
        if self.lock_path is None:
            yield True
            return
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a+") as f:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        yield False
                        return
                    time.sleep(0.05)
            try:
                yield True
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _now(self) -> datetime:
        return _aware(self._clock())

    def _step(self, stream: str, force: bool) -> bool:
        now = self._now()
        with Session(self.engine) as s:
            if stream == "directory":
                st, snap = _directory_version(s, self.office, now)
            else:
                st = _state(s, stream)
            if st.next_attempt_at is not None and _aware(st.next_attempt_at) > now and not force:
                return False
            batch = self._batch(s, st, snap if stream == "directory" else None, force)
            if batch is None:
                return False
            retrying = (
                st.attempts > 0
            )  # after a failure: one batch at a time until one gets through
            if stream != "directory" and st.pending_to != batch.to:
                st.pending_to = batch.to  # a retry sends this range again, under the same key
            st.last_attempt_at = now
            s.add(st)
            s.commit()
        pair: Batch | None = None  # the batch after this one, sent at the same time
        if batch.full and stream != "directory" and not TABLES[stream].gated:
            limit = self._stream_limit(stream)
            if self.inflight > 1 and not retrying:
                pair = self._prepared(stream, batch.to, limit) or self._read(
                    stream, batch.to, limit
                )
            self._prepare_next(stream, (pair or batch).to, limit, self.inflight)
        if pair is None:
            try:
                answer = self._post(batch)
            except SyncError as e:
                self._next.pop(stream, None)
                self._failed(stream, batch, e)
                return False
            self._succeeded(stream, batch, answer)
            return batch.full
        return self._send_pair(stream, batch, pair)

    def _send_pair(self, stream: str, first: Batch, second: Batch) -> bool:
        """Send two consecutive batches at once; the watermark still moves in order: past the
        second only when both got their 200. The first one's range is the one written down as
        pending (a retry sends it under the same key); if only the second fails, its range
        becomes the pending one. After a crash the second's items may go again in another range:
        the district stores each item once whatever batch brings it (docs/sync.md)."""
        if self._http2 is None:
            self._http2 = self._client()
        if self._lane2 is None:
            self._lane2 = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sipas-sync-send")
        try:
            later = self._lane2.submit(self._post, second, self._http2)
        except RuntimeError:  # the sender is stopping: the first one only
            self._next.pop(stream, None)
            try:
                self._succeeded(stream, first, self._post(first))
            except SyncError as e:
                self._failed(stream, first, e)
            return False
        answers: list[dict[str, Any] | SyncError] = []
        for run in (lambda: self._post(first), later.result):
            try:
                answers.append(run())
            except SyncError as e:
                answers.append(e)
        a1, a2 = answers
        if isinstance(a1, SyncError):
            self._next.pop(stream, None)
            self._failed(stream, first, a1)
            return False
        self._succeeded(stream, first, a1)
        if isinstance(a2, SyncError):
            self._next.pop(stream, None)
            self._failed(stream, second, a2, pending_to=second.to)
            return False
        self._succeeded(stream, second, a2)
        return True

    def _stream_limit(self, stream: str) -> int:
        return min(self.batch_size, self._limit.get(stream, self.batch_size))

    def _read(self, stream: str, start: int, limit: int) -> Batch | None:
        """The full batch after ``start``, its body packed; None when fewer items wait."""
        with Session(self.engine) as s:
            rows = TABLES[stream].fetch(s, start, None, limit)
        if len(rows) < limit:
            return None  # a partial batch waits as usual (batch_wait_s)
        batch = Batch(stream, start, rows[-1][0], [r[1] for r in rows], full=True)
        batch.body(self.office)
        return batch

    def _prepare_next(self, stream: str, start: int, limit: int, count: int) -> None:
        """Read and pack the next ``count`` full batches after ``start`` in the background (used
        only if the ones before get through and nothing else moved the stream meanwhile)."""

        def prepare() -> list[Batch]:
            out: list[Batch] = []
            at = start
            for _ in range(count):
                b = self._read(stream, at, limit)
                if b is None:
                    break
                out.append(b)
                at = b.to
            return out

        if self._prep is None:
            self._prep = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sipas-sync-prep")
        try:
            self._next[stream] = (start, limit, self._prep.submit(prepare))
        except RuntimeError:  # the sender is stopping
            self._next.pop(stream, None)

    def _prepared(self, stream: str, start: int, limit: int) -> Batch | None:
        """The batch prepared for this position, if any (waiting for it if it is being read)."""
        entry = self._next.pop(stream, None)
        if entry is None or entry[0] != start or entry[1] != limit:
            return None
        try:
            ready = entry[2].result()
        except Exception:  # noqa: BLE001 - read it again the ordinary way
            log.exception("sync %s: preparing a batch failed; reading it again", stream)
            return None
        if not ready:
            return None
        if len(ready) > 1:  # the rest stays prepared, from the end of this one
            rest: Future[list[Batch]] = Future()
            rest.set_result(ready[1:])
            self._next[stream] = (ready[0].to, limit, rest)
        return ready[0]

    def _batch(
        self, s: Session, st: SyncState, snapshot: dict[str, Any] | None, force: bool
    ) -> Batch | None:
        stream = st.stream
        if snapshot is not None:  # the directory: one snapshot per version
            if st.version <= st.watermark:
                return None
            changed = _aware(st.changed_at) if st.changed_at else self._now()
            waited = (self._now() - changed).total_seconds()
            if not force and st.attempts == 0 and 0 <= waited < self.batch_wait_s:
                return None
            return Batch(stream, st.watermark, st.version, [snapshot])
        table = TABLES[stream]
        limit = self._stream_limit(stream)
        if st.pending_to is not None and st.pending_to > st.watermark:
            self._next.pop(stream, None)
            rows = table.fetch(s, st.watermark, st.pending_to, st.pending_to - st.watermark)
            if rows:  # (more may follow it)
                return Batch(stream, st.watermark, rows[-1][0], [r[1] for r in rows], full=True)
        ready = self._prepared(stream, st.watermark, limit)
        if ready is not None:
            self._partial_since.pop(stream, None)
            return ready
        rows = table.fetch(s, st.watermark, None, limit)
        if table.gated and rows:
            sent = _state(s, "ratings").watermark
            for i, (_, _, rating_id) in enumerate(rows):
                if rating_id is not None and rating_id > sent:
                    rows = rows[:i]  # the rest waits for its rating
                    break
        if not rows:
            self._partial_since.pop(stream, None)
            return None
        full = len(rows) >= limit
        if not full and not force and st.attempts == 0:
            first = self._partial_since.setdefault(stream, time.monotonic())
            if time.monotonic() - first < self.batch_wait_s:
                return None
        self._partial_since.pop(stream, None)
        return Batch(stream, st.watermark, rows[-1][0], [r[1] for r in rows], full=full)

    def _post(self, batch: Batch, http: httpx.Client | None = None) -> dict[str, Any]:
        try:
            r = (http or self._http).post(
                f"{self.url}/api/v1/sync/{batch.stream}",
                content=batch.body(self.office),
                headers={"Idempotency-Key": batch.key(self.office)},
            )
        except httpx.TimeoutException as e:
            raise SyncError(f"no answer from the district in time ({type(e).__name__})") from e
        except httpx.HTTPError as e:
            raise SyncError(f"cannot reach the district: {e or type(e).__name__}") from e
        if r.status_code != 200:
            raise SyncError(f"district answered {r.status_code}: {_detail(r)}", r.status_code)
        try:
            answer = r.json()
            if not isinstance(answer, dict) or answer.get("to") != batch.to:
                raise ValueError(f"answer for another range: {str(answer)[:200]}")
        except ValueError as e:
            raise SyncError(f"district's answer is not what docs/sync.md says: {e}", 200) from e
        return answer

    def _succeeded(self, stream: str, batch: Batch, answer: dict[str, Any]) -> None:
        now = self._now()
        rejected = answer.get("rejected") or []
        for r in rejected[:20]:
            log.warning("sync %s: the district rejected an item: %s", stream, r)
        with Session(self.engine) as s:
            st = _state(s, stream)
            st.watermark = max(st.watermark, batch.to)
            st.pending_to = None
            st.attempts = 0
            st.failing_since = None
            st.next_attempt_at = None
            st.last_success_at = now
            st.sent += len(batch.items)
            st.rejected += len(rejected) if isinstance(rejected, list) else 0
            s.add(st)
            s.commit()
        log.info(
            "sync %s: %d items up to %d (stored %s, duplicates %s)",
            stream,
            len(batch.items),
            batch.to,
            answer.get("stored"),
            answer.get("duplicates"),
        )

    def _failed(
        self, stream: str, batch: Batch, e: SyncError, pending_to: int | None = None
    ) -> None:
        now = self._now()
        with Session(self.engine) as s:
            st = _state(s, stream)
            if pending_to is not None:  # the range to send again (under the same key)
                st.pending_to = pending_to
            st.attempts += 1
            st.failing_since = st.failing_since or now
            delay = backoff_delay(
                st.attempts, base=self.backoff_min_s, cap=self.backoff_max_s, rng=self._rng
            )
            st.next_attempt_at = now + timedelta(seconds=delay)
            st.last_error = str(e)[:500]
            st.last_error_at = now
            if e.status == 413 and len(batch.items) > 1:  # too large: send less at a time
                self._limit[stream] = max(1, len(batch.items) // 2)
                st.pending_to = None
            attempts = st.attempts
            s.add(st)
            s.commit()
        log.warning(
            "sync %s (%s): %s; attempt %d, next in %.1f s",
            stream,
            batch.key(self.office),
            e,
            attempts,
            delay,
        )

    def _check_alert(self) -> None:
        if self.alerts is None:
            return
        now = self._now()
        with Session(self.engine) as s:
            failing = [st for st in s.exec(select(SyncState)).all() if st.failing_since]
        if not failing:
            if self._alert_open is not False:
                self.alerts.on_sync(None)
                self._alert_open = False
            return
        since = min(_aware(st.failing_since) for st in failing if st.failing_since)
        failing_s = (now - since).total_seconds()
        # raised once, then seen again at most once a minute (each sighting is a write)
        again = self._alert_seen is None or time.monotonic() - self._alert_seen >= 60
        if failing_s >= self.alert_after_s and (not self._alert_open or again):
            self._alert_seen = time.monotonic()
            self.alerts.on_sync(
                failing_s,
                {
                    "since": since.isoformat(),
                    "district": self.url,
                    "streams": {st.stream: st.last_error for st in failing},
                },
            )
            self._alert_open = True


def _detail(r: httpx.Response) -> str:
    try:
        body = r.json()
        text = body.get("detail", body) if isinstance(body, dict) else body
    except ValueError:
        text = r.text
    return str(text)[:300] or r.reason_phrase
