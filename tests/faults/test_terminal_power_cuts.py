"""Power cuts of the terminal: nothing confirmed is lost, nothing stored twice, no seq reused.

Each terminal is the real firmware application in its own process (``python -m
provisioning.simrun``), killed with SIGKILL at random moments while ratings are pressed: in the
middle of an outbox write (its writes reach the file in two halves, a few milliseconds apart: a
filesystem without atomic appends, stricter than littlefs), between the publish and the hub's
acknowledgement, while acknowledged segments are deleted, or while it boots. It is restarted on the
same outbox (its flash) every time. The hub is real (its own Mosquitto, SQLite).

A press counts as *confirmed* when the terminal printed ``stored SEQ``, that is once ``App.press``
returned and the citizen saw the "saved" feedback. At the end (DESIGN.md 4.1):

- every confirmed rating is in the hub exactly once, with the level pressed;
- each terminal's sequence numbers in the hub are 1..max without a gap or a repeat, no sequence
  number was confirmed twice, and nothing was quarantined (a seq reused with other content is);
- a press whose confirmation never came (the power went first) may be stored or not, once at most.

``SIPAS_FAULT_SEED`` overrides the seed; the seed is in every failure message.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlmodel import Session, select

from hub.models import Quarantine, Rating
from hub.service import HubService

pytestmark = pytest.mark.faults

REPO_ROOT = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("SIPAS_FAULT_SEED", "20240611"))
TERMINALS = 4
KILLS_EACH = 50  # 200 power cuts in all
SLOW_WRITES_MS = 2
SLOT = 52  # firmware/app/outbox.py: 48-byte record + CRC-32


class SimProcess:
    """One life of a simulated terminal: a child process whose output lines a thread collects."""

    def __init__(self, config: Path, workdir: Path, log: Path) -> None:
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "provisioning.simrun", str(config), str(workdir)],
                env={
                    **os.environ,
                    "PYTHONPATH": str(REPO_ROOT),
                    "SIPAS_SIM_SLOW_WRITES": str(SLOW_WRITES_MS),
                },
                cwd=REPO_ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self.changed:
                self.lines.append(raw.decode().strip())
                self.changed.notify_all()

    def send(self, *commands: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("".join(c + "\n" for c in commands).encode())
        self.proc.stdin.flush()

    def wait_for(self, pred: Callable[[list[str]], bool], timeout: float = 10.0) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: pred(self.lines), timeout)

    def answers(self) -> list[str]:
        """The ``stored SEQ`` / ``refused`` lines so far, one per press, in order."""
        with self.changed:
            return [x for x in self.lines if x.startswith(("stored", "refused"))]

    def depth(self) -> int:
        n = len(self.lines)
        self.send("depth")
        assert self.wait_for(lambda ls: any(x.startswith("depth") for x in ls[n:])), self.lines
        with self.changed:
            return int(next(x for x in self.lines[n:] if x.startswith("depth")).split()[1])

    def kill(self) -> None:
        """SIGKILL: a power cut. Every line printed before it is still read (up to EOF)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._close()

    def _close(self) -> None:
        self._reader.join(5)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.stdout.close()

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()  # end of input: a clean stop
        code = self.proc.wait(10)
        self._close()
        assert code == 0, f"simrun exited with {code}"


def torn_tail(outbox: Path) -> bool:
    """A partial slot (or an empty file) at the end of the newest segment: cut mid-append."""
    segs = sorted(outbox.glob("*.seg"))
    return bool(segs) and (segs[-1].stat().st_size % SLOT != 0 or segs[-1].stat().st_size == 0)


@dataclass
class Terminal:
    tid: str
    epoch: int
    config: Path
    workdir: Path
    rng: random.Random
    confirmed: dict[int, int] = field(default_factory=dict)  # seq -> level
    unconfirmed: list[int] = field(default_factory=list)  # levels of presses never confirmed
    reconfirmed: list[str] = field(default_factory=list)  # a seq confirmed twice: a real bug
    refused: int = 0
    kills: int = 0
    cuts: Counter[str] = field(default_factory=Counter)  # where the power cuts landed

    def life(self, hub: HubService) -> None:
        """Boot, press a few ratings, and cut the power at a random moment."""
        rng = self.rng
        sim = SimProcess(self.config, self.workdir, self.workdir / "simrun.log")
        how = rng.choice(("boot", "mid-write", "mid-write", "after-store", "after-store", "idle"))
        levels = [rng.randint(1, 3) for _ in range(rng.randint(1, 4))]
        if how == "boot":  # while it opens its outbox (and repairs a torn tail) or connects
            time.sleep(rng.uniform(0.0, 0.08))
            levels = []
        else:
            assert sim.wait_for(lambda ls: "ready" in ls), f"{self.tid} did not boot (seed {SEED})"
            sim.send(*(f"press {lv}" for lv in levels))
            if how == "mid-write":  # while the presses are being written
                time.sleep(rng.choice((0.0, rng.uniform(0.0, 0.012 * len(levels)))))
            else:  # after the j-th confirmation: publish, ack, segment deletion, or idle
                j = rng.randint(1, len(levels))
                sim.wait_for(lambda ls: sum(x.startswith("stored") for x in ls) >= j, 5)
                time.sleep(rng.uniform(0.0, 0.03) if how == "after-store" else 0.15)
        sim.kill()
        self.kills += 1
        self.record(sim, levels, hub, how)

    def record(self, sim: SimProcess, levels: list[int], hub: HubService, how: str) -> None:
        answers = sim.answers()
        assert len(answers) <= len(levels), answers
        self.unconfirmed += levels[len(answers) :]
        stored = {seq for seq, _ in hub_rows(hub, self)}
        for level, answer in zip(levels, answers, strict=False):
            if answer == "refused":
                self.refused += 1
                continue
            seq = int(answer.split()[1])
            if seq in self.confirmed:
                self.reconfirmed.append(
                    f"seq {seq} confirmed for level {self.confirmed[seq]}, then again for level "
                    f"{level} after power cut {self.kills} ({how})"
                )
            self.confirmed[seq] = level
        self.cuts[how] += 1
        if torn_tail(self.workdir / "outbox"):
            self.cuts["left a torn slot"] += 1
        if any(seq not in stored for seq in self.confirmed):
            self.cuts["with confirmed ratings not yet stored by the hub"] += 1


def hub_rows(hub: HubService, t: Terminal) -> list[tuple[int, int]]:
    """(seq, level) of every rating the hub stored for this terminal."""
    q = select(Rating.seq, Rating.level).where(Rating.terminal_id == t.tid, Rating.epoch == t.epoch)
    with Session(hub.engine) as s:
        return list(s.exec(q))


def quarantined(hub: HubService) -> list[str]:
    with Session(hub.engine) as s:
        return [f"{q.topic}: {q.reason}" for q in s.exec(select(Quarantine)).all()]


def drain(hub: HubService, t: Terminal, timeout: float = 20.0) -> None:
    """Boot the terminal once more, without a power cut, until its outbox is empty."""
    sim = SimProcess(t.config, t.workdir, t.workdir / "simrun.log")
    try:
        assert sim.wait_for(lambda ls: "ready" in ls), f"{t.tid} did not boot (seed {SEED})"
        deadline = time.monotonic() + timeout
        depth = sim.depth()
        while depth and time.monotonic() < deadline:
            time.sleep(0.05)
            depth = sim.depth()
    finally:
        sim.stop()
    assert depth == 0, (
        f"{t.tid}: {depth} ratings still in the outbox after {timeout} s (seed {SEED}); "
        f"hub holds {len(hub_rows(hub, t))}, confirmed {len(t.confirmed)}; "
        f"log: {(t.workdir / 'simrun.log').read_text()[-2000:]}"
    )


def check(hub: HubService, t: Terminal) -> None:
    where = f"{t.tid} (seed {SEED}, {t.kills} power cuts: {dict(t.cuts)})"
    assert not t.reconfirmed, f"{where}: a sequence number was handed out twice: {t.reconfirmed}"
    pairs = hub_rows(hub, t)
    rows = dict(pairs)
    assert sorted(s for s, _ in pairs) == list(range(1, len(pairs) + 1)), (
        f"{where}: stored seqs are not 1..n once each: {sorted(s for s, _ in pairs)}"
    )
    missing = sorted(set(t.confirmed) - set(rows))
    assert not missing, f"{where}: confirmed ratings lost: {missing}"
    wrong = {s: (lv, rows[s]) for s, lv in t.confirmed.items() if rows[s] != lv}
    assert not wrong, (
        f"{where}: stored with another level than pressed (seq: pressed, stored) {wrong}"
    )
    extra = Counter(lv for s, lv in rows.items() if s not in t.confirmed)
    assert not extra - Counter(t.unconfirmed), (
        f"{where}: stored ratings that match no press: {extra} vs unconfirmed {t.unconfirmed}"
    )
    assert t.refused == 0, f"{where}: {t.refused} presses refused"


def test_terminal_killed_200_times_while_ratings_are_pressed(
    hub: HubService, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    terminals = []
    for n in range(TERMINALS):
        device = hub.add_terminal(desk=f"quay-{n + 1}")
        workdir = tmp_path / device["terminal_id"]
        workdir.mkdir()
        config = workdir / "config.json"
        config.write_text(json.dumps(device))
        terminals.append(
            Terminal(
                device["terminal_id"], device["epoch"], config, workdir, random.Random(rng.random())
            )
        )
    errors: list[BaseException] = []

    def run(t: Terminal) -> None:
        try:
            for _ in range(KILLS_EACH):
                t.life(hub)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(t,)) for t in terminals]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors, f"seed {SEED}: {errors[0]!r}"
    reused = [f"{t.tid}: {r}" for t in terminals for r in t.reconfirmed]
    assert not reused, f"seed {SEED}: a sequence number was handed out twice: {reused}"
    for t in terminals:
        drain(hub, t)
    cuts = sum((t.cuts for t in terminals), Counter())
    print(f"\npower cuts (seed {SEED}): {dict(cuts)}")
    assert sum(t.kills for t in terminals) >= 200
    for t in terminals:
        check(hub, t)
    assert quarantined(hub) == [], f"seed {SEED}: genuine ratings were quarantined"
    assert sum(len(t.confirmed) for t in terminals) > 200, f"seed {SEED}: too few presses"
    # The cuts landed where they matter: mid-append, and before the hub had stored (acknowledged)
    # ratings the citizen had seen confirmed.
    assert cuts["left a torn slot"] > 0, f"seed {SEED}: no power cut landed mid-write {dict(cuts)}"
    assert cuts["with confirmed ratings not yet stored by the hub"] > 0, (
        f"seed {SEED}: {dict(cuts)}"
    )
