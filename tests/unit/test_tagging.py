"""Tagging at ingest: the official on duty at the desk at press time, the case handed back there
within the window, link status, automatic exclusions, and the audit log (DESIGN.md 4.4, 6)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, col, select

from hub import office as ofc
from hub.db import make_engine
from hub.ingest import Ingestor
from hub.models import AuditLog, Case, Rating
from hub.registry import add_terminal
from tests.helpers import rating_topic, record

pytestmark = pytest.mark.unit
OFFICE = "office-test"
T0 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # 09:00 in Hà Nội


@pytest.fixture
def env(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'hub.sqlite3'}")
    with Session(engine) as s:
        for d in ("quay-1", "quay-2"):
            ofc.create_desk(
                s, office=OFFICE, data=ofc.DeskCreate(id=d, name=d.upper()), actor="admin"
            )
        ofc.create_desk(
            s,
            office=OFFICE,
            data=ofc.DeskCreate(id="quay-3", name="Q3", requires_case=True),
            actor="admin",
        )
        for o, n in (("an", "Nguyễn Văn An"), ("binh", "Trần Thị Bình")):
            ofc.create_official(
                s, office=OFFICE, data=ofc.OfficialCreate(id=o, name=n), actor="admin"
            )
        s.commit()
    devices = {
        d: add_terminal(engine, office=OFFICE, desk=d)[1] for d in ("quay-1", "quay-2", "quay-3")
    }
    yield engine, Ingestor(engine, OFFICE), devices
    engine.dispose()


def duty(engine, kind: str, desk: str, official: str | None, at: datetime) -> None:
    with Session(engine) as s:
        fn = ofc.check_in if kind == "in" else ofc.check_out
        fn(
            s,
            office=OFFICE,
            req=ofc.DutyRequest(desk_id=desk, official_id=official, at=at),
            actor="sup",
        )
        s.commit()


def case(engine, code: str, desk: str, at: datetime, field: str = "Hộ tịch") -> int:
    with Session(engine) as s:
        c, _ = ofc.record_case(
            s,
            office=OFFICE,
            data=ofc.CaseCreate(code=code, desk_id=desk, handed_back_at=at, field=field),
            actor="sup",
        )
        s.commit()
        assert c.id is not None
        return c.id


def press(ing: Ingestor, dev: dict, seq: int, at: datetime, **kw) -> Rating:
    res = ing.process([(rating_topic(dev), record(dev, seq, t=at, **kw))])
    assert res.counts["stored"] == 1, res.counts
    return res.stored[0]


def reasons(engine, rating_id: int) -> list[str]:
    with Session(engine) as s:
        return [e.reason for e in ofc.exclusions_of(s, rating_id)]


def test_rating_gets_the_official_on_duty_at_press_time(env) -> None:
    engine, ing, dev = env
    duty(engine, "in", "quay-1", "an", T0)
    duty(engine, "in", "quay-1", "binh", T0 + timedelta(hours=1))  # Bình takes over: An checked out
    duty(engine, "out", "quay-1", None, T0 + timedelta(hours=2))
    assert press(ing, dev["quay-1"], 1, T0 + timedelta(minutes=5)).official_id == "an"
    assert press(ing, dev["quay-1"], 2, T0 + timedelta(minutes=65)).official_id == "binh"
    assert press(ing, dev["quay-1"], 3, T0 + timedelta(minutes=125)).official_id is None
    assert press(ing, dev["quay-1"], 4, T0 - timedelta(minutes=1)).official_id is None


def test_checking_in_elsewhere_checks_out_of_the_first_desk(env) -> None:
    engine, ing, dev = env
    duty(engine, "in", "quay-1", "an", T0)
    duty(engine, "in", "quay-2", "an", T0 + timedelta(minutes=30))
    with Session(engine) as s:
        assert ofc.on_duty(s, desk_id="quay-1", at=T0 + timedelta(minutes=31)) is None
        assert ofc.on_duty(s, desk_id="quay-2", at=T0 + timedelta(minutes=31)) == "an"
    with Session(engine) as s, pytest.raises(ofc.OfficeError, match="already checked in"):
        ofc.check_in(
            s,
            office=OFFICE,
            req=ofc.DutyRequest(desk_id="quay-2", official_id="an", at=T0 + timedelta(minutes=40)),
            actor="sup",
        )


def test_one_rating_per_case_most_recent_unrated_first(env) -> None:
    engine, ing, dev = env
    a = case(engine, "HS-A", "quay-1", T0)
    b = case(engine, "HS-B", "quay-1", T0 + timedelta(minutes=5))
    r1 = press(ing, dev["quay-1"], 1, T0 + timedelta(minutes=6))
    r2 = press(ing, dev["quay-1"], 2, T0 + timedelta(minutes=7))
    r3 = press(ing, dev["quay-1"], 3, T0 + timedelta(minutes=8), level=3)
    assert (r1.case_id, r1.link_status) == (b, ofc.LINKED)
    assert (r2.case_id, r2.link_status) == (a, ofc.LINKED)
    assert (r3.case_id, r3.link_status) == (b, ofc.ALREADY_RATED)
    assert reasons(engine, r3.id) == ["second_for_case"] and reasons(engine, r1.id) == []


def test_window_no_case_and_late(env) -> None:
    engine, ing, dev = env
    assert press(ing, dev["quay-2"], 1, T0).link_status == ofc.NO_CASE
    c = case(engine, "HS-C", "quay-2", T0 + timedelta(minutes=1))
    late = press(ing, dev["quay-2"], 2, T0 + timedelta(minutes=12))  # 11 min after: outside 10
    assert (late.case_id, late.link_status) == (c, ofc.LATE)
    assert reasons(engine, late.id) == []  # late is reported, not excluded
    other_desk = press(ing, dev["quay-1"], 1, T0 + timedelta(minutes=2))
    assert other_desk.link_status == ofc.NO_CASE  # cases belong to their desk


def test_case_window_is_configurable(env) -> None:
    engine, _, dev = env
    ing = Ingestor(engine, OFFICE, case_window=timedelta(minutes=30))
    c = case(engine, "HS-W", "quay-1", T0)
    r = press(ing, dev["quay-1"], 1, T0 + timedelta(minutes=25))
    assert (r.case_id, r.link_status) == (c, ofc.LINKED)


def test_automatic_exclusions(env) -> None:
    engine, ing, dev = env
    from app import codec

    case(engine, "HS-R", "quay-1", T0)
    first = press(ing, dev["quay-1"], 1, T0 + timedelta(seconds=30))
    rep = press(ing, dev["quay-1"], 2, T0 + timedelta(seconds=33), flags=codec.FLAG_REPEAT)
    test = press(ing, dev["quay-1"], 3, T0 + timedelta(seconds=60), flags=codec.FLAG_TEST)
    nocase = press(ing, dev["quay-3"], 1, T0)
    clock = press(ing, dev["quay-2"], 1, T0, flags=codec.FLAG_CLOCK_UNKNOWN)
    assert first.link_status == ofc.LINKED and reasons(engine, first.id) == []
    assert rep.link_status == ofc.NOT_LINKED and reasons(engine, rep.id) == ["repeat"]
    assert test.link_status == ofc.NOT_LINKED and reasons(engine, test.id) == ["test"]
    assert reasons(engine, nocase.id) == ["no_case_required"]
    assert reasons(engine, clock.id) == ["clock_unknown"]
    with Session(engine) as s:
        valid = s.exec(select(Rating.id).where(ofc.valid()).order_by(col(Rating.id))).all()
    assert valid == [first.id]


def test_manual_exclusion_and_reinstatement_are_attributed_records(env) -> None:
    engine, ing, dev = env
    r = press(ing, dev["quay-1"], 1, T0)
    with Session(engine) as s:
        ex = ofc.exclude(s, rating_id=r.id, reason="on_behalf", note="cán bộ bấm hộ", actor="sup")
        s.commit()
        assert s.exec(select(Rating.id).where(ofc.valid())).all() == []
        ofc.reinstate(s, exclusion_id=ex.id, note="nhầm", actor="head")
        s.commit()
        assert s.exec(select(Rating.id).where(ofc.valid())).all() == [r.id]
        with pytest.raises(ofc.OfficeError, match="already taken back"):
            ofc.reinstate(s, exclusion_id=ex.id, note=None, actor="head")
        with pytest.raises(ofc.OfficeError, match="unknown exclusion reason"):
            ofc.exclude(s, rating_id=r.id, reason="clock_unknown", note=None, actor="sup")
        actions = [
            (a.actor, a.action) for a in s.exec(select(AuditLog).where(AuditLog.entity == "rating"))
        ]
    assert actions == [("sup", "exclude"), ("head", "reinstate")]


def test_case_codes_are_idempotent_and_every_change_is_audited(env) -> None:
    engine, _, _ = env
    first = case(engine, "HS-1", "quay-1", T0)
    again = case(engine, "HS-1", "quay-2", T0 + timedelta(minutes=1))
    assert first == again
    with Session(engine) as s:
        assert len(s.exec(select(Case)).all()) == 1
        entities = {a.entity for a in s.exec(select(AuditLog)).all()}
        with pytest.raises(ofc.OfficeError, match="does not exist"):
            ofc.record_case(
                s, office=OFFICE, data=ofc.CaseCreate(code="X", desk_id="nope"), actor="a"
            )
    assert {"desk", "official", "case"} <= entities


def test_naive_times_are_office_time(env) -> None:
    assert ofc.as_utc(datetime(2026, 11, 23, 9, 0)) == T0


def test_a_press_without_clock_never_takes_a_case(env) -> None:
    engine, ing, dev = env
    from app import codec

    c = case(engine, "HS-N", "quay-1", T0)
    backlog = press(ing, dev["quay-1"], 1, T0, flags=codec.FLAG_CLOCK_UNKNOWN)
    assert backlog.case_id is None and backlog.link_status == ofc.NOT_LINKED
    now = press(ing, dev["quay-1"], 2, T0 + timedelta(minutes=1))
    assert (now.case_id, now.link_status) == (c, ofc.LINKED)


def test_a_case_gets_at_most_one_late_rating(env) -> None:
    engine, ing, dev = env
    c = case(engine, "HS-L", "quay-1", T0)
    first = press(ing, dev["quay-1"], 1, T0 + timedelta(minutes=12))
    later = [press(ing, dev["quay-1"], n, T0 + timedelta(minutes=m)) for n, m in ((2, 25), (3, 90))]
    assert (first.case_id, first.link_status) == (c, ofc.LATE)
    assert [(r.case_id, r.link_status) for r in later] == [(None, ofc.NO_CASE)] * 2


def test_reason_followup_is_kept_but_never_counted_as_a_rating(env) -> None:
    engine, ing, dev = env
    from app import codec

    c = case(engine, "HS-F", "quay-1", T0)
    rating = press(ing, dev["quay-1"], 1, T0 + timedelta(minutes=1), level=3)
    follow = press(
        ing,
        dev["quay-1"],
        2,
        T0 + timedelta(minutes=1, seconds=3),
        level=3,
        reason=1,
        flags=codec.FLAG_FOLLOWUP,
    )
    assert (rating.case_id, rating.link_status) == (c, ofc.LINKED)
    assert (follow.case_id, follow.link_status, follow.reason) == (None, ofc.NOT_LINKED, 1)
    assert reasons(engine, follow.id) == ["reason_followup"] and reasons(engine, rating.id) == []
