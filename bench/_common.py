"""Shared machinery of the hub benchmarks: a bench-owned Mosquitto, the hub in its own process, and a
load generator of many terminals in another process.

Process layout (2 cores are enough):

- the bench process owns the Mosquitto (``hub.broker.Mosquitto``, the hub's own configuration code,
  on a free loopback port) so that a baseline subscriber and the hub can be run one after the other
  on the *same* broker;
- the hub runs as ``HubService(manage_broker=False, api off)`` in its own process, as it does on the
  office's Raspberry Pi: its CPU time is not shared with the load generator's interpreter lock, and
  its resident memory (VmHWM) is its own;
- the load generator is one more process: raw sockets, every CONNECT and PUBLISH packet encoded
  before the clock starts (records signed by ``firmware/app/codec.encode_rating``, packets built by
  ``firmware/app/mqtt``), one epoll loop over all the terminal connections.

Times are ``time.monotonic()`` (CLOCK_MONOTONIC, the same clock in every process of the machine).
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing as mp
import os
import secrets
import selectors
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from hub import protocol, registry  # noqa: E402
from hub.broker import Mosquitto, find_free_port  # noqa: E402
from hub.db import make_engine  # noqa: E402

HUB_USER = "sipas-hub"
_SPAWN = mp.get_context("spawn")  # a fresh interpreter: the hub's memory is only the hub's

log = logging.getLogger("bench")


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def summary(ms: list[float]) -> dict[str, float]:
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {
        "p50": round(q[49], 3),
        "p99": round(q[98], 3),
        "mean": round(statistics.fmean(ms), 3),
        "min": round(min(ms), 3),
        "max": round(max(ms), 3),
    }


def proc_mb(pid: int, field: str = "VmHWM") -> float | None:
    """A memory figure of process ``pid`` from /proc/PID/status, in MB (VmHWM: peak resident)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds used so far by process ``pid``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class TimedAutosaveMosquitto(Mosquitto):
    """The hub's broker configuration, but saving its database every ``seconds`` instead of after
    every change (``--autosave-seconds``: to compare; the hub itself does not do this)."""

    def __init__(self, *a: Any, seconds: int, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.seconds = seconds

    def _config_text(self) -> str:
        text = super()._config_text()
        for old, new in (
            ("autosave_on_changes true", "autosave_on_changes false"),
            ("autosave_interval 1\n", f"autosave_interval {self.seconds}\n"),
        ):
            if old not in text:
                raise SystemExit(f"--autosave-seconds: {old!r} not in the hub's broker config")
            text = text.replace(old, new)
        return text


# -- the office: database with registered terminals, and its broker ------------------------------


PRESS_SPACING_S = 300  # seconds between two presses of one terminal (a busy desk: 12 an hour)


def press_time(t_end: int, count: int, seq: int) -> int:
    """Press time of rating ``seq`` of ``count`` of a terminal whose last press is at ``t_end``."""
    return t_end - (count - seq) * PRESS_SPACING_S


def level(seq: int) -> int:
    """Level of press ``seq`` on the 3-level scale: 70 % Rất hài lòng, 25 % Hài lòng, 5 % Không
    hài lòng (each of those is an alert of the hub's default rules)."""
    r = seq % 20
    return 1 if r < 14 else 2 if r < 19 else 3


class Office:
    """A hub data directory with ``n`` registered terminals and a Mosquitto configured for them by
    the hub's own code; the hub itself is started separately (:class:`HubProcess`).

    With ``counts`` (ratings per terminal to come), the office's own records are filled in as on a
    working day, so that tagging does its real work: one desk per terminal with an official
    checked in, and a case handed back 30 s before each press except every tenth (a press without
    a case: "case already rated").
    """

    def __init__(
        self,
        workdir: Path,
        terminals: int,
        office: str = "bench",
        counts: list[int] | None = None,
        autosave_seconds: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.office = office
        self.t_end = int(time.time()) - 60
        self.data_dir = workdir / "hub"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.db_url = f"sqlite:///{self.data_dir / 'hub.sqlite3'}"
        self.hub_password = secrets.token_urlsafe(24)
        self.port = find_free_port()
        engine = make_engine(self.db_url)
        try:
            self.devices: list[dict[str, Any]] = []
            for i in range(terminals):
                _, device = registry.add_terminal(engine, office=office, desk=f"quay-{i + 1}")
                device.update(broker_host="127.0.0.1", broker_port=self.port)
                self.devices.append(device)
            accounts = registry.broker_accounts(engine, office)
            if counts is not None:
                self._office_records(engine, counts)
        finally:
            engine.dispose()
        if autosave_seconds is None:
            self.broker = Mosquitto(workdir / "mosquitto", port=self.port, office=office)
        else:
            self.broker = TimedAutosaveMosquitto(
                workdir / "mosquitto", port=self.port, office=office, seconds=autosave_seconds
            )
        self.broker.write_config(HUB_USER, self.hub_password, accounts)

    def _office_records(self, engine: Any, counts: list[int]) -> None:
        from datetime import UTC, datetime, timedelta

        from sqlmodel import Session

        from hub.models import Case, Desk, DutyEvent, Official

        def utc(t: int) -> datetime:
            return datetime.fromtimestamp(t, UTC)

        start = utc(self.t_end - max(counts) * PRESS_SPACING_S - 7200)
        with Session(engine) as s:
            for i, count in enumerate(counts):
                desk, official = f"quay-{i + 1}", f"cb-{i + 1}"
                s.add(Desk(id=desk, office=self.office, name=f"Quầy {i + 1}"))
                s.add(Official(id=official, office=self.office, name=f"Cán bộ {i + 1}"))
                s.add(
                    DutyEvent(
                        office=self.office,
                        desk_id=desk,
                        official_id=official,
                        kind="in",
                        at=start,
                        actor="bench",
                    )
                )
                for seq in range(1, count + 1):
                    if seq % 10:
                        s.add(
                            Case(
                                office=self.office,
                                code=f"{desk}-{seq:05d}",
                                desk_id=desk,
                                official_id=official,
                                handed_back_at=utc(press_time(self.t_end, count, seq))
                                - timedelta(seconds=30),
                                actor="bench",
                            )
                        )
            s.commit()

    def link_statuses(self) -> dict[str, int]:
        import sqlite3

        with contextlib.closing(sqlite3.connect(self.db_url.removeprefix("sqlite:///"))) as db:
            try:
                q = "SELECT link_status, count(*) FROM rating GROUP BY link_status"
                return {str(k): int(v) for k, v in db.execute(q)}
            except sqlite3.Error:
                return {}

    def hub_settings(self) -> dict[str, Any]:
        return {
            "office": self.office,
            "data_dir": self.data_dir,
            "mqtt_host": "127.0.0.1",
            "mqtt_port": self.port,
            "manage_broker": False,
            "mqtt_user": HUB_USER,
            "mqtt_password": self.hub_password,
            "api_port": find_free_port(),
            "api_token": secrets.token_urlsafe(16),
        }

    def broker_autosave(self) -> str:
        """The broker's save policy, as its generated configuration says."""
        conf = dict(
            line.split(None, 1)
            for line in self.broker.config_path.read_text().splitlines()
            if line.startswith("autosave_")
        )
        n = conf.get("autosave_interval", "1800").strip()
        if conf.get("autosave_on_changes", "false").strip() == "true":
            return f"after every {n} change(s)"
        return f"every {n} s"

    def broker_saves(self) -> int:
        """How many times Mosquitto has written its database so far (from its log)."""
        try:
            return self.broker.log_path.read_text(errors="replace").count("Saving in-memory")
        except OSError:
            return 0

    def count_ratings(self) -> int:
        import sqlite3

        with contextlib.closing(sqlite3.connect(self.db_url.removeprefix("sqlite:///"))) as db:
            return int(db.execute("SELECT count(*) FROM rating").fetchone()[0])

    def __enter__(self) -> Office:
        self.broker.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.broker.stop()


# -- the hub in its own process ------------------------------------------------------------------


def _hub_main(conn: Connection, settings_kw: dict[str, Any]) -> None:
    """Child process: HubService without API; answers "stats" and "stop" on the pipe."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from hub.config import Settings
    from hub.ingest import Result
    from hub.service import HubService

    lock = threading.Lock()
    st: dict[str, Any] = {
        "batches": 0,
        "messages": 0,
        "stored": 0,
        "duplicates": 0,
        "quarantined": 0,
        "acks_published": 0,
        "max_batch": 0,
        "t_first_commit": None,
        "t_last_commit": None,
    }

    def on_result(res: Result) -> None:
        now = time.monotonic()
        size = sum(res.counts.values())
        with lock:
            st["batches"] += 1
            st["messages"] += size
            st["max_batch"] = max(st["max_batch"], size)
            for k in ("stored", "duplicates", "quarantined"):
                st[k] += res.counts.get(k, 0)
            st["acks_published"] += len(res.acks)
            if st["t_first_commit"] is None:
                st["t_first_commit"] = now
            if res.counts.get("stored"):
                st["t_last_commit"] = now

    hub = HubService(Settings(**settings_kw), on_result=on_result)
    hub.start(api=False)
    conn.send(("ready", os.getpid()))
    try:
        while True:
            if not conn.poll(60):
                break  # the bench went away: do not linger
            cmd = conn.recv()
            if cmd == "stats":
                with lock:
                    out = dict(st)
                client = getattr(
                    hub.ingest, "publisher", hub.ingest.client
                )  # paho internals, for diagnosis only
                out["paho_out_queue"] = len(getattr(client, "_out_messages", ()))
                out["paho_inflight"] = getattr(client, "_inflight_messages", None)
                out["hub_queue"] = hub.ingest._q.qsize()
                out["vm_rss_mb"] = proc_mb(os.getpid(), "VmRSS")
                conn.send(out)
            elif cmd == "stop":
                break
    finally:
        hub.stop()
        with lock:
            final = dict(st)
        final["vm_hwm_mb"] = proc_mb(os.getpid(), "VmHWM")
        final["vm_rss_mb"] = proc_mb(os.getpid(), "VmRSS")
        with contextlib.suppress(OSError):
            conn.send(final)


class HubProcess:
    """The hub (HubService, API off) in a spawned interpreter."""

    def __init__(self, settings_kw: dict[str, Any]) -> None:
        self._conn, child = _SPAWN.Pipe()
        self.proc = _SPAWN.Process(
            target=_hub_main, args=(child, settings_kw), name="sipas-hub", daemon=True
        )
        self.pid: int | None = None
        self.last: dict[str, Any] = {}

    def start(self, timeout: float = 30) -> None:
        self.proc.start()
        if not self._conn.poll(timeout):
            raise SystemExit("the hub process did not start")
        _, self.pid = self._conn.recv()

    def stats(self) -> dict[str, Any]:
        self._conn.send("stats")
        if not self._conn.poll(10):
            raise SystemExit("the hub process does not answer")
        out: dict[str, Any] = self._conn.recv()
        self.last = out
        return out

    def peak_rss_mb(self) -> float | None:
        return proc_mb(self.pid, "VmHWM") if self.pid else None

    def wait_stored(self, n: int, timeout: float, every: float = 0.05) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            st = self.stats()
            if st["stored"] + st["duplicates"] >= n or time.monotonic() > deadline:
                return st
            time.sleep(every)

    def stop(self) -> dict[str, Any]:
        final: dict[str, Any] = {}
        with contextlib.suppress(OSError, EOFError):
            self._conn.send("stop")
            if self._conn.poll(20):
                final = self._conn.recv()
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        return final


# -- load generator: many terminals over raw sockets, in its own process --------------------------


class _Term:
    __slots__ = (
        "tid",
        "sock",
        "rbuf",
        "out",
        "pkts",
        "seqs",
        "next",
        "inflight",
        "pubacked",
        "acked",
        "rejected",
    )

    def __init__(self, tid: str, pkts: list[bytes], seqs: list[int]) -> None:
        self.tid = tid
        self.sock: socket.socket | None = None
        self.rbuf = bytearray()
        self.out = bytearray()
        self.pkts = pkts
        self.seqs = seqs
        self.next = 0
        self.inflight = 0
        self.pubacked = 0
        self.acked: set[int] = set()
        self.rejected = 0


def _gen_main(conn: Connection, spec: dict[str, Any]) -> None:
    """Child process: connect every terminal, wait for "go", publish, report."""
    sys.path.insert(0, str(ROOT / "firmware"))
    from app import codec
    from app import mqtt as fw

    host, port, office = spec["host"], spec["port"], spec["office"]
    window: int = spec["window"]
    rate: float | None = spec.get("rate")
    expect_acks: bool = spec["expect_acks"]
    # Like the firmware (max_inflight): the window counts ratings without the hub's ack, not
    # publishes without the broker's PUBACK.
    hub_window: bool = spec.get("hub_window", False)
    t_end: int = spec["t_end"]
    terms: list[_Term] = []
    for d, count in zip(spec["devices"], spec["counts"], strict=True):
        tid, hk, dk = (
            d["terminal_id"],
            bytes.fromhex(d["hub_key"]),
            bytes.fromhex(d["district_key"]),
        )
        t_rating = protocol.topic(office, tid, "rating")
        seqs = list(range(1, count + 1))
        pkts = [
            fw.encode_publish(
                t_rating,
                codec.encode_rating(
                    tid, hk, dk, 0, d["epoch"], s, press_time(t_end, count, s), level(s), 0, 3
                ),
                qos=1,
                pid=(s - 1) % 65535 + 1,
            )
            for s in seqs
        ]
        terms.append(_Term(tid, pkts, seqs))

    # Connect and subscribe each terminal to its ack topic (blocking, before the clock starts).
    sub_pid = 65535  # never used by a publish of these runs (at most 65534 ratings per terminal)
    for d, t in zip(spec["devices"], terms, strict=True):
        s = socket.create_connection((host, port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(fw.encode_connect(t.tid, t.tid, d["mqtt_password"], keepalive=0, clean=True))
        s.sendall(fw.encode_subscribe(sub_pid, protocol.topic(office, t.tid, "ack"), 1))
        buf = bytearray()
        got = set()
        while got != {0x20, 0x90}:
            chunk = s.recv(4096)
            if not chunk:
                raise SystemExit(f"broker closed the connection of {t.tid}")
            buf.extend(chunk)
            while (b := fw.packet_bounds(buf)) is not None and b[2] <= len(buf):
                if b[0] == 0x20 and buf[b[1] + 1]:
                    raise SystemExit(f"broker refused {t.tid}: rc {buf[b[1] + 1]}")
                got.add(b[0] & 0xF0)
                del buf[: b[2]]
        s.setblocking(False)
        t.sock = s
    conn.send(("ready", os.getpid()))
    if conn.recv() != "go":
        return

    sel = selectors.DefaultSelector()
    for t in terms:
        assert t.sock is not None
        sel.register(t.sock, selectors.EVENT_READ, t)
    total = sum(len(t.pkts) for t in terms)
    writing: set[_Term] = set()
    last_ack: list[float | None] = [None]
    n_acks = 0
    sent = 0

    def flush(t: _Term) -> None:
        assert t.sock is not None
        if t.out:
            try:
                n = t.sock.send(t.out)
            except BlockingIOError:
                n = 0
            del t.out[:n]
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if t.out else 0)
        if (t in writing) != bool(t.out):
            sel.modify(t.sock, want, t)
            (writing.add if t.out else writing.discard)(t)

    def send_one(t: _Term, now: float) -> None:
        nonlocal sent
        t.out += t.pkts[t.next]
        t.next += 1
        t.inflight += 1
        sent += 1

    def on_packet(t: _Term, buf: bytearray, first: int, start: int, end: int, now: float) -> None:
        nonlocal n_acks
        kind = first & 0xF0
        if kind == 0x40:  # PUBACK from the broker
            t.pubacked += 1
            if not hub_window:
                t.inflight -= 1
        elif kind == 0x30:  # the hub's ack
            _topic, payload, qos, pid, _ = fw.parse_publish(buf)
            if qos:
                t.out += fw.encode_puback(pid)
            msg = json.loads(payload)
            n_acks += 1
            if msg.get("status") != "stored":
                t.rejected += len(msg["seqs"])
            for s in msg["seqs"]:
                if s not in t.acked:
                    t.acked.add(s)
                    last_ack[0] = now
                    if hub_window:
                        t.inflight -= 1

    def done() -> bool:
        if any(t.next < len(t.pkts) or t.inflight or t.pubacked < t.next for t in terms):
            return False
        return not expect_acks or all(len(t.acked) == len(t.pkts) for t in terms)

    deadline = time.monotonic() + spec["timeout"]
    t0 = time.monotonic()
    t_all_sent = t_all_pubacked = t_all_acked = None
    stopped = False
    rr = 0  # round robin position for the rate-limited mode
    while time.monotonic() < deadline and not stopped:
        now = time.monotonic()
        if rate is None:
            for t in terms:
                while t.inflight < window and t.next < len(t.pkts):
                    send_one(t, now)
                if t.out:
                    flush(t)
        else:
            due = min(total, int((now - t0) * rate) + 1)
            while sent < due:
                for _ in range(len(terms)):
                    t = terms[rr]
                    rr = (rr + 1) % len(terms)
                    if t.inflight < window and t.next < len(t.pkts):
                        send_one(t, now)
                        flush(t)
                        break
                else:
                    break  # every terminal is at its window: wait for acks
        if t_all_sent is None and sent == total and not writing:
            t_all_sent = time.monotonic()
        if rate is None:
            timeout = 0.5
        else:
            timeout = max(0.0, min(0.5, t0 + (sent + 1) / rate - time.monotonic()))
        for key, mask in sel.select(timeout):
            t = key.data
            if mask & selectors.EVENT_WRITE:
                flush(t)
            if mask & selectors.EVENT_READ:
                try:
                    data = t.sock.recv(65536)
                except BlockingIOError:
                    continue
                if not data:
                    raise SystemExit(f"broker closed the connection of {t.tid}")
                now = time.monotonic()
                t.rbuf += data
                buf = t.rbuf
                while (b := fw.packet_bounds(buf)) is not None and b[2] <= len(buf):
                    on_packet(t, buf, b[0], b[1], b[2], now)
                    del buf[: b[2]]
                if t.out:
                    flush(t)
        if t_all_pubacked is None and sum(t.pubacked for t in terms) == total:
            t_all_pubacked = time.monotonic()
        if done():
            t_all_acked = time.monotonic()
            break
        if conn.poll(0) and conn.recv() == "stop":
            stopped = True
    for t in terms:
        with contextlib.suppress(OSError):
            assert t.sock is not None
            t.sock.setblocking(True)
            t.sock.sendall(fw.DISCONNECT)
            t.sock.close()
    conn.send(
        {
            "t_first_publish": t0,
            "t_all_sent": t_all_sent,
            "t_all_pubacked": t_all_pubacked,
            "t_all_hub_acked": t_all_acked if expect_acks else None,
            "t_last_ack": last_ack[0],
            "published": sent,
            "pubacked": sum(t.pubacked for t in terms),
            "hub_acks_received": n_acks,
            "seqs_acked": sum(len(t.acked) for t in terms),
            "seqs_rejected": sum(t.rejected for t in terms),
        }
    )


class LoadGen:
    """Terminals publishing pre-signed ratings from their own process.

    ``rate=None``: every terminal keeps ``window`` publishes waiting for the broker's PUBACK, as
    fast as the broker takes them (a backlog for the subscriber to drain); with ``hub_window``,
    ``window`` ratings waiting for the hub's ack, as the firmware does. ``rate``: that many
    ratings per second in total, round robin over the terminals.
    """

    def __init__(
        self,
        office: Office,
        devices: list[dict[str, Any]],
        per_terminal: int | list[int],
        *,
        window: int = 8,
        rate: float | None = None,
        expect_acks: bool = True,
        hub_window: bool = False,
        timeout: float = 120,
    ) -> None:
        counts = per_terminal if isinstance(per_terminal, list) else [per_terminal] * len(devices)
        spec = {
            "host": "127.0.0.1",
            "port": office.port,
            "office": office.office,
            "devices": devices,
            "counts": counts,
            "window": window,
            "rate": rate,
            "expect_acks": expect_acks,
            "hub_window": hub_window,
            "timeout": timeout,
            "t_end": office.t_end,
        }
        self.total = sum(counts)
        self._conn, child = _SPAWN.Pipe()
        self.proc = _SPAWN.Process(
            target=_gen_main, args=(child, spec), name="loadgen", daemon=True
        )
        self.timeout = timeout

    def connect(self, timeout: float = 60) -> None:
        """Start the process: it signs every record and connects every terminal, then waits."""
        self.proc.start()
        if not self._conn.poll(timeout):
            raise SystemExit("the load generator did not connect its terminals")
        self._conn.recv()

    def go(self) -> None:
        self._conn.send("go")

    def wait(self, timeout: float) -> bool:
        """Whether the generator has finished (its report is ready) within ``timeout`` seconds."""
        return self._conn.poll(max(0.0, timeout))

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send("stop")

    def report(self, timeout: float | None = None) -> dict[str, Any]:
        if not self._conn.poll(self.timeout + 10 if timeout is None else timeout):
            self.proc.terminate()
            raise SystemExit("the load generator did not finish")
        out: dict[str, Any] = self._conn.recv()
        self.proc.join(10)
        return out


def split(n: int, parts: int) -> list[int]:
    """``n`` as ``parts`` nearly equal counts."""
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


# -- bare paho clients, the baselines ------------------------------------------------------------


def paho_client(office: Office, name: str, **kw: Any) -> mqtt.Client:
    from hub.ingest import nodelay

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{name}", **kw)
    c.username_pw_set(HUB_USER, office.hub_password)
    c.on_socket_open = nodelay
    return c


class BareSubscriber:
    """Subscribes to every terminal's rating topic at QoS 1, counts and discards."""

    def __init__(self, office: Office, expect: int) -> None:
        self.expect = expect
        self.count = 0
        self.t_last: float | None = None
        self.done = threading.Event()
        subscribed = threading.Event()
        self.client = c = paho_client(office, "bare")
        c.on_subscribe = lambda *_a: subscribed.set()
        c.on_message = self._on_message
        c.connect("127.0.0.1", office.port)
        c.loop_start()
        c.subscribe(protocol.topic(office.office, "+", "rating"), qos=1)
        if not subscribed.wait(10):
            raise SystemExit("the bare subscriber was not subscribed")

    def _on_message(self, _c: mqtt.Client, _u: object, _m: mqtt.MQTTMessage) -> None:
        self.count += 1
        if self.count >= self.expect:
            self.t_last = time.monotonic()
            self.done.set()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def raw_round_trip(office: Office, samples: int, interval: float = 0.0) -> list[float]:
    """Bare paho-mqtt QoS 1 echo through the broker (two hops, no SIPAS work), ms per sample."""
    return echo_round_trip(
        lambda name: paho_client(office, name), "127.0.0.1", office.port, samples, interval
    )


def echo_round_trip(
    make_client: Callable[[str], mqtt.Client],
    host: str,
    port: int,
    samples: int,
    interval: float = 0.0,
) -> list[float]:
    """Publish QoS 1, a second client republishes, the first receives it: ms per sample (the
    first 10 are warm-up and dropped). The baseline of the latency benchmarks."""
    got = threading.Event()
    clients = []

    def client(name: str) -> mqtt.Client:
        c = make_client(name)
        c.connect(host, port)
        c.loop_start()
        clients.append(c)
        return c

    echo, probe = client("echo"), client("probe")
    echo.on_message = lambda c, u, m: c.publish("sipas/v1/bench-raw/pong", m.payload, qos=1)
    probe.on_message = lambda c, u, m: got.set()
    echo.subscribe("sipas/v1/bench-raw/ping", qos=1)
    probe.subscribe("sipas/v1/bench-raw/pong", qos=1)
    time.sleep(0.5)
    out = []
    try:
        for i in range(samples + 10):
            got.clear()
            t0 = time.perf_counter()
            probe.publish("sipas/v1/bench-raw/ping", b"x" * 48, qos=1)
            if not got.wait(5):
                raise SystemExit("raw echo lost a message")
            if i >= 10:
                out.append((time.perf_counter() - t0) * 1000)
            if interval:
                time.sleep(interval)
    finally:
        for c in clients:
            c.disconnect()
            c.loop_stop()
    return out


@contextlib.contextmanager
def py_spy(pid: int, out: Path | None, rate: int = 250) -> Iterator[None]:
    """Sample ``pid`` with py-spy (all threads, on-CPU samples) into ``out`` (a flame-graph
    "raw" file), if asked for and py-spy is installed; py-spy is not a project dependency."""
    if out is None:
        yield
        return
    import shutil
    import signal
    import subprocess

    exe = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if exe is None:
        say("py-spy not found (pip install py-spy): not profiling")
        yield
        return
    spy = subprocess.Popen(
        [exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw"]
        + ["--threads", "--nonblocking", "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(1.0)  # let it attach
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()
        say(f"py-spy profile of pid {pid} written to {out}")
