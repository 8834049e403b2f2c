"""Catch-up of a hub's backlog by the district server on PostgreSQL (issue 7, "Measured").

A hub SQLite database is filled with a backlog of ``--ratings`` signed ratings from ``--terminals``
terminals (records made and signed with ``hub/protocol.py`` exactly as the firmware makes them:
the hub tag with a hub key, the district tag with the key the district issued for the terminal),
plus the terminals' signed heartbeats (one every 100 ratings of a terminal, so the heartbeats
stream runs ahead of the ratings and the district keeps re-checking open gaps while it catches
up: the worst case for the suspected-deletion check). Then:

1. ``sipas-district serve`` runs as its own process on a fresh PostgreSQL database;
2. the hub's real sender (``hub.sync.SyncSender``, the hub's default batch size unless
   ``--batch-size``) pushes everything; the clock runs from its first request to the moment every
   stream is caught up; each request's latency is recorded;
3. baseline, same run, same database: a plain ``COPY`` of the same rows (read back from the
   district's ``rating`` table) into a table of the same shape (``LIKE rating INCLUDING ALL``:
   same columns, indexes and unique key), committed.

Prints one JSON object: ``seconds``, ``ratings_per_s`` (ratings / seconds: the district's insert
rate as the hub sees it, sender included), ``copy_rows_per_s``, ``ratio`` (goal >= 0.25),
``batch_ms`` p50/p95 of the ratings requests, and what was checked (every rating stored once,
nothing refused, no open suspected deletion). Exit 1 if a check fails.

    .venv/bin/python bench/district_catchup.py [--ratings 1000000] [--terminals 300]
        [--batch-size 1000] [--pg-url postgresql+psycopg://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import Engine, make_url  # noqa: E402

from bench._district import start_district  # noqa: E402
from hub import protocol  # noqa: E402
from hub import sync as hub_sync  # noqa: E402
from hub.db import make_engine as hub_engine  # noqa: E402
from hub.district import auth, keys  # noqa: E402
from hub.district.db import make_engine as district_engine  # noqa: E402
from hub.district.db import migrate  # noqa: E402
from hub.district.models import Office  # noqa: E402

OFFICE = "ubnd-phuong-1"
PG_URL = os.environ.get(
    "SIPAS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
HEARTBEAT_EVERY = 100  # a terminal's signed last_seq logged by the hub every this many ratings


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


# -- the district's database and directory --------------------------------------------------------
def fresh_database(admin_url: str) -> tuple[str, Engine]:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = "sipas_bench_" + secrets.token_hex(5)
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False), admin


def drop_database(admin: Engine, url: str) -> None:
    name = make_url(url).database
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def register(engine: Engine, terminals: int) -> tuple[str, list[tuple[str, bytes]]]:
    """The office, its hub token and the terminals with the district keys the district issued."""
    from sqlmodel import Session

    with Session(engine) as s:
        s.add(Office(id=OFFICE, name="UBND phường 1"))
        s.commit()
    token = auth.create_hub_token(engine, office=OFFICE)[1]
    out = []
    for i in range(terminals):
        tid = f"t-{0xA4CF00000000 + i:012x}"
        row, _ = keys.issue_key(engine, terminal_id=tid, office=OFFICE, epoch=1, desk=None, by="b")
        out.append((tid, bytes.fromhex(row.district_key)))
    return token, out


# -- the hub's backlog ----------------------------------------------------------------------------
def _ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")  # how SQLAlchemy stores a datetime in SQLite


def fill_hub(path: Path, n: int, terms: list[tuple[str, bytes]]) -> None:
    """``n`` ratings, one terminal after another in turn, and the heartbeats the hub logged."""
    hub_engine(f"sqlite:///{path}").dispose()  # the hub's schema
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")  # generating the backlog only
    cols = [r[1] for r in db.execute("PRAGMA table_info(rating)")]
    hub_keys = {tid: secrets.token_bytes(32) for tid, _ in terms}
    t0 = 1_767_225_600  # 2026-01-01, ratings spread over about four months
    rows: list[dict[str, Any]] = []
    beats: list[tuple[Any, ...]] = []
    seqs = dict.fromkeys((tid for tid, _ in terms), 0)
    sql = f"INSERT INTO rating ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
    for i in range(n):
        tid, dkey = terms[i % len(terms)]
        seq = seqs[tid] = seqs[tid] + 1
        t = t0 + i * 10
        level = 1 + (i * 7919) % 3
        body = struct.pack("<BBHIIBBBB", 1, 0, 1, seq, t, level, 0, 3, 0)
        raw = (
            body
            + protocol.rating_tag(hub_keys[tid], tid, body)
            + protocol.rating_tag(dkey, tid, body)
        )
        press = datetime.fromtimestamp(t, UTC)
        rows.append(
            {
                "terminal_id": tid,
                "epoch": 1,
                "seq": seq,
                "office": OFFICE,
                "desk": f"quay-{1 + i % len(terms) % 12}",
                "level": level,
                "scale": 3,
                "reason": 0,
                "flags": 0,
                "press_time": _ts(press),
                "clock_unknown": 0,
                "repeat": 0,
                "test": 0,
                "prompted": 0,
                "received_at": _ts(press + timedelta(seconds=1)),
                "official_id": f"can-bo-{i % len(terms) % 40:02d}",
                "case_id": None,
                "link_status": "no_case",
                "channel": "terminal",
                "raw": raw,
                "chain": "",
            }
        )
        if seq % HEARTBEAT_EVERY == 0 or i >= n - len(terms):
            ht = t + 5
            tag = protocol.status_tag(dkey, tid, 1, seq, ht)
            beats.append((tid, 1, seq, ht, tag.hex(), '{"state": "online"}', _ts(press)))
        if len(rows) == 50_000 or i == n - 1:
            db.executemany(sql, [tuple(r.get(c) for c in cols) for r in rows])
            db.commit()
            rows.clear()
            say(f"hub backlog: {i + 1:,} ratings signed and stored")
    db.executemany(
        "INSERT INTO heartbeat (terminal_id, epoch, last_seq, time, dtag, status, received_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        beats,
    )
    db.commit()
    db.close()
    say(f"hub backlog: {len(beats):,} heartbeats")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the catch-up -----------------------------------------------------------------------------------
def catch_up(
    hub_db: Path, base: str, token: str, batch_size: int, n: int
) -> tuple[float, list[float], dict[str, Any]]:
    engine = hub_engine(f"sqlite:///{hub_db}")
    sender = hub_sync.SyncSender(
        engine, OFFICE, url=base, token=token, batch_size=batch_size, batch_wait_s=0.0
    )
    latencies: list[float] = []
    post = sender._post  # noqa: SLF001 - timing the real request

    def timed(batch: Any, *lane: Any) -> dict[str, Any]:
        t = time.perf_counter()
        try:
            return post(batch, *lane)
        finally:
            if batch.stream == "ratings":
                latencies.append((time.perf_counter() - t) * 1000)

    sender._post = timed  # type: ignore[method-assign]  # noqa: SLF001
    start = time.perf_counter()
    rounds = 0
    while True:
        rounds += 1
        if sender.run_once(force=True):  # a full batch went: more is waiting
            if rounds % 50 == 0:
                say(f"catch-up: {rounds} rounds")
            continue
        st = hub_sync.status(engine, OFFICE, district_url=base, alert_after_s=1e9)
        if st["behind_items"] == 0:
            break
        failing = [s for s in st["streams"] if s["last_error"] and s["attempts"]]
        if failing:
            raise SystemExit(f"sync failed: {failing[0]['stream']}: {failing[0]['last_error']}")
    seconds = time.perf_counter() - start
    sender.stop()
    engine.dispose()
    return seconds, latencies, st


def copy_baseline(url: str) -> tuple[float, int]:
    """A plain COPY of the district's stored ratings into a same-shaped table; rows/s."""
    import psycopg

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as conn:
        cols = (
            "terminal_id, epoch, seq, office, raw, flags, level, scale, reason, press_time, "
            "clock_unknown, repeat, test, prompted, followup, verified, channel, desk, "
            "official_id, case_code, link_status, hub_received_at, batch, stored_at"
        )
        data = bytearray()
        with conn.cursor() as cur:
            with cur.copy(f"COPY (SELECT {cols} FROM rating ORDER BY id) TO STDOUT") as cp:
                for chunk in cp:
                    data += chunk
            rows = cur.execute("SELECT count(*) FROM rating").fetchone()
            cur.execute("CREATE TABLE rating_copy (LIKE rating INCLUDING ALL)")
        conn.commit()
        view = memoryview(data)
        start = time.perf_counter()
        with conn.cursor() as cur, cur.copy(f"COPY rating_copy ({cols}) FROM STDIN") as cp:
            for i in range(0, len(view), 1 << 20):
                cp.write(view[i : i + (1 << 20)])
        conn.commit()
        seconds = time.perf_counter() - start
        with conn.cursor() as cur:
            cur.execute("DROP TABLE rating_copy")
        conn.commit()
    count = int(rows[0]) if rows else 0
    return count / seconds, count


def checks(url: str, n: int) -> dict[str, Any]:
    e = create_engine(url)
    with e.connect() as c:
        got = c.execute(
            text("SELECT count(*), count(DISTINCT (terminal_id, epoch, seq)) FROM rating")
        ).one()
        findings = c.execute(text("SELECT count(*) FROM finding")).scalar()
        open_gaps = c.execute(
            text("SELECT count(*) FROM suspected_deletion WHERE resolved_at IS NULL")
        ).scalar()
        ranges = c.execute(text("SELECT count(*) FROM suspected_deletion")).scalar()
    e.dispose()
    return {
        "stored": int(got[0]),
        "distinct_keys": int(got[1]),
        "refused": int(findings or 0),
        "open_suspected_deletions": int(open_gaps or 0),
        "suspected_deletion_rows_resolved_during_catch_up": int(ranges or 0),
        "ok": int(got[0]) == n == int(got[1]) and not findings and not open_gaps,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--ratings", type=int, default=1_000_000)
    ap.add_argument("--terminals", type=int, default=300)
    ap.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="the hub sender's batch size (default: the hub's default, SIPAS_HUB_SYNC_BATCH_SIZE)",
    )
    ap.add_argument("--pg-url", default=PG_URL, help="a PostgreSQL server to create a database on")
    ap.add_argument("--keep", action="store_true", help="keep the database and files afterwards")
    ap.add_argument(
        "--profile",
        metavar="FILE",
        help="py-spy samples the district process during the catch-up (raw collapsed stacks); "
        "py-spy is not a project dependency: .venv/bin/pip install py-spy",
    )
    args = ap.parse_args()
    batch_size = args.batch_size
    if batch_size is None:
        from hub.config import Settings

        batch_size = int(Settings.model_fields["sync_batch_size"].default)

    tmp = Path(tempfile.mkdtemp(prefix="sipas-district-bench-"))
    url, admin = fresh_database(args.pg_url)
    proc = None
    try:
        say(f"district database {make_url(url).database}; files in {tmp}")
        engine = district_engine(url)
        migrate(engine)
        token, terms = register(engine, args.terminals)
        engine.dispose()
        t = time.perf_counter()
        fill_hub(tmp / "hub.sqlite3", args.ratings, terms)
        say(f"backlog made in {time.perf_counter() - t:.1f} s")
        proc, base = start_district(url, tmp)
        cpu0 = cpu_seconds(proc.pid)
        say(f"district: sipas-district serve (pid {proc.pid}) at {base}; catching up")
        spy = None
        if args.profile:
            spy = subprocess.Popen(
                [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(proc.pid)]
                + ["--format", "raw", "--rate", "200", "--idle", "-o", args.profile],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1)
        seconds, lat, st = catch_up(tmp / "hub.sqlite3", base, token, batch_size, args.ratings)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        district_cpu = cpu_seconds(proc.pid) - cpu0
        proc.terminate()
        proc.wait(10)
        proc = None
        say(f"caught up in {seconds:.1f} s; COPY baseline")
        copy_rate, copied = copy_baseline(url)
        check = checks(url, args.ratings)
        rate = args.ratings / seconds
        result = {
            "bench": "district_catchup",
            "sender": "hub.sync.SyncSender (the hub's own sender)",
            "database": "PostgreSQL",
            "ratings": args.ratings,
            "terminals": args.terminals,
            "heartbeats_every": HEARTBEAT_EVERY,
            "batch_size": batch_size,
            "batches": len(lat),
            "seconds": round(seconds, 2),
            "ratings_per_s": round(rate),
            "copy_rows_per_s": round(copy_rate),
            "copy_rows": copied,
            "ratio": round(rate / copy_rate, 3),
            "ratio_goal": 0.25,
            "seconds_goal": 60,
            "batch_ms": {"p50": round(pct(lat, 50), 1), "p95": round(pct(lat, 95), 1)},
            "district_ratings_per_s_in_requests": round(args.ratings / (sum(lat) / 1000)),
            "district_cpu_s": round(district_cpu, 1),
            "hub_sent": {s["stream"]: s["sent"] for s in st["streams"] if s["sent"]},
            "checks": check,
        }
        print(json.dumps(result, indent=2))
        return 0 if check["ok"] else 1
    finally:
        if proc is not None:
            proc.kill()
        if args.keep:
            say(f"kept: {url} and {tmp}")
        else:
            drop_database(admin, url)
            for p in sorted(tmp.rglob("*"), reverse=True):
                p.unlink() if p.is_file() else p.rmdir()
            tmp.rmdir()


if __name__ == "__main__":
    sys.exit(main())
