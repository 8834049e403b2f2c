"""District report latency over ``--count`` ratings (default 10,000,000) from 1,000 terminals in
20 offices, on PostgreSQL, read from the district's rollups; next to the plain GROUP BY.

Makes a fresh PostgreSQL database (``--pg-url``, default the local server; dropped at the end
unless ``--keep``), migrates it with the district's own migrations, and fills it with ``COPY``:
a year (2025) of ratings at working hours (50 terminals per office, one desk and two officials
each, 5 % QR ratings), a case handed back before half of them (8 fields), 1 % exclusions (a tenth
taken back) and 0.5 % corrections. Then, on the district's report code:

- ``load_s``: the COPY; ``build_s``: the first build of the rollups (``reports_rollup.rebuild``:
  every office day marked and recomputed, as after ``sipas-district migrate`` on a full database);
- per report, p50/p95 ms to the last byte of the answer as district staff get it: ``GET
  /api/v1/reports/satisfaction`` of a ``sipas-district serve`` process on this database, over
  loopback with an admin token, ``--reps`` calls (the API first refreshes dirty days, as every
  report does): an office's month (by desk), all offices for a month (the ranking), every office
  by field for a quarter, every office by official for a year; ``in_process``: the same report
  as a function call in this process (``hub.district.reports.satisfaction``, with the collector
  settings of an API process, ``hub.district.api.tune_gc``); ``api_equals_function``: same rows;
  and the monthly XLSX of the whole district (``cold``: made again each call; ``cached``: the
  export cache of the month's version);
- ``late``: one late batch of 1,000 ratings spread over 30 old days, received through the real
  receive path, then the next report (which pays the refresh of those days): ms;
- ``baseline``: the same reports by plain GROUP BY over the rating, exclusion, correction and case
  tables (``direct=True``), p50/p95 over ``--baseline-reps`` calls; ``equal``: same answers.

    .venv/bin/python bench/district_report_latency.py [--count 10000000] [--reps 30] [--keep]
    .venv/bin/python bench/district_report_latency.py --reuse DATABASE   # a kept database again

``--reuse``: measure again on a database an earlier ``--keep`` run left (no load, no build; its
late batch adds 1,000 more ratings from another new terminal).

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench._district import start_district  # noqa: E402
from hub.district import receive, reports, reports_export  # noqa: E402
from hub.district import reports_rollup as ru  # noqa: E402
from hub.district.api import tune_gc  # noqa: E402
from hub.district.db import make_engine, migrate  # noqa: E402
from hub.periods import resolve  # noqa: E402

FIELDS = ["Hộ tịch", "Chứng thực", "Người có công", "Bảo trợ xã hội", "Cư trú", "Đất đai",
          "Xây dựng", "Kinh doanh"]  # fmt: skip
PG = os.environ.get("SIPAS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
YEAR_START = datetime(2025, 1, 1, tzinfo=UTC) - timedelta(hours=7)  # office midnight, 1 Jan 2025
RAW = "\\\\x" + "00" * 48  # reports never read the record's bytes


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return round(s[min(len(s) - 1, int(q * len(s)))], 2)


def timed(fn: Callable[[], Any], reps: int, warm: int = 2) -> tuple[dict[str, float], Any]:
    out = None
    for _ in range(warm):
        out = fn()
    ms = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        ms.append((time.perf_counter() - t0) * 1000)
    return {"p50_ms": pct(ms, 0.5), "p95_ms": pct(ms, 0.95), "n": reps}, out


def working_seconds(rng: random.Random) -> int:
    """Seconds from office midnight of 1 Jan 2025 to a press on a weekday, 07:30-17:00."""
    while True:
        day = rng.randrange(365)
        if (day + 2) % 7 < 5:  # 1 Jan 2025 was a Wednesday
            return day * 86400 + 27000 + rng.randrange(34200)


_DAYS: dict[int, str] = {}


def _stamp(when: float) -> str:
    """UTC text for COPY (strftime is too slow for millions of rows)."""
    day, sec = divmod(int(when), 86400)
    d = _DAYS.get(day)
    if d is None:
        d = _DAYS[day] = datetime.fromtimestamp(day * 86400, UTC).strftime("%Y-%m-%d")
    h, rem = divmod(sec, 3600)
    return f"{d} {h:02d}:{rem // 60:02d}:{rem % 60:02d}+00"


def load(url: str, count: int, offices: int, terminals: int, seed: int) -> dict[str, int]:
    """Offices, terminals, directory, then ratings, cases, exclusions, corrections with COPY."""
    import psycopg

    rng = random.Random(seed)
    per_office = terminals // offices
    pg = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    n_cases = n_excl = n_corr = 0
    with psycopg.connect(pg) as conn, conn.cursor() as cur:
        for o in range(offices):
            office = f"xa-{o:02d}"
            cur.execute("INSERT INTO office (id, name, created_at) VALUES (%s, %s, now())",
                        (office, f"UBND xã {o + 1}"))  # fmt: skip
            for d in range(per_office):
                cur.execute("INSERT INTO desk VALUES (%s, %s, %s, false)",
                            (office, f"quay-{d:02d}", f"Quầy {d + 1}"))  # fmt: skip
                for k in (0, 1):
                    cur.execute("INSERT INTO official VALUES (%s, %s, %s, true)",
                                (office, f"cb-{d:02d}-{k}", f"Cán bộ {d + 1}.{k + 1}"))  # fmt: skip
        per_terminal = count // terminals
        t0 = time.perf_counter()
        base = YEAR_START.timestamp()
        excl: list[str] = []
        corr: list[str] = []
        # cases go through a second connection's COPY at the same time (no list of millions)
        with (
            psycopg.connect(pg) as conn2,
            conn2.cursor() as cur2,
            cur2.copy(
                "COPY case_file (office, hub_id, code, desk_id, field, official_id, handed_back_at, "
                "batch) FROM STDIN"
            ) as cases,
            cur.copy(
                "COPY rating (terminal_id, epoch, seq, office, raw, flags, level, scale, reason, "
                "press_time, clock_unknown, repeat, test, prompted, followup, verified, channel, desk, "
                "official_id, case_code, link_status, batch, stored_at) FROM STDIN"
            ) as cp,
        ):
            for t in range(terminals):
                o = t // per_office
                office, desk = f"xa-{o:02d}", f"quay-{t % per_office:02d}"
                cb = desk.replace("quay", "cb")
                tid, qid = f"t-{t:012x}", f"qr-{o:02d}-{desk}"
                lines, case_lines = [], []
                for seq in range(1, per_terminal + 1):
                    when = base + working_seconds(rng)
                    stamp = _stamp(when)
                    r = rng.random()
                    level = 1 if r < 0.55 else 2 if r < 0.85 else 3
                    qr = rng.random() < 0.05
                    code, link = "\\N", "\\N"
                    if rng.random() < 0.5:
                        n_cases += 1
                        code, link = f"{tid}-{seq}", "linked"
                        case_lines.append(
                            f"{office}\t{n_cases}\t{code}\t{desk}\t{FIELDS[rng.randrange(8)]}\t"
                            f"{cb}-{seq % 2}\t{_stamp(when - 120)}\tb\n"
                        )
                    key = f"{qid}\t2\t{seq}" if qr else f"{tid}\t1\t{seq}"
                    lines.append(
                        f"{key}\t{office}\t{RAW}\t0\t{level}\t3\t0\t{stamp}\tf\tf\tf\tf\tf\t"
                        f"{'f' if qr else 't'}\t{'qr' if qr else 'terminal'}\t{desk}\t"
                        f"{cb}-{seq % 2}\t{code}\t{link}\tbench\t{stamp}\n"
                    )
                    x = rng.random()
                    if x < 0.01:
                        n_excl += 1
                        excl.append(f"{office}\t{n_excl}\t{key}\trepeat\t\\N\t{stamp}\t\\N\tb\n")
                        if x < 0.001:  # taken back
                            excl.append(f"{office}\t{5_000_000 + n_excl}\t{key}\trepeat\t"
                                        f"{n_excl}\t{stamp}\t\\N\tb\n")  # fmt: skip
                    elif x < 0.015:
                        n_corr += 1
                        corr.append(f"{office}\t{n_corr}\t{key}\t{cb}-{1 - seq % 2}\tnhầm\t"
                                    f"{stamp}\t\\N\tb\n")  # fmt: skip
                cp.write("".join(lines))
                cases.write("".join(case_lines))
                if t % 50 == 49:
                    say(f"ratings: {(t + 1) * per_terminal:,} ({time.perf_counter() - t0:.0f} s)")
        say(f"cases: {n_cases:,}")
        with cur.copy(
            "COPY exclusion (office, hub_id, terminal_id, epoch, seq, reason, reverses, "
            "created_at, note, batch) FROM STDIN"
        ) as cp:
            cp.write("".join(excl))
        with cur.copy(
            "COPY correction (office, hub_id, terminal_id, epoch, seq, official_id, reason, "
            "created_at, reverses, batch) FROM STDIN"
        ) as cp:
            cp.write("".join(corr))
        conn.commit()
        cur.execute("ANALYZE")
    return {"ratings": per_terminal * terminals, "cases": n_cases, "exclusions": len(excl),
            "corrections": n_corr}  # fmt: skip


def start_api(url: str) -> tuple[httpx.Client, subprocess.Popen[bytes]]:
    """``sipas-district serve`` on this database, and a client with an admin token (the bootstrap
    one), as district staff would query it."""
    token = secrets.token_hex(16)
    data = Path(tempfile.mkdtemp(prefix="sipas-report-bench-"))
    proc, base = start_district(url, data, {"SIPAS_DISTRICT_ADMIN_TOKEN": token})
    client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=600)
    return client, proc


def late_batch(engine: Any, rng: random.Random) -> float:
    """1,000 signed ratings of a new terminal spread over 30 old days, received as a hub's
    batch; then the next report (which pays for the refresh): ms of that report."""
    from tests.fixtures.district import batch, new_terminal

    t = new_terminal(engine, "xa-00")
    items = []
    for seq in range(1, 1001):
        day = datetime(2025, 3, 1, 2, tzinfo=UTC) + timedelta(days=seq % 30)
        it = t.item(seq, 1 + seq % 3, case_code=None, desk="quay-00")
        it["raw"] = t.record(seq, 1 + seq % 3, t=int(day.timestamp()) - seq).hex()
        items.append(it)
    # a position of its own (a --reuse run sends a new batch, not a repeat of the first run's)
    body, headers = batch("xa-00", "ratings", int(time.time()), items)
    b = receive.parse(gzip.decompress(body), stream="ratings", key=headers["Idempotency-Key"],
                      office="xa-00")  # fmt: skip
    receive.receive(engine, b)
    t0 = time.perf_counter()
    reports.satisfaction(engine, resolve("month:2025-03"), by="office")
    return round((time.perf_counter() - t0) * 1000, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--count", type=int, default=10_000_000, help="ratings to generate")
    ap.add_argument("--offices", type=int, default=20)
    ap.add_argument("--terminals", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--baseline-reps", type=int, default=3)
    ap.add_argument("--pg-url", default=PG, help="a PostgreSQL server (a database is created)")
    ap.add_argument("--keep", action="store_true", help="keep the database (its name is printed)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--reuse", metavar="DATABASE", help="a database kept by an earlier --keep run")
    a = ap.parse_args()
    admin = create_engine(a.pg_url, isolation_level="AUTOCOMMIT")
    name = a.reuse or "sipas_bench_" + secrets.token_hex(4)
    if a.reuse:
        a.keep = True
    else:
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(a.pg_url).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    out: dict[str, Any] = {"database": name if a.keep else None}
    try:
        migrate(engine)
        if a.reuse:
            with engine.connect() as c:
                out["rows"] = {"rating": c.execute(text("SELECT count(*) FROM rating")).scalar()}
        else:
            t0 = time.perf_counter()
            out["rows"] = load(url, a.count, a.offices, a.terminals, a.seed)
            out["load_s"] = round(time.perf_counter() - t0, 1)
            say(f"loaded in {out['load_s']} s; building the rollups")
            st = ru.rebuild(engine)
            out["build_s"] = round(st.seconds, 1)
            out["build_days"] = st.days
            with engine.connect() as c:  # fresh statistics, as autovacuum would have them by now
                c.execute(text("ANALYZE"))
                c.commit()
        with engine.connect() as c:
            out["rollup_rows"] = c.execute(
                text(
                    "SELECT (SELECT COUNT(*) FROM report_unit) + (SELECT COUNT(*) FROM "
                    "report_excl) + (SELECT COUNT(*) FROM report_case)"
                )  # fmt: skip
            ).scalar()
        tune_gc()  # the collector settings of a `sipas-district serve` process
        api, server = start_api(url)
        cases: dict[str, tuple[Callable[[bool], Any], dict[str, str]]] = {
            "office_month_by_desk": (lambda d: reports.satisfaction(
                engine, resolve("month:2025-06"), by="desk", offices=["xa-03"], direct=d),
                {"period": "month:2025-06", "by": "desk", "office": "xa-03"}),
            "all_offices_month": (lambda d: reports.satisfaction(
                engine, resolve("month:2025-06"), by="office", direct=d),
                {"period": "month:2025-06", "by": "office"}),
            "all_offices_quarter_by_field": (lambda d: reports.satisfaction(
                engine, resolve("quarter:2025-Q2"), by="field", direct=d),
                {"period": "quarter:2025-Q2", "by": "field"}),
            "all_offices_year_by_official": (lambda d: reports.satisfaction(
                engine, resolve("year:2025"), by="official", direct=d),
                {"period": "year:2025", "by": "official"}),
        }  # fmt: skip
        res: dict[str, Any] = {}
        try:
            for kind, (fn, query) in cases.items():
                say(f"{kind}")

                def get(query: dict[str, str] = query) -> bytes:
                    r = api.get("/api/v1/reports/satisfaction", params=query)
                    r.raise_for_status()
                    return r.content  # to the answer's last byte (parsing it is the client's)

                fig, body = timed(get, a.reps)
                answer = json.loads(body)
                fig["in_process"], got = timed(lambda fn=fn: fn(False), a.reps)
                fig["bytes"] = len(body)
                fig["api_equals_function"] = answer["rows"] == json.loads(
                    json.dumps(got["rows"], default=str)
                )
                if a.baseline_reps > 0:  # (0: skip the slow baseline, e.g. when re-measuring)
                    base, want = timed(lambda fn=fn: fn(True), a.baseline_reps, warm=0)
                    fig["baseline"] = base
                    fig["equal"] = got["rows"] == want["rows"]
                fig["rows"] = len(got["rows"])
                res[kind] = fig
        finally:
            api.close()
            server.terminate()
            server.wait(10)
        say("monthly xlsx")

        def cold() -> bytes:
            reports_export._CACHE.clear()
            return reports_export.monthly_xlsx(engine, "2025-06")

        res["monthly_xlsx_cold"], data = timed(cold, max(5, a.reps // 3))
        res["monthly_xlsx_cold"]["bytes"] = len(data)
        res["monthly_xlsx_cached"], _ = timed(
            lambda: reports_export.monthly_xlsx(engine, "2025-06"), a.reps
        )
        out["reports"] = res
        out["late_batch_then_report_ms"] = late_batch(engine, random.Random(a.seed))
        out["p95_under_200ms"] = all(
            v["p95_ms"] < 200 for k, v in res.items() if k != "monthly_xlsx_cold"
        )
    finally:
        engine.dispose()
        if not a.keep:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    print(json.dumps(out, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
