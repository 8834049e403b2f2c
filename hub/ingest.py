"""Lossless ingest: MQTT -> validate -> commit -> acknowledge (DESIGN.md 4.1, 4.2, 4.7).

``Ingestor.process`` is a pure handler over ``(topic, payload)`` pairs and a database: it never raises
on input; anything invalid lands in the quarantine table with the reason. ``MqttIngest`` is the thin
paho-mqtt layer: persistent session, ``manual_ack=True``, and the broker's PUBACK only after commit.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, col, select

from hub import integrity, office, protocol
from hub.models import Desk, Heartbeat, Quarantine, Rating, Terminal, utcnow

log = logging.getLogger(__name__)

Publish = tuple[str, bytes]


@dataclass
class Result:
    """What one batch did: acknowledgements to publish and counts per outcome."""

    acks: list[Publish] = field(default_factory=list)
    commands: list[Publish] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    stored: list[NewRating] = field(default_factory=list)
    statuses: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    replies: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # command replies
    # statuses and replies together, in the order they arrived (an update rollout needs it: a
    # terminal replies to the command before it reboots and reports its new version)
    from_terminals: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    quarantined: list[tuple[str, str]] = field(default_factory=list)


# Statements run for every rating, in plain SQLite SQL: building them through the ORM cost several
# times the work itself (bench/ingest_throughput.py). Column names are the Rating table's.
_COLUMNS = (
    "terminal_id", "epoch", "seq", "office", "desk", "level", "scale", "reason", "flags",
    "press_time", "clock_unknown", "repeat", "test", "prompted", "received_at", "official_id",
    "case_id", "link_status", "raw", "chain",
)  # fmt: skip
_INSERT = (
    f"INSERT OR IGNORE INTO rating ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_COLUMNS))})"
)
_EXISTS = "SELECT raw FROM rating WHERE terminal_id = ? AND epoch = ? AND seq = ?"
MAX_QUARANTINED = 16384
_EXCLUDE = "INSERT INTO exclusion (rating_id, reason, actor, created_at) VALUES (?, ?, ?, ?)"


@dataclass(slots=True)
class NewRating:
    """A rating as ingest stored it (the row of the ``rating`` table, without the ORM)."""

    terminal_id: str
    epoch: int
    seq: int
    office: str
    desk: str | None
    level: int
    scale: int
    reason: int
    flags: int
    press_time: datetime
    clock_unknown: bool
    repeat: bool
    test: bool
    prompted: bool
    received_at: datetime
    official_id: str | None
    case_id: int | None
    link_status: str
    raw: bytes
    chain: str = ""
    id: int | None = None

    @property
    def followup(self) -> bool:
        """The reason given after a negative rating (the rating itself is the previous seq)."""
        return bool(self.flags & protocol.FLAG_FOLLOWUP)

    def params(self) -> tuple[object, ...]:
        db_time = office.db_time
        return tuple(
            db_time(v) if isinstance(v, datetime) else v
            for v in (getattr(self, c) for c in _COLUMNS)
        )


@dataclass(frozen=True)
class _Known:
    epoch: int
    hub_key: bytes
    desk: str | None
    active: bool


class Ingestor:
    def __init__(
        self, engine: Engine, office: str, *, case_window: timedelta = timedelta(minutes=10)
    ):
        self.engine = engine
        self.office = office
        self.case_window = case_window
        self.totals: Counter[str] = Counter()
        self._terminals: dict[str, _Known] = {}
        self._heads: dict[str, str] = {}  # terminal -> hash-chain head of its stored ratings
        self._desks_requiring_case: set[str] = set()
        self.reload_terminals()

    def reload_terminals(self) -> None:
        with Session(self.engine) as s:
            rows = s.exec(select(Terminal).where(Terminal.office == self.office)).all()
            desks = s.exec(
                select(Desk.id).where(Desk.office == self.office, Desk.requires_case)
            ).all()
        self._terminals = {
            t.id: _Known(t.epoch, bytes.fromhex(t.hub_key), t.desk, t.active) for t in rows
        }
        self._desks_requiring_case = set(desks)

    def _terminal(self, tid: str) -> _Known | None:
        if tid not in self._terminals:
            self.reload_terminals()  # registered since we last looked
        return self._terminals.get(tid)

    def process(self, messages: list[tuple[str, bytes]]) -> Result:
        res = Result()
        acked: dict[tuple[str, int], list[int]] = defaultdict(list)
        try:
            with Session(self.engine) as s:
                for t, payload in messages:
                    self._one(s, t, payload, res, acked)
                s.commit()
        except Exception:
            self._heads.clear()  # the transaction is gone: chain heads are read again from the db
            raise
        for (tid, epoch), seqs in acked.items():
            res.acks.append(
                (protocol.topic(self.office, tid, "ack"), protocol.encode_ack(epoch, seqs))
            )
        self.totals.update(res.counts)
        return res

    def process_each(self, messages: list[tuple[str, bytes]]) -> Result:
        """Like ``process``, one message per transaction; a message that still makes the hub fail
        is quarantined on its own, so one poison message cannot stall the office's ingest. Database
        errors (locked, disk full) are raised: then nothing is acknowledged and the batch is retried."""
        total = Result()
        for t, payload in messages:
            try:
                res = self.process([(t, payload)])
            except DBAPIError:
                raise
            except Exception as e:
                log.exception("message on %s made ingest fail; quarantining it", t)
                res = Result()
                with Session(self.engine) as s:
                    self._quarantine(s, t, payload, f"hub could not process it: {e!r}"[:500], res)
                    s.commit()
                self.totals.update(res.counts)
            total.acks += res.acks
            total.commands += res.commands
            total.counts.update(res.counts)
            total.stored += res.stored
            total.statuses += res.statuses
            total.replies += res.replies
            total.from_terminals += res.from_terminals
            total.quarantined += res.quarantined
        return total

    def _quarantine(self, s: Session, t: str, payload: bytes, reason: str, res: Result) -> None:
        log.warning("quarantined message on %s: %s", t, reason)
        if len(payload) > MAX_QUARANTINED:  # a flood of huge messages must not fill the SD card
            reason = f"{reason} (first {MAX_QUARANTINED} of {len(payload)} bytes kept)"
            payload = payload[:MAX_QUARANTINED]
        s.add(Quarantine(topic=t[:512], reason=reason, payload=payload))
        res.counts["quarantined"] += 1
        res.quarantined.append((t, reason))

    def _one(
        self,
        s: Session,
        t: str,
        payload: bytes,
        res: Result,
        acked: dict[tuple[str, int], list[int]],
    ) -> None:
        try:
            topic_office, tid, leaf = protocol.parse_topic(t)
            if topic_office != self.office:
                raise protocol.ProtocolError(
                    f"office {topic_office!r} is not this hub's ({self.office!r})"
                )
            if len(payload) > protocol.MAX_PAYLOAD:
                raise protocol.ProtocolError(f"payload of {len(payload)} bytes is over the limit")
            known = self._terminal(tid)
            if known is None or not known.active:
                raise protocol.ProtocolError(f"terminal {tid} is not registered or not active")
        except protocol.ProtocolError as e:
            self._quarantine(s, t, payload, str(e), res)
            return
        if leaf == "rating":
            self._rating(s, t, tid, known, payload, res, acked)
        elif leaf == "status":
            self._status(s, t, tid, payload, res)
        else:
            res.counts["replies"] += 1
            try:  # handed to whoever waits for it (an update rollout); nothing is stored
                reply = json.loads(payload.decode("utf-8"))
            except (ValueError, RecursionError):
                log.warning("unreadable command reply on %s", t)
                return
            if isinstance(reply, dict):
                res.replies.append((tid, reply))
                res.from_terminals.append(("reply", tid, reply))

    def _rating(
        self,
        s: Session,
        t: str,
        tid: str,
        known: _Known,
        payload: bytes,
        res: Result,
        acked: dict[tuple[str, int], list[int]],
    ) -> None:
        try:
            r = protocol.decode_rating(payload)
        except protocol.ProtocolError as e:
            self._quarantine(s, t, payload, str(e), res)
            return
        reason = None
        if r.epoch != known.epoch:
            reason = f"epoch {r.epoch} is not the terminal's current epoch {known.epoch}"
        elif not protocol.verify_tag(known.hub_key, tid, r.body, r.hub_tag):
            reason = "hub HMAC tag does not verify (forged or corrupted)"
        if reason:
            self._quarantine(s, t, payload, reason, res)
            res.acks.append(
                (
                    protocol.topic(self.office, tid, "ack"),
                    protocol.encode_ack(r.epoch, [r.seq], "rejected", reason),
                )
            )
            return
        conn = s.connection()
        same_key = conn.exec_driver_sql(_EXISTS, (tid, r.epoch, r.seq)).first()
        if same_key is not None:
            if bytes(same_key[0]) != payload:
                # Validly signed, but a different rating under a stored key: the terminal reused a
                # sequence number (lost flash?). Keep it for inspection; the stored one stands.
                self._quarantine(
                    s, t, payload, "sequence number reused with different content", res
                )
            else:
                res.counts["duplicates"] += 1  # already stored: acknowledged again, not twice
            acked[(tid, r.epoch)].append(r.seq)
            return
        now = utcnow()
        press = now if r.clock_unknown else datetime.fromtimestamp(r.press_time, UTC)
        official = case_id = None
        link = office.NOT_LINKED
        if known.desk is not None:
            # Press times have one-second resolution: a press in the same second as a check-in or
            # a hand-back came after it.
            at = press if r.clock_unknown else press + timedelta(seconds=1)
            official = office.on_duty(s, desk_id=known.desk, at=at)
            # Repeats, test presses and presses stamped only on arrival (no clock: maybe hours
            # late) never take a case from the citizen at the desk now.
            if not (r.repeat or r.test or r.clock_unknown or r.followup):
                case_id, link = office.link_case(
                    s, desk_id=known.desk, press_time=at, window=self.case_window
                )
        row = NewRating(
            terminal_id=tid, epoch=r.epoch, seq=r.seq, office=self.office, desk=known.desk,
            level=r.level, scale=r.scale, reason=r.reason, flags=r.flags, press_time=press,
            clock_unknown=r.clock_unknown, repeat=r.repeat, test=r.test, prompted=r.prompted,
            received_at=now, official_id=official, case_id=case_id, link_status=link, raw=payload,
        )  # fmt: skip
        row.chain = integrity.chain_link(self._head(s, tid), row)
        result = conn.exec_driver_sql(_INSERT, row.params())
        if not result.rowcount:  # cannot happen with one writer; never count it twice
            res.counts["duplicates"] += 1
            acked[(tid, r.epoch)].append(r.seq)
            return
        row.id = result.lastrowid
        self._heads[tid] = row.chain
        for reason_code in self._auto_exclusions(row, known):
            conn.exec_driver_sql(
                _EXCLUDE, (row.id, reason_code, office.HUB_ACTOR, office.db_time(now))
            )
        res.counts["stored"] += 1
        res.stored.append(row)
        acked[(tid, r.epoch)].append(r.seq)

    def _head(self, s: Session, tid: str) -> str:
        if tid not in self._heads:
            last = s.exec(
                select(Rating.chain)
                .where(Rating.terminal_id == tid)
                .order_by(col(Rating.id).desc())
                .limit(1)
            ).first()
            self._heads[tid] = last or ""
        return self._heads[tid]

    def _auto_exclusions(self, row: NewRating, known: _Known) -> list[str]:
        out = []
        if row.followup:
            out.append("reason_followup")  # a reason for the rating before it, not a rating
        if row.repeat:
            out.append("repeat")
        if row.test:
            out.append("test")
        if row.link_status == office.ALREADY_RATED:
            out.append("second_for_case")
        if row.link_status == office.NO_CASE and known.desk in self._desks_requiring_case:
            out.append("no_case_required")
        if row.clock_unknown:
            out.append("clock_unknown")
        return out

    def _status(self, s: Session, t: str, tid: str, payload: bytes, res: Result) -> None:
        try:
            text = payload.decode("utf-8")  # json.loads(bytes) would also take UTF-16 and -32
            st = json.loads(text)
            if not isinstance(st, dict) or type(st.get("v")) is not int or st["v"] != 1:
                raise ValueError("not a v1 status object")
        except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
            self._quarantine(s, t, payload, f"bad status: {e}", res)
            return
        term = s.get(Terminal, tid)
        if term is not None:
            term.last_seen = utcnow()
            term.last_status = text
            if st.get("state") == "online":
                if _signed_changed(term.last_heartbeat, st):  # the district's gap evidence
                    s.add(_heartbeat_row(tid, st, text))
                term.last_heartbeat = (
                    text  # kept through "offline": verify needs its signed last_seq
                )
            s.add(term)
        if st.get("clock") is False:  # the terminal has no time yet: give it ours
            cmd = protocol.encode_command(
                f"time-{int(time.time())}", "time", {"time": int(time.time())}
            )
            res.commands.append((protocol.topic(self.office, tid, "cmd"), cmd))
        res.statuses.append((tid, st))
        res.from_terminals.append(("status", tid, st))
        res.counts["status"] += 1


def _signed(st: dict[str, Any]) -> tuple[int, int] | None:
    epoch, seq = st.get("epoch"), st.get("last_seq")
    if type(epoch) is not int or type(seq) is not int:
        return None
    return epoch, seq


def _signed_changed(previous: str | None, st: dict[str, Any]) -> bool:
    """Whether this heartbeat signs another (epoch, last_seq) than the terminal's last one."""
    now = _signed(st)
    if now is None or type(st.get("time")) is not int:
        return False
    try:
        before = json.loads(previous) if previous else None
    except ValueError:
        before = None
    return not isinstance(before, dict) or _signed(before) != now


def _heartbeat_row(tid: str, st: dict[str, Any], text: str) -> Heartbeat:
    dtag = st.get("dtag")
    return Heartbeat(
        terminal_id=tid,
        epoch=st["epoch"],
        last_seq=st["last_seq"],
        time=st["time"],
        dtag=dtag if isinstance(dtag, str) else "",
        status=text,
    )


def nodelay(_c: mqtt.Client, _ud: object, sock: object) -> None:
    """paho leaves Nagle's algorithm on: small acks would wait for the peer's delayed ACK."""
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class MqttIngest:
    """paho-mqtt 2.x subscriber feeding an :class:`Ingestor` in batches.

    A writer thread takes whatever has arrived (up to ``max_batch``) without waiting for more, so a
    lone rating is committed at once and a burst shares one commit. After the commit it publishes the
    hub's acks and only then PUBACKs to the broker; a crash in between means redelivery, which the
    unique rating key turns into a re-ack.

    Two connections (bench/ingest_throughput.py): the subscriber, whose queue is bounded, and a
    publisher for acks and commands. Mosquitto 2.0.11 does not hold the hub's session to
    ``max_inflight_messages`` once PUBACKs flow, so after a hub outage it pushes the whole backlog
    at once: a full queue makes paho's network thread wait, and the rest stays in the broker (TCP
    back-pressure) instead of in the hub's memory. That thread, reading the backlog or waiting,
    would also hold back everything sent on its connection; the acks go out on their own.
    """

    def __init__(
        self,
        ingestor: Ingestor,
        *,
        host: str,
        port: int,
        user: str,
        password: str,
        max_batch: int = 256,
        on_result: Callable[[Result], None] | None = None,
    ):
        self.ingestor = ingestor
        self.max_batch = max_batch
        self.on_result = on_result
        self.host, self.port = host, port
        self.connected = threading.Event()
        self._q: queue.Queue[mqtt.MQTTMessage] = queue.Queue(maxsize=4 * max_batch)
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None
        office = ingestor.office
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"sipas-hub-{office}",
            clean_session=False,
            manual_ack=True,
        )
        self.client.username_pw_set(user, password)
        self.client.max_inflight_messages_set(100)
        self.client.on_connect = self._on_connect
        self.client.on_socket_open = nodelay
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.on_subscribed: Callable[[], None] | None = None
        self.client.reconnect_delay_set(1, 5)
        self.publisher = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"sipas-hub-{office}-out"
        )
        self.publisher.username_pw_set(user, password)
        self.publisher.max_inflight_messages_set(1000)
        self.publisher.on_socket_open = nodelay
        self.publisher.reconnect_delay_set(1, 5)

    def publish(self, topic: str, payload: bytes) -> None:
        """Send to a terminal (QoS 1) on the hub's outgoing connection."""
        self.publisher.publish(topic, payload, qos=1)

    def _on_connect(
        self, client: mqtt.Client, _ud: object, _flags: object, rc: object, _props: object = None
    ) -> None:
        if getattr(rc, "is_failure", False):
            log.error("broker refused the hub: %s", rc)
            return
        office = self.ingestor.office
        client.subscribe(
            [(protocol.topic(office, "+", leaf), 1) for leaf in ("rating", "status", "reply")]
        )
        self.connected.set()

    def _on_subscribe(self, *_a: object) -> None:
        if self.on_subscribed is not None:
            self.on_subscribed()  # e.g. have the broker save the session now

    def _on_disconnect(self, *_a: object) -> None:
        self.connected.clear()

    def _on_message(self, _c: mqtt.Client, _ud: object, msg: mqtt.MQTTMessage) -> None:
        while not self._stop.is_set():
            try:
                self._q.put(msg, timeout=0.5)
                return
            except queue.Full:  # the writer is behind: the broker keeps the rest meanwhile
                continue
        # stopping: not acknowledged, so the broker delivers it again

    def start(self) -> None:
        self.publisher.connect_async(self.host, self.port, keepalive=30)
        self.publisher.loop_start()
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        self._writer = threading.Thread(target=self._write_loop, name="hub-ingest", daemon=True)
        self._writer.start()

    def stop(self) -> None:
        self._stop.set()
        if self._writer:
            self._writer.join(timeout=10)
        for c in (self.client, self.publisher):
            c.disconnect()
            c.loop_stop()

    def _write_loop(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._q.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._q.get_nowait())
                except queue.Empty:
                    break
            self._commit(batch)

    def _commit(self, batch: list[mqtt.MQTTMessage]) -> None:
        messages = [(m.topic, bytes(m.payload)) for m in batch]
        while not self._stop.is_set():
            try:
                try:
                    res = self.ingestor.process(messages)
                except DBAPIError:
                    raise
                except Exception:  # not the database: find and quarantine the message at fault
                    log.exception("batch failed; processing its messages one by one")
                    res = self.ingestor.process_each(messages)
                break
            except DBAPIError:  # database trouble: nothing is acknowledged, try again
                log.exception("commit failed; retrying in 1 s (nothing acknowledged)")
                self._stop.wait(1)
        else:
            return  # stopping: unacknowledged messages are redelivered by the broker
        for t, payload in res.acks + res.commands:
            self.publish(t, payload)
        for m in batch:
            self.client.ack(m.mid, m.qos)
        if self.on_result:
            self.on_result(res)
