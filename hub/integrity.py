"""Integrity of the hub's stored ratings (DESIGN.md 4.3).

Each stored rating carries ``chain`` = sha256(previous chain of the same terminal || the row's
content). ``verify`` recomputes everything from the raw signed bytes and the chain, and checks the
sequence numbers against the terminal's last signed heartbeat, so that an edited, reordered or deleted
row is reported. (The hub is not trusted with the truth: the district repeats these checks with a key
the hub never holds. This catches tampering with the hub's own database.)
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from hub import protocol
from hub.models import Quarantine, Rating, Terminal


def _micros(t: datetime) -> int:
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp() * 1_000_000)


class ChainRow(Protocol):
    terminal_id: str
    epoch: int
    seq: int
    raw: bytes
    desk: str | None
    official_id: str | None
    case_id: int | None
    link_status: str
    press_time: datetime
    received_at: datetime


def chain_link(prev: str, row: ChainRow) -> str:
    content = "|".join(
        [
            row.terminal_id,
            str(row.epoch),
            str(row.seq),
            row.raw.hex(),
            row.desk or "",
            row.official_id or "",
            "" if row.case_id is None else str(row.case_id),
            row.link_status,
            str(_micros(row.press_time)),
            str(_micros(row.received_at)),
        ]
    )
    return hashlib.sha256((prev + "\n" + content).encode()).hexdigest()


@dataclass
class Finding:
    terminal_id: str
    kind: str  # modified | chain_broken | missing | bad_heartbeat
    detail: str
    rating_id: int | None = None
    seqs: list[int] = field(default_factory=list)

    def __str__(self) -> str:
        where = f" (rating {self.rating_id})" if self.rating_id is not None else ""
        return f"{self.terminal_id}{where}: {self.kind}: {self.detail}"


@dataclass
class Report:
    terminals: int = 0
    ratings: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


def merge(*reports: Report) -> Report:
    """One report from several checks (terminals, and the QR channel's own ratings)."""
    out = Report()
    for r in reports:
        out.terminals += r.terminals
        out.ratings += r.ratings
        out.findings += r.findings
    return out


def _row_matches_raw(row: Rating, key: bytes) -> str | None:
    try:
        r = protocol.decode_rating(row.raw)
    except protocol.ProtocolError as e:
        return f"raw record no longer decodes: {e}"
    if not protocol.verify_tag(key, row.terminal_id, r.body, r.hub_tag):
        return "raw record's hub HMAC tag does not verify"
    stored = (row.epoch, row.seq, row.level, row.scale, row.reason, row.flags)
    signed = (r.epoch, r.seq, r.level, r.scale, r.reason, r.flags)
    if stored != signed:
        return f"columns {stored} differ from the signed record {signed}"
    if not r.clock_unknown and _micros(row.press_time) != r.press_time * 1_000_000:
        return "press time differs from the signed record"
    return None


def _ranges(seqs: list[int]) -> str:
    """[1, 2, 3, 7] -> "1-3, 7"."""
    runs: list[list[int]] = []
    for n in seqs:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def verify(engine: Engine, office: str) -> Report:
    report = Report()
    with Session(engine) as s:
        terminals = s.exec(select(Terminal).where(Terminal.office == office)).all()
        quarantined: dict[str, set[tuple[int, int]]] = defaultdict(set)
        for q in s.exec(select(Quarantine)).all():
            try:
                _, tid, leaf = protocol.parse_topic(q.topic)
                if leaf == "rating":
                    r = protocol.decode_rating(q.payload)
                    quarantined[tid].add((r.epoch, r.seq))
            except protocol.ProtocolError:
                continue
        for term in terminals:
            report.terminals += 1
            key = bytes.fromhex(term.hub_key)
            prev = ""
            seqs: dict[int, list[int]] = defaultdict(list)
            rows = s.exec(
                select(Rating).where(Rating.terminal_id == term.id).order_by(col(Rating.id))
            ).all()
            for row in rows:
                report.ratings += 1
                seqs[row.epoch].append(row.seq)
                problem = _row_matches_raw(row, key)
                if problem:
                    report.findings.append(Finding(term.id, "modified", problem, row.id, [row.seq]))
                if chain_link(prev, row) != row.chain:
                    report.findings.append(
                        Finding(
                            term.id,
                            "chain_broken",
                            "hash chain does not continue here: this row was changed, or a row "
                            "before it was deleted or reordered",
                            row.id,
                            [row.seq],
                        )
                    )
                prev = row.chain
            report.findings.extend(_gaps(term, key, seqs, quarantined[term.id]))
    return report


def _gaps(
    term: Terminal, key: bytes, seqs: dict[int, list[int]], quarantined: set[tuple[int, int]]
) -> list[Finding]:
    out = []
    expected_last = 0
    if term.last_heartbeat:
        try:
            st = json.loads(term.last_heartbeat)
            if st.get("state") == "online" and st.get("epoch") == term.epoch:
                tag = protocol.status_tag(
                    key, term.id, st["epoch"], st["last_seq"], st.get("time", 0)
                )
                if tag.hex() != st.get("tag"):
                    out.append(
                        Finding(
                            term.id, "bad_heartbeat", "last heartbeat's signature does not verify"
                        )
                    )
                else:
                    # Ratings still in the terminal's outbox are not missing, only not yet here.
                    expected_last = int(st["last_seq"]) - int(st.get("outbox", 0))
        except (ValueError, KeyError, TypeError):
            out.append(Finding(term.id, "bad_heartbeat", "last heartbeat is unreadable"))
    for epoch in sorted(set(seqs) | {term.epoch}):
        have = set(seqs.get(epoch, []))
        top = max(have | ({expected_last} if epoch == term.epoch else set()) | {0})
        missing = sorted(
            n for n in range(1, top + 1) if n not in have and (epoch, n) not in quarantined
        )
        if missing:
            out.append(
                Finding(
                    term.id,
                    "missing",
                    f"epoch {epoch}: sequence numbers {_ranges(missing)} "
                    "are neither stored nor quarantined (deleted?)",
                    None,
                    missing,
                )
            )
    return out
