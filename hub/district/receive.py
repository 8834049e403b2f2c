"""Receiving a hub's sync batch (docs/sync.md is the contract): checks, idempotency, storage.

One batch is one database transaction. It starts by claiming the batch's ``Idempotency-Key``
(``INSERT ... ON CONFLICT DO NOTHING`` into ``sync_batch``): a second process handling the same
batch at the same moment waits on that row, then finds it and answers what the first answered,
so a batch is stored once whatever the number of API processes. A resend later gets the stored
answer; the same key with another body gets 409.

Ratings are checked one by one: the 48-byte record must decode, its key must match the item's,
and its district tag must verify with the key the district issued for that terminal and epoch
(``hub/protocol.py`` does the HMAC). A refused item is recorded as a finding and listed in the
answer's ``rejected``; the rest of the batch is stored (``ON CONFLICT DO NOTHING`` on the rating
key). Other streams are the hub's word and are stored by ``(office, hub id)``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeGuard

import orjson
from sqlalchemy import Table, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from hub import protocol
from hub.district import bulk, integrity, reports_rollup
from hub.district.models import (
    CONFLICTING_RATING,
    FORGED_HEARTBEAT,
    FORGED_RATING,
    CaseFile,
    Correction,
    Desk,
    DirectorySnapshot,
    DutyEvent,
    Exclusion,
    Finding,
    Heartbeat,
    Official,
    PaperBox,
    PaperTally,
    SyncBatch,
    TerminalKey,
)

STREAMS = (
    "ratings",
    "cases",
    "duty",
    "exclusions",
    "corrections",
    "heartbeats",
    "directory",
    "paper",
)
_ZERO_TAG = bytes(16)
_U32 = 0xFFFFFFFF
MAX_ITEMS = 10_000
"""Items per batch at most (docs/sync.md); more is 413, and the hub's sender halves its batch."""


class BatchError(Exception):
    """The batch is refused as a whole (nothing stored); ``status`` is the HTTP answer."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class Batch:
    office: str
    stream: str
    key: str
    start: int  # "from": the hub's watermark before the batch (exclusive)
    to: int
    items: list[Any]
    sha256: str


# -- the body ---------------------------------------------------------------------------------------
def unpack(
    body: bytes, *, encoding: str | None, content_length: str | None, max_bytes: int
) -> bytes:
    """The JSON bytes of a request body: gzip checked to its last byte (CRC and length trailer)."""
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError as e:
            raise BatchError(400, "Content-Length is not a number") from e
        if declared != len(body):
            raise BatchError(
                400, f"body is {len(body)} bytes, Content-Length says {declared}: truncated"
            )
    enc = (encoding or "identity").strip().lower()
    if enc == "identity":
        data = body
    elif enc == "gzip":
        try:
            d = zlib.decompressobj(wbits=31)  # gzip only, trailer checked
            data = d.decompress(body, max_bytes + 1)
            if len(data) > max_bytes:
                raise BatchError(413, f"batch larger than {max_bytes} bytes unzipped")
            if not d.eof or d.unused_data:
                raise BatchError(400, "gzip body is truncated (or has bytes after its end)")
        except zlib.error as e:
            raise BatchError(400, f"gzip body is corrupt: {e}") from e
    else:
        raise BatchError(400, f"Content-Encoding {encoding!r}: send gzip")
    if len(data) > max_bytes:
        raise BatchError(413, f"batch larger than {max_bytes} bytes")
    return data


def parse(data: bytes, *, stream: str, key: str | None, office: str) -> Batch:
    """Check the envelope against the path, the hub's office and the idempotency key."""
    if stream not in STREAMS:
        raise BatchError(404, f"unknown stream {stream!r}: one of {', '.join(STREAMS)}")
    try:
        doc = orjson.loads(data)  # (its JSONDecodeError is a ValueError)
    except ValueError as e:
        raise BatchError(400, f"body is not JSON: {e}") from e
    if not isinstance(doc, dict) or doc.get("v") != 1:
        raise BatchError(422, 'body must be a JSON object with "v": 1')
    if doc.get("office") != office:
        raise BatchError(
            403,
            f"this hub token belongs to office {office!r}, the batch says {doc.get('office')!r}",
        )
    if doc.get("stream") != stream:
        raise BatchError(422, f"the batch says stream {doc.get('stream')!r}, the path {stream!r}")
    start, to, items = doc.get("from"), doc.get("to"), doc.get("items")
    if not (_is_int(start) and _is_int(to) and isinstance(items, list)):
        raise BatchError(422, '"from" and "to" must be integers and "items" a list')
    if len(items) > MAX_ITEMS:
        raise BatchError(413, f"{len(items)} items: a batch has at most {MAX_ITEMS}")
    if not 0 <= start <= to or (items and start == to):
        raise BatchError(422, f'"from" {start} and "to" {to} do not make a batch')
    want = f"{office}:{stream}:{start}-{to}"
    if key != want:
        raise BatchError(422, f"Idempotency-Key must be {want!r}, got {key!r}")
    return Batch(office, stream, want, start, to, items, hashlib.sha256(data).hexdigest())


def _is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


# -- the transaction ---------------------------------------------------------------------------------
def _insert(s: Session, table: Any) -> Any:
    """The dialect's INSERT (with ``on_conflict_do_nothing``/``_do_update``)."""
    name = s.get_bind().dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)
    raise RuntimeError(f"database {name!r} is not supported: use PostgreSQL or SQLite")


def _t(model: Any) -> Table:
    table: Table = model.__table__
    return table


def receive(engine: Engine, batch: Batch) -> tuple[int, dict[str, Any]]:
    """Store the batch once; (HTTP status, answer)."""
    with Session(engine) as s:
        claimed = s.execute(
            _insert(s, _t(SyncBatch))
            .values(
                idempotency_key=batch.key,
                office=batch.office,
                stream=batch.stream,
                from_pos=batch.start,
                to_pos=batch.to,
                items=len(batch.items),
                body_sha256=batch.sha256,
                answer={},
            )
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
            .returning(_t(SyncBatch).c.idempotency_key)
        ).scalar()
        if claimed is None:
            prior = s.get(SyncBatch, batch.key)
            s.rollback()
            assert prior is not None
            if prior.body_sha256 != batch.sha256:
                return 409, {
                    "detail": f"batch {batch.key} was already received with another body: a hub "
                    "must never send different items under the same key"
                }
            return 200, dict(prior.answer)
        answer = _HANDLERS[batch.stream](s, batch)
        answer["to"] = batch.to
        # the office days this batch changes, marked in its own transaction (report rollups)
        reports_rollup.mark_batch(s.connection(), batch.office, batch.stream, batch.items)
        s.execute(
            update(_t(SyncBatch))
            .where(_t(SyncBatch).c.idempotency_key == batch.key)
            .values(answer=answer)
        )
        s.commit()
    return 200, answer


def _finding(s: Session, batch: Batch, kind: str, reason: str, item: Any, **key: Any) -> None:
    raw = key.pop("raw", None)
    blob = json.dumps([kind, batch.office, item], sort_keys=True, default=str).encode()
    s.execute(
        _insert(s, _t(Finding))
        .values(
            office=batch.office,
            kind=kind,
            reason=reason[:500],
            raw=raw,
            item=item if isinstance(item, dict) else {"item": item},
            fingerprint=hashlib.sha256(blob).hexdigest(),
            batch=batch.key,
            detected_at=datetime.now(UTC),
            **key,
        )
        .on_conflict_do_nothing(index_elements=["fingerprint"])
    )


def _when(v: Any, what: str) -> datetime:
    if not isinstance(v, str):
        raise ValueError(f"{what} must be an ISO 8601 time")
    t = datetime.fromisoformat(v)
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _when_or_none(v: Any, what: str) -> datetime | None:
    return None if v is None else _when(v, what)


def _keys(s: Session, terminal_ids: set[str]) -> dict[tuple[str, int], Any]:
    """(terminal, epoch) -> a row with ``office`` and ``district_key`` (not ORM objects: cheaper)."""
    if not terminal_ids:
        return {}
    tk = _t(TerminalKey)
    rows = s.execute(
        select(tk.c.terminal_id, tk.c.epoch, tk.c.office, tk.c.district_key).where(
            tk.c.terminal_id.in_(sorted(terminal_ids))
        )
    )
    return {(r.terminal_id, r.epoch): r for r in rows}


# -- ratings -----------------------------------------------------------------------------------------
def _rating_row(item: Any, batch: Batch, keys: dict[tuple[str, int], Any]) -> dict[str, Any]:
    """The row to store for a ratings item, or ValueError with the reason it is refused."""
    if not isinstance(item, dict):
        raise ValueError("item is not a JSON object")
    tid, epoch, seq = item.get("terminal_id"), item.get("epoch"), item.get("seq")
    if not isinstance(tid, str) or not (_is_int(epoch) and _is_int(seq)):
        raise ValueError("terminal_id, epoch and seq are required")
    try:
        raw = bytes.fromhex(item.get("raw") or "")
    except (TypeError, ValueError) as e:
        raise ValueError("raw is not hex") from e
    try:
        rec = protocol.decode_rating(raw)
    except protocol.ProtocolError as e:
        raise ValueError(f"undecodable record: {e}") from e
    if (rec.epoch, rec.seq) != (epoch, seq):
        raise ValueError(
            f"the item says epoch {epoch} seq {seq}, the signed record {rec.epoch} {rec.seq}"
        )
    channel = item.get("channel") or "terminal"
    if channel == "qr":
        # No terminal signs a QR rating: the hub attests it (its district tag is zero bytes).
        if protocol.TERMINAL_ID_RE.fullmatch(tid) or not tid.startswith("qr-"):
            raise ValueError("a QR rating's id is qr-<desk>; a terminal's rating must be signed")
        if rec.district_tag != _ZERO_TAG:
            raise ValueError("a QR rating carries no district tag")
        verified = False
    elif channel == "terminal":
        if not protocol.TERMINAL_ID_RE.fullmatch(tid):
            raise ValueError(f"bad terminal id {tid!r}")
        k = keys.get((tid, epoch))
        if k is None:
            raise ValueError(
                f"unknown terminal: the district issued no key for {tid} epoch {epoch}"
            )
        if k.office != batch.office:
            raise ValueError(f"{tid} belongs to office {k.office}, not {batch.office}")
        if not protocol.verify_tag(bytes.fromhex(k.district_key), tid, rec.body, rec.district_tag):
            raise ValueError("district tag does not verify: the record was forged or altered")
        verified = True
    else:
        raise ValueError(f"unknown channel {channel!r}")
    if rec.clock_unknown:
        press = _when(item.get("press_time"), "press_time")  # the hub's receipt time
    else:
        press = datetime.fromtimestamp(rec.press_time, UTC)
    return {
        "terminal_id": tid,
        "epoch": epoch,
        "seq": seq,
        "office": batch.office,
        "raw": raw,
        "flags": rec.flags,
        "level": rec.level,
        "scale": rec.scale,
        "reason": rec.reason,
        "press_time": press,
        "clock_unknown": rec.clock_unknown,
        "repeat": rec.repeat,
        "test": rec.test,
        "prompted": rec.prompted,
        "followup": rec.followup,
        "verified": verified,
        "channel": channel,
        "desk": _str(item.get("desk"), 64),
        "official_id": _str(item.get("official_id"), 64),
        "case_code": _str(item.get("case_code"), 100),
        "link_status": _str(item.get("link_status"), 32),
        "hub_received_at": _when_or_none(item.get("received_at"), "received_at"),
        "batch": batch.key,
        "stored_at": datetime.now(UTC),
    }


def _str(v: Any, n: int) -> str | None:
    return None if v is None else str(v)[:n]


def _ratings(s: Session, batch: Batch) -> dict[str, Any]:
    ids = {
        i["terminal_id"]
        for i in batch.items
        if isinstance(i, dict) and isinstance(i.get("terminal_id"), str)
    }
    keys = _keys(s, ids)
    # hub/district/bulk.py: the same checks with less work per item, a bulk insert
    rows, where, refused = bulk.rows_of(
        batch.items, batch.office, batch.key, keys, lambda item: _rating_row(item, batch, keys)
    )
    rejected: list[dict[str, Any]] = []
    for i, why in refused:
        rejected.append({"index": i, "reason": why})
        _refuse_rating(s, batch, batch.items[i], why)
    stored = bulk.store(s, bulk.first_per_key(rows), batch.key)
    # Every other row (a key stored before, or a second item of a key in this batch) is compared
    # with what is stored under its key: a repeat, or a conflicting record.
    offered: set[tuple[str, int, int]] = set()
    dups: list[tuple[int, tuple[Any, ...]]] = []
    for i, r in zip(where, rows, strict=True):
        key = (r[0], r[1], r[2])
        if key in stored and key not in offered:
            offered.add(key)
        else:
            dups.append((i, r))
    duplicates = 0
    if dups:
        have = bulk.stored_records(s, {(r[0], r[1], r[2]) for _, r in dups})
        duplicates = _check_duplicates(s, batch, dups, rejected, have)
    changed: dict[tuple[str, int], int] = {}
    for tid, epoch, seq in stored:
        if protocol.TERMINAL_ID_RE.fullmatch(tid):
            changed[(tid, epoch)] = min(seq, changed.get((tid, epoch), seq))
    integrity.refresh_gaps(s, batch.office, changed)
    rejected.sort(key=lambda r: r["index"])
    return {"stored": len(stored), "duplicates": duplicates, "rejected": rejected}


def _check_duplicates(
    s: Session,
    batch: Batch,
    dups: list[tuple[int, tuple[Any, ...]]],
    rejected: list[dict[str, Any]],
    have: dict[tuple[str, int, int], tuple[bytes, str]],
) -> int:
    """Items whose key was already stored: a repeat (same bytes) or a conflicting record."""
    n = 0
    for i, r in dups:
        tid, epoch, seq, raw = r[0], r[1], r[2], r[4]
        if have[(tid, epoch, seq)][0] == raw:
            n += 1  # the same record again (or twice in this batch)
            continue
        why = "a different record under a rating key the district already holds"
        rejected.append({"index": i, "reason": why})
        _finding(
            s,
            batch,
            CONFLICTING_RATING,
            why,
            batch.items[i],
            terminal_id=tid,
            epoch=epoch,
            seq=seq,
            raw=raw,
        )
    return n


def _refuse_rating(s: Session, batch: Batch, item: Any, reason: str) -> None:
    key: dict[str, Any] = {}
    if isinstance(item, dict):
        tid, epoch, seq = item.get("terminal_id"), item.get("epoch"), item.get("seq")
        key["terminal_id"] = tid[:64] if isinstance(tid, str) else None
        key["epoch"] = epoch if _is_int(epoch) and 0 <= epoch <= 65535 else None
        key["seq"] = seq if _is_int(seq) and 0 <= seq <= _U32 else None
        try:
            key["raw"] = bytes.fromhex(item.get("raw") or "")[:4096] or None
        except (TypeError, ValueError):
            key["raw"] = None
    _finding(s, batch, FORGED_RATING, reason, item, **key)


# -- heartbeats --------------------------------------------------------------------------------------
def _heartbeat_row(item: Any, batch: Batch, keys: dict[tuple[str, int], Any]) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise ValueError("item is not a JSON object")
    tid, epoch, last, t, dtag = (
        item.get(k) for k in ("terminal_id", "epoch", "last_seq", "time", "dtag")
    )
    if not (isinstance(tid, str) and protocol.TERMINAL_ID_RE.fullmatch(tid)):
        raise ValueError(f"bad terminal id {tid!r}")
    if not (
        _is_int(epoch)
        and 1 <= epoch <= 65535
        and _is_int(last)
        and 0 <= last <= _U32
        and _is_int(t)
        and 0 <= t <= _U32
    ):
        raise ValueError("epoch, last_seq and time must be the signed integers")
    try:
        tag = bytes.fromhex(dtag) if isinstance(dtag, str) else b""
    except ValueError:
        tag = b""
    if len(tag) != 16:
        raise ValueError("dtag must be 32 hex digits")
    k = keys.get((tid, epoch))
    if k is None:
        raise ValueError(f"unknown terminal: the district issued no key for {tid} epoch {epoch}")
    if k.office != batch.office:
        raise ValueError(f"{tid} belongs to office {k.office}, not {batch.office}")
    want = protocol.status_tag(bytes.fromhex(k.district_key), tid, epoch, last, t)
    if not hmac.compare_digest(want, tag):
        raise ValueError("heartbeat district tag does not verify: forged or altered")
    return {
        "office": batch.office,
        "terminal_id": tid,
        "epoch": epoch,
        "last_seq": last,
        "time": t,
        "dtag": tag.hex(),
        "status": _str(item.get("status"), 16),
        "batch": batch.key,
        "stored_at": datetime.now(UTC),
    }


def _heartbeats(s: Session, batch: Batch) -> dict[str, Any]:
    ids = {
        i["terminal_id"]
        for i in batch.items
        if isinstance(i, dict) and isinstance(i.get("terminal_id"), str)
    }
    keys = _keys(s, ids)
    rows, rejected = [], []
    for i, item in enumerate(batch.items):
        try:
            rows.append(_heartbeat_row(item, batch, keys))
        except ValueError as e:
            rejected.append({"index": i, "reason": str(e)})
            tid = item.get("terminal_id") if isinstance(item, dict) else None
            _finding(
                s,
                batch,
                FORGED_HEARTBEAT,
                str(e),
                item,
                terminal_id=tid[:64] if isinstance(tid, str) else None,
            )
    stored = 0
    changed: dict[tuple[str, int], int] = {}
    if rows:
        hb = _t(Heartbeat)
        before: dict[tuple[str, int], int] = {}
        for r in rows:
            k = (r["terminal_id"], r["epoch"])
            if k not in before:
                top = s.execute(
                    select(hb.c.last_seq)
                    .where(hb.c.terminal_id == k[0], hb.c.epoch == k[1])
                    .order_by(hb.c.last_seq.desc())
                    .limit(1)
                ).scalar()
                before[k] = int(top) if top is not None else 0
        res = s.execute(
            _insert(s, hb)
            .on_conflict_do_nothing(index_elements=["terminal_id", "epoch", "last_seq", "time"])
            .returning(hb.c.id),
            rows,
        )
        stored = len(res.all())
        for r in rows:
            k = (r["terminal_id"], r["epoch"])
            if r["last_seq"] > before[k]:
                changed[k] = before[k] + 1
    integrity.refresh_gaps(s, batch.office, changed)
    return {"stored": stored, "duplicates": len(rows) - stored, "rejected": rejected}


# -- the hub's word: cases, duty, exclusions, corrections, paper, directory -------------------------
def _rating_ref(item: dict[str, Any]) -> dict[str, Any]:
    ref = item.get("rating")
    if not (
        isinstance(ref, list)
        and len(ref) == 3
        and isinstance(ref[0], str)
        and _is_int(ref[1])
        and _is_int(ref[2])
    ):
        raise ValueError('"rating" must be [terminal_id, epoch, seq]')
    return {"terminal_id": ref[0][:64], "epoch": ref[1], "seq": ref[2]}


def _case(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "code": str(item["code"])[:100],
        "desk_id": _str(item.get("desk_id"), 64),
        "procedure": _str(item.get("procedure"), 300),
        "field": _str(item.get("field"), 100),
        "official_id": _str(item.get("official_id"), 64),
        "handed_back_at": _when(item.get("handed_back_at"), "handed_back_at"),
        "source": _str(item.get("source"), 32),
    }


def _duty(item: dict[str, Any]) -> dict[str, Any]:
    if item.get("kind") not in ("in", "out"):
        raise ValueError('kind must be "in" or "out"')
    return {
        "desk_id": str(item["desk_id"])[:64],
        "official_id": str(item["official_id"])[:64],
        "kind": item["kind"],
        "at": _when(item.get("at"), "at"),
        "actor": _str(item.get("actor"), 100),
    }


def _exclusion(item: dict[str, Any]) -> dict[str, Any]:
    return {
        **_rating_ref(item),
        "reason": str(item["reason"])[:64],
        "note": _str(item.get("note"), 500),
        "actor": _str(item.get("actor"), 100),
        "created_at": _when(item.get("created_at"), "created_at"),
        "reverses": _opt_int(item.get("reverses"), "reverses"),
    }


def _correction(item: dict[str, Any]) -> dict[str, Any]:
    return {
        **_rating_ref(item),
        "official_id": _str(item.get("official_id"), 64),
        "reason": str(item["reason"])[:500],
        "actor": _str(item.get("actor"), 100),
        "created_at": _when(item.get("created_at"), "created_at"),
        "reverses": _opt_int(item.get("reverses"), "reverses"),
    }


def _opt_int(v: Any, what: str) -> int | None:
    if v is None:
        return None
    if not _is_int(v):
        raise ValueError(f"{what} must be an integer")
    return int(v)


def _hub_rows(
    make: Callable[[dict[str, Any]], dict[str, Any]],
) -> Callable[[Batch], list[dict[str, Any]]]:
    def rows(batch: Batch) -> list[dict[str, Any]]:
        out = []
        for i, item in enumerate(batch.items):
            try:
                if not isinstance(item, dict) or not _is_int(item.get("id")):
                    raise ValueError('item must be an object with an integer "id"')
                out.append(
                    {"office": batch.office, "hub_id": item["id"], "batch": batch.key, **make(item)}
                )
            except (KeyError, TypeError, ValueError) as e:
                raise BatchError(422, f"{batch.stream} item {i}: {e}") from e
        return out

    return rows


def _store_by_hub_id(
    model: Any, make: Callable[[dict[str, Any]], dict[str, Any]]
) -> Callable[[Session, Batch], dict[str, Any]]:
    rows_of = _hub_rows(make)

    def handle(s: Session, batch: Batch) -> dict[str, Any]:
        rows = rows_of(batch)
        stored = 0
        if rows:
            t = _t(model)
            res = s.execute(
                _insert(s, t)
                .on_conflict_do_nothing(index_elements=["office", "hub_id"])
                .returning(t.c.id),
                rows,
            )
            stored = len(res.all())
        return {"stored": stored, "duplicates": len(rows) - stored, "rejected": []}

    return handle


def _paper(s: Session, batch: Batch) -> dict[str, Any]:
    boxes = _hub_rows(
        lambda item: {
            "desk_id": _str(item.get("desk_id"), 64),
            "opened_at": _when_or_none(item.get("opened_at"), "opened_at"),
            "period_start": _when_or_none(item.get("period_start"), "period_start"),
            "period_end": _when_or_none(item.get("period_end"), "period_end"),
            "seal_intact": item.get("seal_intact"),
            "ballots": _opt_int(item.get("ballots"), "ballots"),
            "invalid_ballots": _opt_int(item.get("invalid_ballots"), "invalid_ballots"),
            "supersedes": _opt_int(item.get("supersedes"), "supersedes"),
            "minutes": item,
        }
    )(batch)
    stored = 0
    t, tally = _t(PaperBox), _t(PaperTally)
    for box in boxes:
        new_id = s.execute(
            _insert(s, t)
            .values(**box)
            .on_conflict_do_nothing(index_elements=["office", "hub_id"])
            .returning(t.c.id)
        ).scalar()
        if new_id is None:
            continue
        stored += 1
        counts = box["minutes"].get("tallies") or []
        try:
            rows = [
                {
                    "box_id": new_id,
                    "office": batch.office,
                    "desk_id": _str(c.get("desk_id"), 64),
                    "official_id": _str(c.get("official_id"), 64),
                    "field": _str(c.get("field"), 100),
                    "scale": int(c["scale"]),
                    "level": int(c["level"]),
                    "count": int(c["count"]),
                }
                for c in counts
            ]
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise BatchError(422, f"paper box {box['hub_id']}: bad tally ({e})") from e
        if rows:
            s.execute(tally.insert(), rows)
    return {"stored": stored, "duplicates": len(boxes) - stored, "rejected": []}


def _directory(s: Session, batch: Batch) -> dict[str, Any]:
    """Snapshots of desks, officials and terminals; the newest one is applied to the directory
    tables (an older one arriving late is kept but not applied)."""
    n = len(batch.items)
    stored = 0
    for i, item in enumerate(batch.items):
        if not isinstance(item, dict):
            raise BatchError(422, f"directory item {i} is not an object")
        version = item.get("version", batch.to - (n - 1 - i))
        if not _is_int(version):
            raise BatchError(422, f"directory item {i}: version must be an integer")
        t = _t(DirectorySnapshot)
        new = s.execute(
            _insert(s, t)
            .values(
                office=batch.office, version=version, snapshot=item, received_at=datetime.now(UTC)
            )
            .on_conflict_do_nothing(index_elements=["office", "version"])
            .returning(t.c.id)
        ).scalar()
        if new is None:
            continue
        stored += 1
        newest = s.execute(
            select(t.c.version)
            .where(t.c.office == batch.office)
            .order_by(t.c.version.desc())
            .limit(1)
        ).scalar()
        if newest == version:
            try:
                _apply_directory(s, batch.office, item)
            except (AttributeError, KeyError, TypeError, ValueError) as e:
                raise BatchError(422, f"directory item {i}: {e}") from e
    return {"stored": stored, "duplicates": n - stored, "rejected": []}


def _apply_directory(s: Session, office: str, snap: dict[str, Any]) -> None:
    for model, entries, fields in (
        (Desk, snap.get("desks") or [], {"name": "", "requires_case": False}),
        (Official, snap.get("officials") or [], {"name": "", "active": True}),
    ):
        t = _t(model)
        for e in entries:
            values = {k: e.get(k, d) for k, d in fields.items()}
            values["name"] = str(values["name"])[:200]
            stmt = _insert(s, t).values(office=office, id=str(e["id"])[:64], **values)
            s.execute(stmt.on_conflict_do_update(index_elements=["office", "id"], set_=values))
    tk = _t(TerminalKey)
    for term in snap.get("terminals") or []:
        q = update(tk).where(tk.c.terminal_id == str(term["id"]), tk.c.office == office)
        if _is_int(term.get("epoch")):
            q = q.where(tk.c.epoch == term["epoch"])
        s.execute(q.values(desk=_str(term.get("desk"), 64), active=bool(term.get("active", True))))


_HANDLERS: dict[str, Callable[[Session, Batch], dict[str, Any]]] = {
    "ratings": _ratings,
    "heartbeats": _heartbeats,
    "cases": _store_by_hub_id(CaseFile, _case),
    "duty": _store_by_hub_id(DutyEvent, _duty),
    "exclusions": _store_by_hub_id(Exclusion, _exclusion),
    "corrections": _store_by_hub_id(Correction, _correction),
    "paper": _paper,
    "directory": _directory,
}
