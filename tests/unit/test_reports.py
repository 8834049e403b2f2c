"""The report statistics against hand-computed values, on a real SQLite file.

Every figure is checked both through the rollups and through the direct GROUP BY queries
(``direct=True``), so the two paths are held to the same hand-computed numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from hub import reports
from hub.db import make_engine
from hub.models import Case, Correction, Desk, Exclusion, Official, PaperBox, PaperTally, Rating
from hub.periods import resolve
from hub.reports.stats import (
    PRIOR_DEFAULT,
    PRIOR_MAX,
    adequacy,
    estimate_prior,
    required_by_formula,
    required_by_table,
    shrink,
    wilson,
)

pytestmark = pytest.mark.unit
NOV = resolve("month:2026-11")


# -- statistics ------------------------------------------------------------------------------------
def test_wilson_interval_matches_the_closed_forms() -> None:
    z2 = 1.959963984540054**2
    lo, hi = wilson(0, 10)  # 0 of n: [0, z²/(n + z²)]
    assert lo == 0.0 and hi == pytest.approx(z2 / (10 + z2))
    lo, hi = wilson(10, 10)  # n of n: [n/(n + z²), 1]
    assert lo == pytest.approx(10 / (10 + z2)) and hi == pytest.approx(1.0)
    lo, hi = wilson(8, 10)  # worked by hand: centre 0.716738, half-width 0.226578
    assert lo == pytest.approx(0.490162, abs=1e-6) and hi == pytest.approx(0.943318, abs=1e-6)
    assert wilson(0, 0) == (None, None)


@pytest.mark.parametrize(
    ("cases", "table", "formula"),
    [
        (50, 50, 45),  # under 100 cases: every case; 400·50/450 = 44.4
        (100, 100, 80),  # 100-999: 100 ratings; 400·100/500 = 80
        (999, 100, 286),  # 400·999/1399 = 285.6
        (1000, 200, 286),  # 1,000-4,999: 200; 400 000/1400 = 285.7
        (4999, 200, 371),  # 400·4999/5399 = 370.4
        (5000, 500, 371),  # 5,000 and more: 500; 2 000 000/5400 = 370.4
        (20000, 500, 393),  # 8 000 000/20 400 = 392.2
    ],
)
def test_sample_adequacy_against_the_seed_table_and_the_formula(
    cases: int, table: int, formula: int
) -> None:
    assert required_by_table(cases) == table
    assert required_by_formula(cases) == formula
    a = adequacy(table, cases)
    assert a["required"] == table and a["ok"] is True
    assert a["ok_formula"] is (table >= formula)
    assert adequacy(table - 1, cases)["ok"] is False


def test_adequacy_is_unknown_without_cases() -> None:
    assert adequacy(40, 0) == {
        "population": 0,
        "required": None,
        "ok": None,
        "required_formula": None,
        "ok_formula": None,
    }


def test_shrinkage_by_hand() -> None:
    # p0 = 145/210; Q = 8.38095; (k-1)p0(1-p0) = 0.427438; N - Σn²/N = 114.2857
    # τ² = 0.0695925; m = p0(1-p0)/τ² - 1 = 2.07097
    prior = estimate_prior([(90, 100), (5, 10), (50, 100)])
    assert prior is not None
    assert prior.mean == pytest.approx(145 / 210)
    assert prior.strength == pytest.approx(2.07097, abs=1e-4)
    assert shrink(5, 10, prior) == pytest.approx((5 + 2.07097 * 145 / 210) / 12.07097, abs=1e-5)
    # the small unit moves most: 0.5 -> 0.533, 0.9 -> 0.896
    assert shrink(5, 10, prior) - 0.5 > 0.9 - shrink(90, 100, prior) > 0
    two = estimate_prior([(9, 10), (1, 2)])  # too few units to estimate: a fixed prior
    assert two is not None and two.strength == PRIOR_DEFAULT and two.mean == pytest.approx(10 / 12)
    same = estimate_prior([(50, 100), (50, 100), (51, 100)])  # no spread beyond chance
    assert same is not None and same.strength == PRIOR_MAX
    assert estimate_prior([]) is None


# -- an office on a real database ------------------------------------------------------------------
@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    e = make_engine(f"sqlite:///{tmp_path / 'hub.sqlite3'}")
    with Session(e) as s:
        for d in ("q1", "q2"):
            s.add(Desk(id=d, office="o", name=f"Quầy {d[1]}"))
        for o, n in (("an", "Nguyễn Văn An"), ("binh", "Trần Thị Bình")):
            s.add(Official(id=o, office="o", name=n))
        s.commit()
    yield e
    e.dispose()


class Office:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.seq = 0

    def case(
        self, *, at: datetime, desk: str = "q1", official: str = "an", field: str = "Hộ tịch"
    ) -> int:
        with Session(self.engine) as s:
            c = Case(office="o", code=f"C{self.seq}-{at.timestamp()}", field=field, desk_id=desk,
                     official_id=official, handed_back_at=at, actor="t")  # fmt: skip
            s.add(c)
            s.commit()
            assert c.id is not None
            return c.id

    def rating(
        self,
        *,
        at: datetime,
        level: int = 1,
        scale: int = 3,
        desk: str = "q1",
        official: str | None = "an",
        case: int | None = None,
        link: str = "linked",
        channel: str = "terminal",
    ) -> int:
        self.seq += 1
        with Session(self.engine) as s:
            r = Rating(
                terminal_id="t-1", epoch=1, seq=self.seq, office="o", desk=desk, level=level,
                scale=scale, press_time=at, official_id=official, case_id=case,
                link_status=link if case else "no_case", channel=channel, raw=bytes(48),
            )  # fmt: skip
            s.add(r)
            s.commit()
            assert r.id is not None
            return r.id

    def exclude(self, rating: int, reason: str, reverses: int | None = None) -> int:
        with Session(self.engine) as s:
            e = Exclusion(rating_id=rating, reason=reason, actor="t", reverses=reverses)
            s.add(e)
            s.commit()
            assert e.id is not None
            return e.id

    def correct(self, rating: int, official: str | None, reverses: int | None = None) -> int:
        with Session(self.engine) as s:
            c = Correction(
                rating_id=rating, official_id=official, reason="x", actor="t", reverses=reverses
            )
            s.add(c)
            s.commit()
            assert c.id is not None
            return c.id


T0 = datetime(2026, 11, 10, 2, 0, tzinfo=UTC)  # 09:00 office time, a Tuesday


def both(engine: Engine, period=NOV, **kw):  # type: ignore[no-untyped-def]
    """The report through the rollups; the direct queries must give the same rows."""
    a = reports.satisfaction(engine, period, **kw)
    b = reports.satisfaction(engine, period, direct=True, **kw)
    for x in (a, b):
        x.pop("generated_at")
    assert a == b
    return a


def rows(rep: dict) -> dict:  # type: ignore[type-arg]
    return {r["key"]: r for r in rep["rows"]}


def test_counts_shares_rate_and_interval(engine: Engine) -> None:
    o = Office(engine)
    for i, lv in enumerate([1, 1, 1, 1, 1, 2, 2, 2, 3, 3]):
        o.rating(at=T0 + timedelta(minutes=i), level=lv)
    t = both(engine)["total"]
    assert t["valid"] == 10 and t["levels"] == {"1": 5, "2": 3, "3": 2}
    assert t["shares"] == {"1": 0.5, "2": 0.3, "3": 0.2}
    assert t["satisfied"] == 8 and t["rate"] == 0.8 and t["scale"] == 3
    assert t["ci_low"] == pytest.approx(0.490162, abs=1e-6)
    assert t["ci_high"] == pytest.approx(0.943318, abs=1e-6)


def test_mixed_scales_count_satisfied_by_their_own_scale(engine: Engine) -> None:
    o = Office(engine)
    for i, lv in enumerate([1, 2, 3]):  # 3-level: 1, 2 satisfied
        o.rating(at=T0 + timedelta(minutes=i), level=lv, scale=3)
    for i, lv in enumerate([1, 3, 4]):  # 5-level: only 1 (3 is "Bình thường")
        o.rating(at=T0 + timedelta(minutes=10 + i), level=lv, scale=5, desk="q2")
    t = both(engine)["total"]
    assert t["valid"] == 6 and t["satisfied"] == 3 and t["rate"] == 0.5
    assert t["scale"] is None
    assert t["by_scale"] == {"3": {"1": 1, "2": 1, "3": 1}, "5": {"1": 1, "3": 1, "4": 1}}
    by_desk = rows(both(engine, by="desk"))
    assert by_desk["q1"]["rate"] == pytest.approx(2 / 3) and by_desk["q1"]["scale"] == 3
    assert by_desk["q2"]["rate"] == pytest.approx(1 / 3) and by_desk["q2"]["scale"] == 5


def test_exclusions_are_counted_per_reason_and_reinstatements_undo_them(engine: Engine) -> None:
    o = Office(engine)
    ids = [o.rating(at=T0 + timedelta(minutes=i), level=1) for i in range(6)]
    o.exclude(ids[0], "repeat")
    o.exclude(ids[0], "test")  # two reasons, one rating left out
    o.exclude(ids[1], "on_behalf")
    back = o.exclude(ids[2], "on_behalf")
    o.exclude(ids[2], "on_behalf", reverses=back)  # reinstated: counts again
    t = both(engine)["total"]
    assert t["valid"] == 4 and t["excluded"] == 2
    assert t["excluded_by_reason"] == {"on_behalf": 1, "repeat": 1, "test": 1}


def test_corrections_latest_non_reversed_wins(engine: Engine) -> None:
    o = Office(engine)
    r1 = o.rating(at=T0, official="an")
    r2 = o.rating(at=T0 + timedelta(minutes=1), official="an")
    r3 = o.rating(at=T0 + timedelta(minutes=2), official="an")
    o.correct(r1, "binh")  # r1 -> binh
    o.correct(r2, "binh")
    c = o.correct(r2, None)  # r2 -> binh, then nobody
    o.correct(r2, None, reverses=c)  # ... taken back: binh again
    c3 = o.correct(r3, "binh")
    o.correct(r3, "binh", reverses=c3)  # r3 back to an
    by = rows(both(engine, by="official"))
    assert by["binh"]["valid"] == 2 and by["an"]["valid"] == 1
    assert by["binh"]["label"] == "Trần Thị Bình"
    o.correct(r1, None)
    by = rows(both(engine, by="official"))
    assert by[None]["valid"] == 1 and by[None]["label"] == "(chưa gắn công chức)"


def test_response_rate_counts_late_links_and_not_excluded_ratings(engine: Engine) -> None:
    o = Office(engine)
    c1 = o.case(at=T0)
    c2 = o.case(at=T0 + timedelta(minutes=1))
    c3 = o.case(at=T0 + timedelta(minutes=2))
    o.case(at=T0 + timedelta(minutes=3))  # never rated
    o.rating(at=T0 + timedelta(minutes=5), case=c1)
    # a late link: the rating came 30 minutes later, past the window, on the next day's report too
    o.rating(at=T0 + timedelta(minutes=40), case=c2, link="late")
    bad = o.rating(at=T0 + timedelta(minutes=6), case=c3)
    o.exclude(bad, "on_behalf")  # entered by staff: the case is not rated by a citizen
    t = both(engine)["total"]
    assert t["cases"] == 4 and t["rated_cases"] == 2 and t["response_rate"] == 0.5
    assert t["adequacy"]["population"] == 4 and t["adequacy"]["required"] == 4
    assert t["adequacy"]["ok"] is False  # 2 valid of 4 cases: under 100 cases every case counts


def test_a_case_counts_in_the_month_it_was_handed_back(engine: Engine) -> None:
    o = Office(engine)
    end = datetime(2026, 11, 30, 16, 50, tzinfo=UTC)  # 30/11 23:50 office time
    cid = o.case(at=end)
    o.rating(at=end + timedelta(minutes=20), case=cid, link="late")  # 1/12 00:10 office time
    nov = both(engine)["total"]
    dec = both(engine, period=resolve("month:2026-12"))["total"]
    assert (nov["cases"], nov["rated_cases"], nov["valid"]) == (1, 1, 0)
    assert (dec["cases"], dec["valid"]) == (0, 1)


def test_office_days_are_office_time(engine: Engine) -> None:
    o = Office(engine)
    o.rating(at=datetime(2026, 10, 31, 17, 30, tzinfo=UTC))  # 1/11 00:30 in Hà Nội
    o.rating(at=datetime(2026, 11, 30, 17, 30, tzinfo=UTC))  # 1/12 00:30
    assert both(engine)["total"]["valid"] == 1
    assert both(engine, period=resolve("day:2026-11-01"))["total"]["valid"] == 1


def test_paper_tallies_count_and_are_shown_apart(engine: Engine) -> None:
    o = Office(engine)
    o.rating(at=T0, level=1)
    with Session(engine) as s:
        for opened, counts in ((T0, (30, 8, 2)), (datetime(2026, 12, 5, tzinfo=UTC), (99, 0, 0))):
            box = PaperBox(office="o", desk_id="q1", opened_at=opened, period_start=opened,
                           period_end=opened, witnesses="A\nB", seal_intact=True, ballots=41,
                           invalid_ballots=1, actor="t")  # fmt: skip
            s.add(box)
            s.flush()
            assert box.id is not None
            for lv, n in enumerate(counts, 1):
                s.add(PaperTally(box_id=box.id, office="o", field="Chứng thực", scale=3, level=lv,
                                 count=n))  # fmt: skip
        s.commit()
    t = both(engine)["total"]
    assert t["valid"] == 41 and t["paper"] == 40 and t["levels"] == {"1": 31, "2": 8, "3": 2}
    assert t["channels"] == {"terminal": 1, "qr": 0, "paper": 40}
    assert t["rate"] == pytest.approx(39 / 41)
    assert t["excluded_by_reason"] == {"paper_invalid": 1}
    only = both(engine, channels=("terminal", "qr"))["total"]
    assert only["valid"] == 1 and only["paper"] == 0
    assert rows(both(engine, by="field"))["Chứng thực"]["paper"] == 40


def test_ranking_uses_shrunk_rates(engine: Engine) -> None:
    o = Office(engine)
    # an: 19 of 20 satisfied; cuong: 10 of 20; binh: 2 of 2 (100 %, but only two ratings)
    for who, sat, n in (("an", 19, 20), ("cuong", 10, 20), ("binh", 2, 2)):
        for i in range(n):
            o.rating(at=T0 + timedelta(minutes=i), level=1 if i < sat else 3, official=who)
    rep = both(engine, by="official")
    by = rows(rep)
    assert by["binh"]["rate"] == 1.0 > by["an"]["rate"] == 0.95
    # p0 = 31/42; Q = 20(0.95-p0)² + 20(0.5-p0)² + 2(1-p0)² = 2.169048;
    # τ² = (Q - 2·p0(1-p0)) / (42 - 804/42) = 0.0779812; m = p0(1-p0)/τ² - 1 = 1.478941
    p0, m = 31 / 42, 1.478941
    assert rep["prior"]["mean"] == pytest.approx(p0)
    assert rep["prior"]["strength"] == pytest.approx(m, abs=1e-5)
    assert by["binh"]["shrunk_rate"] == pytest.approx((2 + m * p0) / (2 + m), abs=1e-6)
    assert by["an"]["shrunk_rate"] == pytest.approx((19 + m * p0) / (20 + m), abs=1e-6)
    assert (by["an"]["rank"], by["binh"]["rank"], by["cuong"]["rank"]) == (1, 2, 3)
    assert [r["key"] for r in rep["rows"]] == ["an", "binh", "cuong"]


def test_two_units_use_the_fixed_prior(engine: Engine) -> None:
    o = Office(engine)
    for i in range(4):
        o.rating(at=T0 + timedelta(minutes=i), level=1 if i else 3, official="an")
    o.rating(at=T0 + timedelta(minutes=9), level=1, official="binh")
    by = rows(both(engine, by="official"))
    assert by["binh"]["shrunk_rate"] == pytest.approx((1 + 10 * 0.8) / 11)
    assert by["an"]["shrunk_rate"] == pytest.approx((3 + 10 * 0.8) / 14)


def test_filters_and_periods(engine: Engine) -> None:
    o = Office(engine)
    o.rating(at=T0, official="an")
    o.rating(at=T0 + timedelta(days=40), official="binh")  # 20/12
    assert both(engine, period=resolve("year:2026"))["total"]["valid"] == 2
    assert both(engine, period=resolve("quarter:2026-Q4"))["total"]["valid"] == 2
    assert (
        both(engine, period=resolve(None, date(2026, 11, 11), date(2026, 12, 31)))["total"]["valid"]
        == 1
    )
    mine = both(engine, period=resolve("year:2026"), by="official",
                filters=reports.Filters(official="binh"))  # fmt: skip
    assert [r["key"] for r in mine["rows"]] == ["binh"]


def test_heatmap_cells(engine: Engine) -> None:
    o = Office(engine)
    o.rating(at=T0, level=1)  # Tuesday 09:xx office time
    o.rating(at=T0 + timedelta(minutes=5), level=3)
    x = o.rating(at=T0 + timedelta(minutes=6), level=1)
    o.exclude(x, "test")
    for direct in (False, True):
        h = reports.heatmap(engine, NOV, direct=direct)
        assert len(h["cells"]) == 7 * 24
        cell = next(c for c in h["cells"] if c["weekday"] == 1 and c["hour"] == 9)
        assert (cell["valid"], cell["satisfied"], cell["excluded"], cell["rate"]) == (2, 1, 1, 0.5)
        assert h["excluded_by_reason"] == {"test": 1}
        assert sum(c["valid"] for c in h["cells"]) == 2


def test_heatmap_per_channel_and_paper_refused_alone(engine: Engine) -> None:
    from hub.office import OfficeError

    o = Office(engine)
    o.rating(at=T0, level=1)  # terminal, Tuesday 09:xx office time
    o.rating(at=T0 + timedelta(minutes=5), level=3)
    o.exclude(o.rating(at=T0 + timedelta(minutes=6), level=1), "test")
    o.rating(at=T0 + timedelta(hours=5), level=1, channel="qr")  # Tuesday 14:xx
    o.exclude(o.rating(at=T0 + timedelta(hours=5, minutes=1), channel="qr"), "repeat")

    def seen(h: dict) -> dict:  # type: ignore[type-arg]
        return {
            (c["weekday"], c["hour"]): (c["valid"], c["satisfied"], c["excluded"])
            for c in h["cells"]
            if c["valid"] or c["excluded"]
        }

    for direct in (False, True):
        qr = reports.heatmap(engine, NOV, channels=("qr",), direct=direct)
        assert seen(qr) == {(1, 14): (1, 1, 1)}
        assert (qr["channels"], qr["valid"], qr["excluded_by_reason"]) == (["qr"], 1, {"repeat": 1})
        term = reports.heatmap(engine, NOV, channels=("terminal",), direct=direct)
        assert seen(term) == {(1, 9): (2, 1, 1)}
        assert (term["excluded"], term["excluded_by_reason"]) == (1, {"test": 1})
        every = reports.heatmap(engine, NOV, direct=direct)  # the default: terminal and QR
        assert seen(every) == {(1, 9): (2, 1, 1), (1, 14): (1, 1, 1)}
        assert every["channels"] == ["terminal", "qr"]
        # the satisfaction report's full list: paper (no time of day) is left out, and says so
        listed = reports.heatmap(engine, NOV, channels=reports.CHANNELS, direct=direct)
        assert listed == every
        with pytest.raises(OfficeError, match="paper ballots have no time of day"):
            reports.heatmap(engine, NOV, channels=("paper",), direct=direct)
