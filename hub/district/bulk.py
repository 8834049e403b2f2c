"""Storing a ratings batch in bulk: the district's hot path when a hub catches up.

The checks are those of ``receive._rating_row`` (docs/sync.md, "What the district checks"), done
with less work per item: the record is unpacked with one ``struct`` call and its district tag is
checked with a keyed HMAC computed once per terminal and epoch (the key pads and the
``SIPAS-R1 <terminal id>`` prefix are hashed once; each item copies that state and adds its 16-byte
body). Anything unusual (a QR rating, an unknown terminal, a record that does not decode or does
not verify) goes to ``receive._rating_row`` itself, so a refused item gets exactly its reason.

Storage: on PostgreSQL the rows are ``COPY``-ed in binary (no text formatting or parsing of the
times and numbers) straight into the table; if a key is already there, into a temporary table
(one per connection, emptied at commit) and moved with one ``INSERT ... SELECT ... ON CONFLICT DO
NOTHING RETURNING`` the keys stored; on SQLite (the embedded default) an ``executemany`` insert, then a read-back by key. Either
way only the first item of a key in a batch is offered for storage; every other item whose key is
not among those stored is compared with the stored record (a repeat, or a conflicting record).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import psycopg
from sqlalchemy import bindparam, text
from sqlmodel import Session

from hub import protocol
from hub.district.models import Rating, TerminalKey

# The stored columns of a rating, in the order of the row tuples built here.
COLUMNS = (
    "terminal_id",
    "epoch",
    "seq",
    "office",
    "raw",
    "flags",
    "level",
    "scale",
    "reason",
    "press_time",
    "clock_unknown",
    "repeat",
    "test",
    "prompted",
    "followup",
    "verified",
    "channel",
    "desk",
    "official_id",
    "case_code",
    "link_status",
    "hub_received_at",
    "batch",
    "stored_at",
)
Key = tuple[str, int, int]
_BODY = struct.Struct("<BBHIIBBBB")
_TEMP = "sipas_rating_in"
_COLS = ", ".join(f'"{c}"' for c in COLUMNS)
_COPY_TYPES = text(
    "SELECT a.attname, a.atttypid::int FROM pg_attribute a "
    "WHERE a.attrelid = CAST('rating' AS regclass) AND a.attnum > 0 AND NOT a.attisdropped"
)


def _pads(key: bytes, prefix: bytes) -> tuple[Any, Any]:
    """HMAC-SHA256 (RFC 2104) of ``prefix + ...`` under ``key``, as its two hash states: the inner
    one with the key pad and the prefix already hashed, the outer one with its key pad. A tag is
    then two copies, two updates and two digests in C (``hmac.new`` per item costs ~3x more)."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    inner.update(prefix)
    return inner, hashlib.sha256(bytes(b ^ 0x5C for b in key))


def _when(v: Any) -> datetime | None:
    if v is None:
        return None
    if not isinstance(v, str):
        raise ValueError("not a time")
    t = datetime.fromisoformat(v)
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _s(v: Any, n: int) -> str | None:
    return None if v is None else str(v)[:n]


def rows_of(
    items: list[Any],
    office: str,
    batch_key: str,
    keys: dict[tuple[str, int], TerminalKey],
    slow: Callable[[Any], dict[str, Any]],
) -> tuple[list[tuple[Any, ...]], list[int], list[tuple[int, str]]]:
    """(row tuples in :data:`COLUMNS` order, the item index of each row, refused (index, reason)).

    ``slow(item)`` is the reference check (``receive._rating_row``): it returns the row as a dict
    or raises ``ValueError`` with the reason the item is refused."""
    macs: dict[tuple[str, int], Any] = {}
    now = datetime.now(UTC)
    rows: list[tuple[Any, ...]] = []
    where: list[int] = []
    refused: list[tuple[int, str]] = []
    fromhex = bytes.fromhex
    unpack = _BODY.unpack_from
    compare = hmac.compare_digest
    fromts = datetime.fromtimestamp
    id_ok = protocol.TERMINAL_ID_RE.fullmatch
    for i, item in enumerate(items):
        row = None
        try:
            if type(item) is dict and item.get("channel", "terminal") == "terminal":
                tid, epoch, seq = item.get("terminal_id"), item.get("epoch"), item.get("seq")
                hexraw = item.get("raw")
                if (
                    type(tid) is str
                    and type(epoch) is int
                    and type(seq) is int
                    and type(hexraw) is str
                    and len(hexraw) == 96
                ):
                    mk = (tid, epoch)
                    mac = macs.get(mk, False)
                    if mac is False:
                        k = keys.get(mk)
                        mac = None
                        if k is not None and k.office == office and id_ok(tid):
                            mac = _pads(fromhex(k.district_key), b"SIPAS-R1" + tid.encode() + b"\0")
                        macs[mk] = mac
                    raw = fromhex(hexraw)
                    v, fl, ep, sq, t, level, reason, scale, reserved = unpack(raw)
                    if (
                        mac is not None
                        and v == 1
                        and not fl & ~31
                        and not reserved
                        and ep == epoch
                        and sq == seq
                        and ep
                        and sq
                        and 3 <= scale <= 5
                        and 1 <= level <= scale
                        and reason <= 4
                    ):
                        inner = mac[0].copy()
                        inner.update(raw[:16])
                        outer = mac[1].copy()
                        outer.update(inner.digest())
                        if compare(outer.digest()[:16], raw[32:48]):
                            unknown = bool(fl & 1)
                            if unknown:
                                press = _when(item.get("press_time"))
                                if press is None:
                                    raise ValueError("press_time")
                            else:
                                press = fromts(t, UTC)
                            row = (
                                tid,
                                epoch,
                                seq,
                                office,
                                raw,
                                fl,
                                level,
                                scale,
                                reason,
                                press,
                                unknown,
                                bool(fl & 2),
                                bool(fl & 4),
                                bool(fl & 8),
                                bool(fl & 16),
                                True,
                                "terminal",
                                _s(item.get("desk"), 64),
                                _s(item.get("official_id"), 64),
                                _s(item.get("case_code"), 100),
                                _s(item.get("link_status"), 32),
                                _when(item.get("received_at")),
                                batch_key,
                                now,
                            )
        except (ValueError, TypeError, struct.error):
            row = None
        if row is None:  # the reference check: a QR rating, or the exact reason for refusing
            try:
                d = slow(item)
            except ValueError as e:
                refused.append((i, str(e)))
                continue
            row = tuple(d[c] for c in COLUMNS[:-1]) + (now,)
        rows.append(row)
        where.append(i)
    return rows, where, refused


def first_per_key(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The first row of each rating key, in batch order (what is offered for storage)."""
    seen: set[Key] = set()
    out = []
    for r in rows:
        k = (r[0], r[1], r[2])
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out


def store(s: Session, rows: list[tuple[Any, ...]], batch_key: str) -> set[Key]:
    """Insert rows with unique keys (``ON CONFLICT DO NOTHING``); the keys actually stored.
    Once per transaction (the temporary table is emptied at commit)."""
    if not rows:
        return set()
    if s.get_bind().dialect.name == "postgresql":
        return _store_pg(s, rows)
    return _store_sqlite(s, rows, batch_key)


def _copy_in(s: Session, pg: Any, table: str, rows: list[tuple[Any, ...]]) -> None:
    """``COPY table (COLUMNS) FROM STDIN`` in binary, with the column types the table has."""
    conn = s.connection()
    info = conn.info.get("rating_copy_types")
    if info is None:  # the type OIDs of COLUMNS, once per database connection
        oids = {name: oid for name, oid in conn.execute(_COPY_TYPES)}
        info = conn.info["rating_copy_types"] = [oids[c] for c in COLUMNS]
    with pg.cursor() as cur, cur.copy(f"COPY {table} ({_COLS}) FROM STDIN (FORMAT BINARY)") as cp:
        cp.set_types(info)
        write = cp.write_row
        for r in rows:
            write(r)


def _store_pg(s: Session, rows: list[tuple[Any, ...]]) -> set[Key]:
    conn = s.connection()
    pg: Any = conn.connection.driver_connection
    # First try: COPY straight into the table, in a savepoint. A catch-up sends keys the district
    # has never seen, and then this is all. If one key is already there (a hub that lost its
    # watermark), the unique key refuses the whole COPY, the savepoint is rolled back and the
    # rows go the careful way: ON CONFLICT DO NOTHING, the stored keys returned.
    savepoint = conn.begin_nested()
    try:
        _copy_in(s, pg, "rating", rows)
    except psycopg.errors.UniqueViolation:
        savepoint.rollback()
    else:
        savepoint.commit()
        return {(r[0], r[1], r[2]) for r in rows}
    # One temporary table per database connection, emptied when the transaction commits (and
    # gone with it if it rolls back before its first commit: hence IF NOT EXISTS every time).
    conn.exec_driver_sql(
        f"CREATE TEMP TABLE IF NOT EXISTS {_TEMP} ON COMMIT DELETE ROWS AS "
        f"SELECT {_COLS} FROM rating WITH NO DATA"
    )
    _copy_in(s, pg, _TEMP, rows)
    res = conn.exec_driver_sql(
        f"INSERT INTO rating ({_COLS}) SELECT {_COLS} FROM {_TEMP} "
        "ON CONFLICT (terminal_id, epoch, seq) DO NOTHING RETURNING terminal_id, epoch, seq"
    )
    return {(a, b, c) for a, b, c in res}


def _store_sqlite(s: Session, rows: list[tuple[Any, ...]], batch_key: str) -> set[Key]:
    from sqlalchemy.dialects.sqlite import insert

    t: Any = Rating.__table__  # type: ignore[attr-defined]
    s.execute(
        insert(t).on_conflict_do_nothing(index_elements=["terminal_id", "epoch", "seq"]),
        [dict(zip(COLUMNS, r, strict=True)) for r in rows],
    )
    # what this batch stored carries its key
    return {
        k
        for k, (_, b) in stored_records(s, ((r[0], r[1], r[2]) for r in rows)).items()
        if b == batch_key
    }


def stored_records(s: Session, keys: Iterable[Key]) -> dict[Key, tuple[bytes, str]]:
    """(raw, batch key) of the stored rating under each key, one query per terminal and epoch."""
    groups: dict[tuple[str, int], list[int]] = {}
    for tid, epoch, seq in keys:
        groups.setdefault((tid, epoch), []).append(seq)
    out: dict[Key, tuple[bytes, str]] = {}
    q = text(
        "SELECT seq, raw, batch FROM rating WHERE terminal_id = :t AND epoch = :e AND seq IN :seqs"
    ).bindparams(bindparam("seqs", expanding=True))
    for (tid, epoch), seqs in groups.items():
        for n in range(0, len(seqs), 500):
            part = seqs[n : n + 500]
            for seq, raw, b in s.execute(q, {"t": tid, "e": epoch, "seqs": part}):
                out[(tid, epoch, int(seq))] = (bytes(raw), b)
    return out
