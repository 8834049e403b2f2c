"""Report latency over 1,000,000 stored ratings (rollups), next to the plain GROUP BY queries.

Generates a year of an office's records straight into a SQLite file made by the hub's own schema
(``hub.db.make_engine``): ``--ratings`` ratings over the working days of 2026 (12 desks, one of
them with a 5-level terminal, 30 officials, 8 fields, 5 % QR-code ratings), a case handed back
before 90 % of them plus 10 % cases never rated, 2 % exclusions (a tenth of them taken back), 0.5 %
corrections (a tenth reversed) and a few paper ballot boxes. Then, on the hub's report code:

- ``build_s``: the first build of the rollups (a hub upgraded with a year of ratings does it once);
- per report kind, p50/p95 ms over ``--reps`` calls: ``steady`` (nothing new since the last call)
  and ``changing`` (before each call: 5 late ratings on old days, 3 exclusions, 1 reinstatement, 1
  correction, 5 new cases, as when ingest and staff keep working; the call pays the refresh);
- ``baseline``: the same report computed by plain GROUP BY queries over the rating, exclusion,
  correction and case tables (``direct=True``, no rollups), p50/p95 over ``--baseline-reps`` calls;
- ``equal``: each kind's rollup answer compared with the baseline's after all the changes.

    .venv/bin/python bench/report_latency.py [--ratings 1000000] [--reps 30] [--db FILE]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hub import reports  # noqa: E402
from hub.db import make_engine  # noqa: E402
from hub.exports import SHEETS, monthly, monthly_csv, monthly_xlsx, to_csv, to_xlsx  # noqa: E402
from hub.periods import resolve  # noqa: E402
from hub.reports.rollup import rollups_for  # noqa: E402

OFFICE = "ubnd-phuong-1"
FIELDS = ["Hộ tịch", "Chứng thực", "Người có công", "Bảo trợ xã hội", "Cư trú", "Đất đai",
          "Xây dựng", "Kinh doanh"]  # fmt: skip
DESKS = [f"quay-{i:02d}" for i in range(1, 13)]
OFFICIALS = [f"cb.{i:02d}" for i in range(1, 31)]
LOCAL = timedelta(hours=7)


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")


def working_days(year: int) -> list[date]:
    d, out = date(year, 1, 1), []
    while d.year == year:
        if d.weekday() < 5 or (d.weekday() == 5 and d.toordinal() % 2 == 0):
            out.append(d)  # Monday-Friday and every other Saturday
        d += timedelta(days=1)
    return out


RATING_COLS = (
    "id, terminal_id, epoch, seq, office, desk, level, scale, reason, flags, press_time, "
    "clock_unknown, repeat, test, prompted, received_at, official_id, case_id, link_status, "
    "channel, raw, chain"
)


def generate(path: Path, n: int, seed: int = 5) -> dict[str, int]:
    make_engine(f"sqlite:///{path}").dispose()  # the hub's own schema and indexes
    rnd = random.Random(seed)
    c = sqlite3.connect(path)
    c.execute("PRAGMA synchronous=OFF")
    c.execute("PRAGMA cache_size=-400000")
    c.executemany(
        "INSERT INTO desk (id, office, name, requires_case, created_at) VALUES (?, ?, ?, 0, ?)",
        [(d, OFFICE, f"Quầy {i}", "2026-01-01 00:00:00.000000") for i, d in enumerate(DESKS, 1)],
    )
    c.executemany(
        "INSERT INTO official (id, office, name, active, created_at) VALUES (?, ?, ?, 1, ?)",
        [(o, OFFICE, f"Công chức {i:02d}", "2026-01-01 00:00:00.000000")
         for i, o in enumerate(OFFICIALS, 1)],
    )  # fmt: skip
    days = working_days(2026)
    raw = bytes(48)
    ratings: list[tuple[object, ...]] = []
    cases: list[tuple[object, ...]] = []
    seqs = dict.fromkeys(DESKS, 0)
    rid = cid = 0
    for i, day in enumerate(days):
        k = round(n * (i + 1) / len(days)) - rid
        base = datetime(day.year, day.month, day.day, 7, 30, tzinfo=UTC) - LOCAL
        for _ in range(max(k, 0)):
            rid += 1
            di = rnd.randrange(len(DESKS))
            desk = DESKS[di]
            official = OFFICIALS[(2 * di + day.toordinal() % 2 + (rnd.random() < 0.05)) % 30]
            press = base + timedelta(seconds=rnd.randrange(9 * 3600 + 1800))
            scale = 5 if di == 11 else 3
            u = rnd.random()
            level = 1 if u < 0.6 else 2 if u < 0.9 else scale if u < 0.97 else 3
            channel = "qr" if rnd.random() < 0.05 else "terminal"
            case_id, link = None, "no_case"
            if rnd.random() < 0.9:
                cid += 1
                cases.append((cid, OFFICE, f"HS-{cid:07d}", None, rnd.choice(FIELDS), desk,
                              official, ts(press - timedelta(seconds=rnd.randrange(60, 480))),
                              "bench", "bench", ts(press)))  # fmt: skip
                case_id, link = cid, "linked"
            seqs[desk] += 1
            ratings.append((rid, f"t-{desk}", 1, seqs[desk], OFFICE, desk, level, scale, 0, 0,
                            ts(press), 0, 0, 0, 0, ts(press), official, case_id, link, channel,
                            raw, ""))  # fmt: skip
            if rnd.random() < 0.1:  # a case handed back that nobody rated
                cid += 1
                cases.append((cid, OFFICE, f"HS-{cid:07d}", None, rnd.choice(FIELDS), desk,
                              official, ts(press), "bench", "bench", ts(press)))  # fmt: skip
    say(f"inserting {len(ratings)} ratings and {len(cases)} cases")
    c.executemany(
        'INSERT INTO "case" (id, office, code, procedure, field, desk_id, official_id, '
        "handed_back_at, source, actor, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        cases,
    )
    c.executemany(f"INSERT INTO rating ({RATING_COLS}) VALUES ({', '.join('?' * 22)})", ratings)
    excl = rnd.sample(range(1, rid + 1), n // 50)
    c.executemany(
        "INSERT INTO exclusion (rating_id, reason, actor, created_at) VALUES (?, ?, 'bench', ?)",
        [(r, rnd.choice(["repeat", "test", "on_behalf", "second_for_case"]), ts(datetime.now(UTC)))
         for r in excl],
    )  # fmt: skip
    ex_ids = [r[0] for r in c.execute("SELECT id FROM exclusion").fetchall()]
    c.executemany(
        "INSERT INTO exclusion (rating_id, reason, actor, created_at, reverses) "
        "SELECT rating_id, reason, 'bench', created_at, id FROM exclusion WHERE id = ?",
        [(i,) for i in rnd.sample(ex_ids, len(ex_ids) // 10)],
    )
    corr = rnd.sample(range(1, rid + 1), n // 200)
    c.executemany(
        "INSERT INTO correction (rating_id, official_id, reason, actor, created_at) "
        "VALUES (?, ?, 'wrong official checked in', 'bench', ?)",
        [(r, rnd.choice(OFFICIALS), ts(datetime.now(UTC))) for r in corr],
    )
    co_ids = [r[0] for r in c.execute("SELECT id FROM correction").fetchall()]
    c.executemany(
        "INSERT INTO correction (rating_id, official_id, reason, actor, created_at, reverses) "
        "SELECT rating_id, official_id, 'undo', 'bench', created_at, id FROM correction "
        "WHERE id = ?",
        [(i,) for i in rnd.sample(co_ids, len(co_ids) // 10)],
    )
    for m in range(1, 13):  # a ballot box opened at the end of each month
        opened = ts(datetime(2026, m, 28, 9, tzinfo=UTC))
        cur = c.execute(
            "INSERT INTO paperbox (office, desk_id, opened_at, period_start, period_end, "
            "witnesses, seal_intact, ballots, invalid_ballots, actor, recorded_at) "
            "VALUES (?, NULL, ?, ?, ?, 'A\nB', 1, 60, 2, 'bench', ?)",
            (OFFICE, opened, opened, opened, opened),
        )
        c.executemany(
            "INSERT INTO papertally (box_id, office, desk_id, official_id, field, scale, level, "
            "count) VALUES (?, ?, NULL, NULL, ?, 3, ?, ?)",
            [(cur.lastrowid, OFFICE, FIELDS[0], 1, 40), (cur.lastrowid, OFFICE, FIELDS[0], 2, 15),
             (cur.lastrowid, OFFICE, FIELDS[1], 3, 3)],
        )  # fmt: skip
    c.commit()
    c.execute("ANALYZE")
    c.close()
    return {"ratings": rid, "cases": cid, "exclusions": len(ex_ids), "corrections": len(co_ids)}


class Changer:
    """Small changes between report calls: late ratings, exclusions, a reinstatement, a
    correction and new cases, as a working office makes them."""

    def __init__(self, path: Path, n: int):
        self.c = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.rnd = random.Random(7)
        self.n = n
        self.seq = self.c.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM rating WHERE terminal_id = 't-late'"
        ).fetchone()[0]

    def step(self) -> None:
        c, rnd = self.c, self.rnd
        c.execute("BEGIN IMMEDIATE")
        for _ in range(5):
            self.seq += 1
            day = date(2026, 1, 1) + timedelta(days=rnd.randrange(365))
            press = datetime(day.year, day.month, day.day, 3, tzinfo=UTC) + timedelta(
                seconds=rnd.randrange(30000)
            )
            desk = rnd.choice(DESKS)
            cur = c.execute(
                'INSERT INTO "case" (office, code, field, desk_id, official_id, handed_back_at, '
                "source, actor, recorded_at) VALUES (?, ?, ?, ?, ?, ?, 'bench', 'bench', ?)",
                (OFFICE, f"LATE-{self.seq}", rnd.choice(FIELDS), desk, rnd.choice(OFFICIALS),
                 ts(press - timedelta(minutes=2)), ts(press)),
            )  # fmt: skip
            c.execute(
                f"INSERT INTO rating ({RATING_COLS}) VALUES "
                f"(NULL, 't-late', 1, ?, ?, ?, ?, 3, 0, 0, ?, 0, 0, 0, 0, ?, ?, ?, 'linked', "
                "'terminal', ?, '')",
                (self.seq, OFFICE, desk, rnd.randint(1, 3), ts(press), ts(press),
                 rnd.choice(OFFICIALS), cur.lastrowid, bytes(48)),
            )  # fmt: skip
        now = ts(datetime.now(UTC))
        for _ in range(3):
            c.execute(
                "INSERT INTO exclusion (rating_id, reason, actor, created_at) "
                "VALUES (?, 'on_behalf', 'bench', ?)",
                (rnd.randint(1, self.n), now),
            )
        last = c.execute("SELECT MAX(id) FROM exclusion WHERE reverses IS NULL").fetchone()[0]
        c.execute(
            "INSERT INTO exclusion (rating_id, reason, actor, created_at, reverses) "
            "SELECT rating_id, reason, 'bench', ?, id FROM exclusion WHERE id = ?",
            (now, last),
        )
        c.execute(
            "INSERT INTO correction (rating_id, official_id, reason, actor, created_at) "
            "VALUES (?, ?, 'x', 'bench', ?)",
            (rnd.randint(1, self.n), rnd.choice(OFFICIALS), now),
        )
        c.execute("COMMIT")


def pcts(ms: list[float]) -> dict[str, float]:
    if len(ms) == 1:
        return {"p50": round(ms[0], 1), "p95": round(ms[0], 1), "n": 1}
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {"p50": round(q[49], 1), "p95": round(q[94], 1), "n": len(ms)}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return 1000 * (time.perf_counter() - t0), out


def strip(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: strip(v) for k, v in x.items() if k != "generated_at"}
    if isinstance(x, list):
        return [strip(v) for v in x]
    if isinstance(x, float):
        return round(x, 9)
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratings", type=int, default=1_000_000)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--baseline-reps", type=int, default=3)
    ap.add_argument("--db", type=Path, help="keep the generated database here (reused if present)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sipas-reports-") as tmp:
        path = args.db or Path(tmp) / "hub.sqlite3"
        out: dict[str, Any] = {"bench": "report_latency", "ratings": args.ratings}
        if not path.exists():
            say(f"generating {args.ratings} ratings into {path}")
            t, made = timed(lambda: generate(path, args.ratings))
            out["generated"] = made
            out["generate_s"] = round(t / 1000, 1)
        engine = make_engine(f"sqlite:///{path}")
        ro = rollups_for(engine)
        say("building the rollups")
        t, st = timed(ro.rebuild)
        out["build_s"] = round(t / 1000, 2)
        out["rollup_rows"] = {
            tb: ro.conn().execute(f"SELECT COUNT(*) FROM {tb}").fetchone()[0]  # noqa: S608
            for tb in ("report_rating", "report_excl", "report_heat", "report_case")
        }
        kinds: dict[str, Callable[[bool], Any]] = {
            "office_month": lambda d: reports.satisfaction(
                engine, resolve("month:2026-11"), by="office", office=OFFICE, direct=d
            ),
            "official_year": lambda d: reports.satisfaction(
                engine, resolve("year:2026"), by="official", office=OFFICE, direct=d
            ),
            "field_quarter": lambda d: reports.satisfaction(
                engine, resolve("quarter:2026-Q4"), by="field", office=OFFICE, direct=d
            ),
            "desk_range": lambda d: reports.satisfaction(
                engine,
                resolve(None, date(2026, 3, 17), date(2026, 9, 4)),
                by="desk",
                office=OFFICE,
                direct=d,
            ),
            "heatmap_year": lambda d: reports.heatmap(engine, resolve("year:2026"), direct=d),
            # the monthly report (three sheets; "by case" lists every case of the month): cached
            # per version of the month's figures, so "steady" is a cache hit and "changing" (the
            # changes touch random days, often November) mostly rebuilds it
            "monthly_csv": lambda d: (
                [to_csv(monthly(engine, "2026-11", office=OFFICE, direct=True), s) for s in SHEETS]
                if d
                else [monthly_csv(engine, "2026-11", office=OFFICE, sheet=s) for s in SHEETS]
            ),
            "monthly_xlsx": lambda d: (
                to_xlsx(monthly(engine, "2026-11", office=OFFICE, direct=True))
                if d
                else monthly_xlsx(engine, "2026-11", office=OFFICE)
            ),
        }
        changer = Changer(path, args.ratings)
        res: dict[str, Any] = {}
        for name, fn in kinds.items():
            reps = args.reps if not name.startswith("monthly") else max(5, args.reps // 3)
            say(f"{name}: {reps} calls, steady and changing")
            fn(False)  # warm-up
            steady = [timed(lambda fn=fn: fn(False))[0] for _ in range(reps)]
            changing = []
            for _ in range(reps):
                changer.step()
                changing.append(timed(lambda fn=fn: fn(False))[0])
            say(f"{name}: baseline, {args.baseline_reps} calls")
            base = [timed(lambda fn=fn: fn(True))[0] for _ in range(args.baseline_reps)]
            res[name] = {
                "steady": pcts(steady),
                "changing": pcts(changing),
                "baseline": pcts(base),
                "speedup_p50": round(statistics.median(base) / statistics.median(steady), 1),
            }
        say("comparing rollup answers with the baseline's")
        for name in (
            "office_month",
            "official_year",
            "field_quarter",
            "desk_range",
            "heatmap_year",
        ):
            res[name]["equal"] = strip(kinds[name](False)) == strip(kinds[name](True))
        out["kinds"] = res
        out["max_p95_ms"] = max(
            max(v["steady"]["p95"], v["changing"]["p95"])
            for k, v in res.items()
            if not k.startswith("monthly_xlsx")
        )
        out["monthly_cases"] = len(monthly(engine, "2026-11", office=OFFICE).rows["case"])
        engine.dispose()
        print(json.dumps(out))


if __name__ == "__main__":
    main()
