"""Nothing lost, nothing duplicated when the office's machinery fails under a stream of ratings.

The hub runs as a real separate process (``python -m hub.cli run`` against the test's Mosquitto), so
it can be killed with SIGKILL at any moment: mid-batch, between the commit and the acks, between
the acks and the PUBACKs. Simulated terminals (the real firmware application) press ratings from
threads of the test process the whole time. Each test then waits for the office to settle and
checks the invariants of DESIGN.md 4.1/4.2:

- every rating pressed is stored exactly once, with the level that was pressed;
- no terminal ever handed out a sequence number twice (1, 2, 3, ... without gaps);
- every terminal's outbox is empty (each rating was acknowledged by the hub);
- nothing was quarantined (all the traffic was genuine).

The faults are drawn from a seeded random generator (``SIPAS_FAULT_SEED`` overrides the seed); the
seed is in every failure message.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select

from hub import registry
from hub.broker import find_free_port
from hub.db import make_engine
from hub.models import Quarantine, Rating
from provisioning.simulate import SimTerminal
from tests.fixtures.mosquitto import OFFICE, TestMosquitto

pytestmark = pytest.mark.faults

REPO_ROOT = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("SIPAS_FAULT_SEED", "20240604"))
TERMINALS = 4
READY_MARK = b"hub running"


class HubProcess:
    """``python -m hub.cli run`` as a child process, using an external (the fixture's) Mosquitto."""

    def __init__(self, workdir: Path, broker: TestMosquitto) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.db_url = f"sqlite:///{self.data_dir / 'hub.sqlite3'}"
        self.env = {
            **os.environ,
            "SIPAS_HUB_MANAGE_BROKER": "false",
            "SIPAS_HUB_MQTT_HOST": broker.host,
            "SIPAS_HUB_MQTT_PORT": str(broker.port),
            "SIPAS_HUB_MQTT_USER": broker.hub_user,
            "SIPAS_HUB_MQTT_PASSWORD": broker.hub_password,
            "SIPAS_HUB_DATA_DIR": str(self.data_dir),
            "SIPAS_HUB_OFFICE": OFFICE,
            "SIPAS_HUB_API_TOKEN": secrets.token_urlsafe(16),
            "SIPAS_HUB_API_PORT": str(find_free_port()),
            "PYTHONPATH": str(REPO_ROOT),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.kills = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / f"hub-{self.runs}.log"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 15.0) -> None:
        """Start the hub; return once it is connected to the broker and serves its API."""
        assert not self.alive
        self.runs += 1
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hub.cli", "run"],
                env=self.env,
                cwd=self.workdir,  # no stray .env file from the repository
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while READY_MARK not in self.log_path.read_bytes():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"hub run {self.runs} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"hub run {self.runs} not ready within {timeout} s:\n{self.log_tail()}"
                )
            time.sleep(0.01)

    def kill(self) -> None:
        """SIGKILL: no shutdown handler, no flush, as a crash or a power cut of the hub alone."""
        assert self.proc is not None and self.alive, "the hub died on its own"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.kills += 1

    def stop(self) -> None:
        if self.proc is None or not self.alive:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def power_cut(sim: SimTerminal) -> None:
    """Stop a simulated terminal as a power cut would: no DISCONNECT, the socket just goes."""
    sim._stop.set()
    if sim._thread is not None:
        sim._thread.join(timeout=5)
    with sim._lock:
        if sim.app.client is not None:
            sim.app.client.close()
            sim.app.client = None


@dataclass
class Office:
    """One office: broker, hub process, its database, terminals, and every press made."""

    broker: TestMosquitto
    hub: HubProcess
    engine: Engine
    workdir: Path
    configs: list[dict]
    terminals: list[SimTerminal] = field(default_factory=list)
    pressed: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # tid -> (seq, level)
    refused: list[tuple[str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    reboots: int = 0

    def boot(self, i: int) -> SimTerminal:
        cfg = self.configs[i]
        sim = SimTerminal(cfg, self.workdir / "terminals" / cfg["terminal_id"])
        sim.start()
        return sim

    def press(self, i: int, level: int) -> int | None:
        with self.lock:
            sim = self.terminals[i]
            seq = sim.press(level)
            if seq is None:
                self.refused.append((sim.terminal_id, level))
            else:
                self.pressed.setdefault(sim.terminal_id, []).append((seq, level))
            return seq

    def reboot(self, i: int) -> None:
        """Power-cut terminal ``i`` and boot it again from its flash (its outbox directory)."""
        with self.lock:
            power_cut(self.terminals[i])
            self.terminals[i] = self.boot(i)
            self.reboots += 1

    def total_pressed(self) -> int:
        with self.lock:
            return sum(len(v) for v in self.pressed.values())

    def depths(self) -> dict[str, int]:
        with self.lock:
            return {t.terminal_id: t.depth() for t in self.terminals}

    def db_count(self, model: type = Rating) -> int:
        with Session(self.engine) as s:
            return int(s.exec(select(func.count()).select_from(model)).one())

    def db_keys(self) -> list[tuple[str, int, int, int]]:
        with Session(self.engine) as s:
            return list(s.exec(select(Rating.terminal_id, Rating.epoch, Rating.seq, Rating.level)))

    def diagnostic(self) -> str:
        with self.lock:
            events = {t.terminal_id: t.app.events[-8:] for t in self.terminals}
            pressed = {tid: len(v) for tid, v in self.pressed.items()}
        return (
            f"seed {SEED}; pressed per terminal {pressed} (refused: {len(self.refused)}); "
            f"outbox depths {self.depths()}; ratings in the database {self.db_count()}, "
            f"quarantined {self.db_count(Quarantine)}; hub alive {self.hub.alive}, "
            f"runs {self.hub.runs}, kills {self.hub.kills}; terminal reboots {self.reboots}\n"
            f"terminal events: {events}\nhub log (run {self.hub.runs}):\n{self.hub.log_tail()}"
        )


class Stream(threading.Thread):
    """Presses at random terminals every few tens of milliseconds until stopped."""

    def __init__(
        self,
        office: Office,
        rng: random.Random,
        gap: tuple[float, float] = (0.01, 0.05),
        reboot_every: int = 0,
    ) -> None:
        super().__init__(name="press-stream", daemon=True)
        self.office, self.rng, self.gap = office, rng, gap
        self.reboot_every = reboot_every  # power-cut a random terminal every n presses (0: never)
        self.halt = threading.Event()
        self.error: BaseException | None = None
        self.presses = 0

    def run(self) -> None:
        try:
            while not self.halt.is_set():
                i = self.rng.randrange(len(self.office.terminals))
                self.office.press(i, self.rng.randint(1, 3))
                self.presses += 1
                if self.reboot_every and self.presses % self.reboot_every == 0:
                    self.office.reboot(self.rng.randrange(len(self.office.terminals)))
                self.halt.wait(self.rng.uniform(*self.gap))
        except BaseException as e:  # reported by stop()
            self.error = e

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=10)
        assert not self.is_alive(), "the press stream did not stop"
        if self.error is not None:
            raise AssertionError(f"the press stream failed: {self.error!r}") from self.error


@pytest.fixture
def office(mosquitto: TestMosquitto, tmp_path: Path) -> Iterator[Office]:
    hub = HubProcess(tmp_path / "hub", mosquitto)
    engine = make_engine(hub.db_url)
    configs = []
    for n in range(TERMINALS):
        _, device = registry.add_terminal(engine, office=OFFICE, desk=f"quay-{n + 1}")
        mosquitto.add_terminal(device["terminal_id"], device["mqtt_password"])
        configs.append({**device, "broker_host": mosquitto.host, "broker_port": mosquitto.port})
    o = Office(mosquitto, hub, engine, tmp_path, configs)
    o.terminals = [o.boot(i) for i in range(TERMINALS)]
    try:
        yield o
    finally:
        for sim in o.terminals:
            sim.stop()
        hub.stop()
        engine.dispose()


def settle(office: Office, timeout: float = 30.0, quiet: float = 2.0) -> None:
    """Wait until every outbox is empty and every press is stored; fail with a diagnostic.

    Once the outboxes are empty, nothing more can arrive: after ``quiet`` seconds without a new row,
    return and let :func:`check_invariants` say what is missing.
    """
    deadline = time.monotonic() + timeout
    drained_at: float | None = None
    last_count = -1
    while time.monotonic() < deadline:
        if not office.hub.alive:
            raise AssertionError(f"the hub died on its own\n{office.diagnostic()}")
        count = office.db_count()
        if all(d == 0 for d in office.depths().values()):
            if count >= office.total_pressed():
                return
            if drained_at is None or count != last_count:
                drained_at = time.monotonic()
            elif time.monotonic() - drained_at > quiet:
                return  # every outbox is empty yet ratings are missing: lost
        else:
            drained_at = None
        last_count = count
        time.sleep(0.05)
    raise AssertionError(f"not settled within {timeout} s\n{office.diagnostic()}")


def check_invariants(office: Office) -> None:
    """Every press stored exactly once with its level, no seq reused, no outbox left, no quarantine."""
    assert not office.refused, f"presses refused (outbox full?): {office.refused[:5]}"
    rows = office.db_keys()
    stored = Counter((tid, epoch, seq) for tid, epoch, seq, _ in rows)
    twice = [k for k, n in stored.items() if n > 1]
    assert not twice, f"stored more than once: {twice[:10]}"
    for tid, presses in office.pressed.items():
        seqs = [seq for seq, _ in presses]
        assert seqs == list(range(1, len(seqs) + 1)), (
            f"{tid} handed out sequence numbers {seqs[:20]}...: reused or skipped (seed {SEED})"
        )
    pressed = {(tid, 1, seq): level for tid, ps in office.pressed.items() for seq, level in ps}
    levels = {(tid, epoch, seq): level for tid, epoch, seq, level in rows}
    missing = sorted(pressed.keys() - levels.keys())
    extra = sorted(levels.keys() - pressed.keys())
    assert not missing, f"{len(missing)} ratings lost, e.g. {missing[:10]}\n{office.diagnostic()}"
    assert not extra, f"{len(extra)} ratings never pressed were stored, e.g. {extra[:10]}"
    wrong = [(k, pressed[k], levels[k]) for k in pressed if pressed[k] != levels[k]]
    assert not wrong, f"stored with another level than pressed: {wrong[:10]}"
    assert len(rows) == len(pressed) == office.total_pressed()
    assert office.depths() == {t.terminal_id: 0 for t in office.terminals}
    assert office.db_count(Quarantine) == 0, "genuine ratings were quarantined"


def run_for(seconds: float, office: Office, check: Callable[[], None] | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check is not None:
            check()
        time.sleep(0.02)


def test_hub_killed_20_times_during_a_stream_of_ratings(office: Office) -> None:
    rng = random.Random(SEED)
    office.hub.start()
    stream = Stream(office, random.Random(rng.random()), reboot_every=150)
    stream.start()
    try:
        for _ in range(20):
            # Killed at a random moment of its life: mid-batch, between the commit and the acks,
            # between the acks and the PUBACKs, or idle.
            time.sleep(rng.uniform(0.05, 0.6))
            office.hub.kill()
            time.sleep(rng.choice((0.0, 0.0, rng.uniform(0.0, 0.5))))  # down for a while, or not
            office.hub.start()
        time.sleep(0.5)
    finally:
        stream.stop()
    assert office.hub.kills == 20
    assert office.total_pressed() > 200, office.diagnostic()
    settle(office)
    check_invariants(office)


def test_broker_killed_and_restarted_during_a_stream_of_ratings(office: Office) -> None:
    rng = random.Random(SEED + 1)
    office.hub.start()
    stream = Stream(office, random.Random(rng.random()))
    stream.start()
    try:
        for _ in range(2):
            time.sleep(rng.uniform(0.5, 1.5))
            office.broker.kill()  # SIGKILL: whatever it had not saved is gone
            time.sleep(rng.uniform(0.3, 1.0))  # presses go on, into the terminals' flash
            office.broker.start()  # same port, same configuration and persistence file
        time.sleep(1.0)
    finally:
        stream.stop()
    assert office.total_pressed() > 50, office.diagnostic()
    settle(office)
    check_invariants(office)


def test_database_locked_while_ratings_arrive(office: Office) -> None:
    rng = random.Random(SEED + 2)
    office.hub.start()
    stream = Stream(office, random.Random(rng.random()))
    stream.start()
    try:
        time.sleep(rng.uniform(0.5, 1.0))
        db_path = office.hub.db_url.removeprefix("sqlite:///")
        blocker = sqlite3.connect(db_path, timeout=10, isolation_level=None)
        try:
            blocker.execute("BEGIN EXCLUSIVE")  # no other connection can write now
            stored_before = blocker.execute("SELECT count(*) FROM rating").fetchone()[0]
            with office.lock:
                marks = {tid: len(ps) for tid, ps in office.pressed.items()}
            time.sleep(2.0)
            with office.lock:
                during = {
                    t.terminal_id: [s for s, _ in office.pressed.get(t.terminal_id, [])][
                        marks.get(t.terminal_id, 0) :
                    ]
                    for t in office.terminals
                }
                held = {}
                for t in office.terminals:
                    with t._lock:
                        held[t.terminal_id] = {s for s, _ in t.app.outbox.pending(0, 100_000)}
            assert sum(map(len, during.values())) > 10, office.diagnostic()
            # Nothing pressed while the database was locked can have been acknowledged.
            for tid, seqs in during.items():
                assert set(seqs) <= held[tid], (
                    f"{tid} forgot {sorted(set(seqs) - held[tid])[:10]} although the hub could "
                    "not have committed them (the database was locked)"
                )
            assert blocker.execute("SELECT count(*) FROM rating").fetchone()[0] == stored_before
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        time.sleep(1.0)
    finally:
        stream.stop()
    settle(office)
    check_invariants(office)
    assert "Traceback" not in office.hub.log_path.read_text(errors="replace"), office.hub.log_tail()


def test_a_poison_heartbeat_does_not_stop_the_office(office: Office) -> None:
    office.hub.start()
    sender = office.configs[0]  # a terminal's own credentials: the ACL lets it write its status
    with office.broker.client(sender["terminal_id"], sender["mqtt_password"]) as c:
        c.publish(
            office.broker.topic(sender["terminal_id"], "status"),
            '{"v":1,"state":"online"}'.encode("utf-16"),
        )
    for i in range(TERMINALS):
        office.press(i, 1)
    settle(office, timeout=5)
    assert office.db_count() == TERMINALS and office.db_count(Quarantine) == 1
