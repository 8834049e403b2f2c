"""The ratings API on a real hub (its own Mosquitto, a SQLite file, uvicorn) fed by simulated
terminals running the firmware: every filter against known data, cursor pages while ratings keep
arriving, the CSV file for Excel, exclusions and corrections taken back, handed-back cases in
batches, and what each role may see and do."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session
from typer.testing import CliRunner

from hub.api.auth import create_token
from hub.api.ratings import CSV_COLUMNS
from hub.models import Rating
from hub.office import OFFICE_TZ
from hub.service import HubService
from provisioning.simulate import SimTerminal
from tests.fixtures.hub import make_settings, pump

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def office_time(y: int, mo: int, d: int, h: int, mi: int) -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=OFFICE_TZ).timestamp())


def sim(hub: HubService, root: Path, desk: str) -> SimTerminal:
    device = hub.add_terminal(desk=desk)
    device["lockout_s"] = 0  # the dataset sets each press's time; repeats are tested elsewhere
    return SimTerminal(device, root / device["terminal_id"])


def press(t: SimTerminal, when: int, level: int, test: bool = False) -> int:
    t.board.set_time(when)
    seq = t.press(level, test=test)
    assert seq is not None
    pump([t], lambda: t.depth() == 0)
    return seq


@dataclass
class World:
    hub: HubService
    api: httpx.Client  # the bootstrap admin
    tokens: dict[str, str]
    ids: dict[str, int] = field(default_factory=dict)
    t1: str = ""
    t2: str = ""

    def client(self, who: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.hub.api_url,
            headers={"Authorization": f"Bearer {self.tokens[who]}"},
            timeout=10,
        )

    def names(self, rows: list[dict[str, Any]]) -> set[str]:
        by_id = {v: k for k, v in self.ids.items()}
        return {by_id[r["id"]] for r in rows}

    def get(self, **params: Any) -> set[str]:
        r = self.api.get("/ratings", params={"limit": 1000, **params})
        assert r.status_code == 200, r.text
        return self.names(r.json())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Two desks, two officials, two terminals; seven ratings at known office times."""
    root = tmp_path_factory.mktemp("ratings")
    hub = HubService(make_settings(root / "hub"))
    hub.start()
    api = httpx.Client(
        base_url=hub.api_url,
        headers={"Authorization": f"Bearer {hub.settings.api_token}"},
        timeout=10,
    )
    tokens = {
        "sup": create_token(hub.engine, name="truong-bo-phan", role="supervisor")[1],
        "aud": create_token(hub.engine, name="huyen", role="auditor")[1],
        "an": create_token(hub.engine, name="an", role="official", official_id="an")[1],
        "binh": create_token(hub.engine, name="binh", role="official", official_id="binh")[1],
    }
    w = World(hub, api, tokens)
    for body in (
        {"id": "quay-1", "name": "Quầy 1 - Hộ tịch"},
        {"id": "quay-2", "name": "Quầy 2 - Chứng thực"},
    ):
        api.post("/desks", json=body).raise_for_status()
    for body in ({"id": "an", "name": "Nguyễn Văn An"}, {"id": "binh", "name": "Trần Thị Bình"}):
        api.post("/officials", json=body).raise_for_status()
    for desk, who in (("quay-1", "an"), ("quay-2", "binh")):
        api.post(
            "/duty/check-in", json={"desk_id": desk, "official_id": who, "at": "2026-03-02T08:00"}
        ).raise_for_status()
    t1, t2 = sim(hub, root, "quay-1"), sim(hub, root, "quay-2")
    terms = [t1, t2]
    try:
        pump(terms, lambda: t1.app.online() and t2.app.online())
        w.t1, w.t2 = t1.terminal_id, t2.terminal_id
        case = {"desk_id": "quay-1", "field": "Hộ tịch", "handed_back_at": "2026-03-02T09:00"}
        api.post("/cases", json={"code": "HS-1", **case}).raise_for_status()
        seqs = {
            "r1": (t1, press(t1, office_time(2026, 3, 2, 9, 1), 1)),  # linked to HS-1
            "r2": (t1, press(t1, office_time(2026, 3, 2, 10, 30), 2)),  # no case
            "r3": (t1, press(t1, office_time(2026, 3, 2, 10, 31), 3, test=True)),
            "r6": (
                t1,
                press(t1, office_time(2026, 3, 2, 6, 30), 2),
            ),  # before check-in; 1 March UTC
        }
        case = {"desk_id": "quay-2", "field": "Chứng thực", "handed_back_at": "2026-04-10T13:58"}
        api.post("/cases", json={"code": "HS-2", **case}).raise_for_status()
        seqs["r4"] = (t2, press(t2, office_time(2026, 4, 10, 14, 0), 3))
        seqs["r5"] = (t2, press(t2, office_time(2027, 1, 1, 0, 30), 1))  # 2026 in UTC
        rows = api.get("/ratings", params={"limit": 1000}).json()
        for name, (t, seq) in seqs.items():
            [w.ids[name]] = [
                r["id"] for r in rows if (r["terminal_id"], r["seq"]) == (t.terminal_id, seq)
            ]
        # The QR channel (hub/channels/qr.py) stores its ratings in the same table.
        with Session(hub.engine) as s:
            qr = Rating(
                terminal_id="qr-quay-1", epoch=1, seq=1, office=hub.settings.office, desk="quay-1",
                level=1, scale=3, press_time=datetime(2026, 3, 2, 4, 0, tzinfo=UTC), official_id="an",
                link_status="no_case", channel="qr", raw=bytes(48),
            )  # fmt: skip
            s.add(qr)
            s.commit()
            assert qr.id is not None
            w.ids["q1"] = qr.id
        yield w
    finally:
        for t in terms:
            t.stop()
        api.close()
        hub.stop()


ALL = {"r1", "r2", "r3", "r4", "r5", "r6", "q1"}
DAY = {"r1", "r2", "r3", "r6", "q1"}  # 2 March 2026, office time


@pytest.mark.parametrize(
    "params,expected",
    [
        ({}, ALL),
        ({"period": "day:2026-03-02"}, DAY),
        ({"from": "2026-03-02", "to": "2026-03-02"}, DAY),
        ({"period": "day:2026-03-01"}, set()),  # r6 is 1 March in UTC, 2 March at the office
        ({"period": "month:2026-04"}, {"r4"}),
        ({"period": "quarter:2026-Q1"}, DAY),
        ({"period": "quarter:2026-Q2"}, {"r4"}),
        ({"period": "year:2026"}, ALL - {"r5"}),
        ({"period": "year:2027"}, {"r5"}),  # 00:30 on New Year's Day, office time
        ({"from": "2026-04-01"}, {"r4", "r5"}),
        ({"to": "2026-03-31"}, DAY),
        ({"desk": "quay-2"}, {"r4", "r5"}),
        ({"official": "an"}, {"r1", "r2", "r3", "q1"}),
        ({"official": "binh"}, {"r4", "r5"}),
        ({"field": "Hộ tịch"}, {"r1"}),
        ({"field": "Chứng thực"}, {"r4"}),
        ({"level": 1}, {"r1", "r5", "q1"}),
        ({"channel": "terminal"}, ALL - {"q1"}),
        ({"channel": "qr"}, {"q1"}),
        ({"channel": "terminal,qr,paper"}, ALL),
        ({"link_status": "linked"}, {"r1", "r4"}),
        ({"link_status": "not_linked"}, {"r3"}),
        ({"valid": False}, {"r3"}),
        ({"valid": True}, ALL - {"r3"}),
        ({"test": True}, {"r3"}),
        ({"desk": "quay-1", "level": 2, "period": "day:2026-03-02"}, {"r2", "r6"}),
        ({"since": "2026-04-10T14:00:00"}, {"r4", "r5"}),
        ({"after_id": 0, "desk": "quay-2"}, {"r4", "r5"}),
    ],
)
def test_each_filter_finds_exactly_the_known_ratings(
    world: World, params: dict[str, Any], expected: set[str]
) -> None:
    assert world.get(**params) == expected


def test_terminal_filter_and_what_each_rating_carries(world: World) -> None:
    assert world.get(terminal=world.t2) == {"r4", "r5"}
    r1 = world.api.get(f"/ratings/{world.ids['r1']}").json()
    assert (r1["official_id"], r1["effective_official_id"], r1["valid"]) == ("an", "an", True)
    assert (r1["case_code"], r1["field"], r1["link_status"]) == ("HS-1", "Hộ tịch", "linked")
    r3 = world.api.get(f"/ratings/{world.ids['r3']}").json()
    assert r3["valid"] is False
    assert [(x["reason"], x["actor"], x["reinstated"]) for x in r3["exclusions"]] == [
        ("test", "hub", None)
    ]


@pytest.mark.parametrize(
    "params,message",
    [
        ({"period": "month:2026-13"}, "not a real date"),
        ({"period": "week:2026-10"}, "not understood"),
        ({"period": "year:2026", "from": "2026-01-01"}, "not both"),
        ({"from": "2026-05-01", "to": "2026-04-01"}, "before"),
        ({"channel": "paper"}, "tallies"),
        ({"channel": "fax"}, "unknown channel"),
        ({"cursor": "bm9wZQ"}, "cursor"),
        ({"cursor": "x", "after_id": 3}, "not both"),
    ],
)
def test_bad_filters_are_400_with_the_reason(
    world: World, params: dict[str, Any], message: str
) -> None:
    r = world.api.get("/ratings", params=params)
    assert r.status_code == 400 and message in r.json()["detail"], r.text


def test_csv_opens_in_excel_with_vietnamese_intact(world: World) -> None:
    with world.client("aud") as aud:
        r = aud.get("/ratings", params={"format": "csv", "period": "day:2026-03-02"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    assert r.content.startswith(b"\xef\xbb\xbf")  # the BOM Excel needs to read UTF-8
    rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert rows[0] == [vi for _, vi, _ in CSV_COLUMNS]
    assert "Họ tên cán bộ" in rows[0] and "Lĩnh vực" in rows[0]
    body = [dict(zip([k for k, _, _ in CSV_COLUMNS], row, strict=True)) for row in rows[1:]]
    assert {int(b["id"]) for b in body} == {world.ids[n] for n in DAY}
    [r1] = [b for b in body if int(b["id"]) == world.ids["r1"]]
    assert r1["desk_name"] == "Quầy 1 - Hộ tịch"
    assert r1["official_name"] == "Nguyễn Văn An"
    assert (r1["field"], r1["level_label"], r1["valid"]) == ("Hộ tịch", "Rất hài lòng", "có")
    assert r1["pressed_at"].startswith("2026-03-02 09:01:")  # office time
    [r3] = [b for b in body if int(b["id"]) == world.ids["r3"]]
    assert (r3["valid"], r3["excluded_because"]) == ("không", "test (hub)")
    en = world.api.get("/ratings", params={"format": "csv", "lang": "en", "desk": "quay-2"})
    rows = list(csv.reader(io.StringIO(en.content.decode("utf-8-sig"))))
    assert rows[0] == [e for _, _, e in CSV_COLUMNS] and len(rows) == 3


def test_exclusion_then_reinstatement_changes_valid(world: World) -> None:
    rid = world.ids["r2"]
    with world.client("sup") as sup:
        r = sup.post(
            f"/ratings/{rid}/exclusions", json={"reason": "on_behalf", "note": "cán bộ bấm hộ"}
        )
        assert r.status_code == 201, r.text
        ex = r.json()
        assert (ex["reason"], ex["actor"], ex["note"]) == (
            "on_behalf",
            "api:truong-bo-phan",
            "cán bộ bấm hộ",
        )
        assert world.get(valid=False) == {"r2", "r3"}
        rating = sup.get(f"/ratings/{rid}").json()
        assert rating["valid"] is False and rating["exclusions"][0]["id"] == ex["id"]
        again = sup.post(f"/ratings/{rid}/exclusions", json={"reason": "on_behalf"})
        assert again.status_code == 409 and "already excluded" in again.json()["detail"]
        other = sup.post(f"/ratings/{rid}/exclusions", json={"reason": "other"})
        assert other.status_code == 400 and "needs a note" in other.json()["detail"]
        listed = sup.get("/exclusions", params={"state": "standing", "desk": "quay-1"}).json()
        assert {(x["rating_id"], x["reason"]) for x in listed} == {
            (rid, "on_behalf"),
            (world.ids["r3"], "test"),
        }
        back = sup.post(f"/exclusions/{ex['id']}/reinstate", json={"note": "xác minh lại"})
        assert back.status_code == 201, back.text
        assert back.json()["reinstated"]["actor"] == "api:truong-bo-phan"
        assert back.json()["reinstated"]["note"] == "xác minh lại"
        assert sup.post(f"/exclusions/{ex['id']}/reinstate").status_code == 409
        assert sup.get(f"/ratings/{rid}").json()["valid"] is True
        assert world.get(valid=False) == {"r3"}
        done = sup.get("/exclusions", params={"state": "reinstated"}).json()
        assert [x["id"] for x in done] == [ex["id"]]
    audit = world.api.get("/audit", params={"entity": "rating", "entity_id": str(rid)}).json()
    assert {(a["action"], a["actor"]) for a in audit} >= {
        ("exclude", "api:truong-bo-phan"),
        ("reinstate", "api:truong-bo-phan"),
    }


def test_a_correction_moves_a_rating_between_officials_until_reversed(world: World) -> None:
    rid = world.ids["r2"]
    with world.client("sup") as sup, world.client("an") as an, world.client("binh") as binh:
        assert rid in {r["id"] for r in an.get("/ratings").json()}
        r = sup.post(
            f"/ratings/{rid}/corrections",
            json={"official_id": "binh", "reason": "chị Bình đứng quầy, anh An quên check-out"},
        )
        assert r.status_code == 201, r.text
        first = r.json()
        assert world.get(official="an") == {"r1", "r3", "q1"}
        assert world.get(official="binh") == {"r2", "r4", "r5"}
        assert rid not in {x["id"] for x in an.get("/ratings").json()}
        assert binh.get(f"/ratings/{rid}").json()["effective_official_id"] == "binh"
        assert an.get(f"/ratings/{rid}").status_code == 404
        second = sup.post(
            f"/ratings/{rid}/corrections", json={"official_id": None, "reason": "không ai"}
        ).json()
        assert "r2" not in world.get(official="binh") | world.get(official="an")
        assert (
            sup.post(
                f"/ratings/{rid}/corrections", json={"official_id": None, "reason": "x"}
            ).status_code
            == 409
        )  # it already belongs to nobody
        r = sup.post(f"/ratings/{rid}/corrections", json={"official_id": "nope", "reason": "x"})
        assert r.status_code == 404 and "official nope does not exist" in r.json()["detail"]
        # the latest correction that stands wins: reversing the second brings back the first
        assert (
            sup.post(f"/corrections/{second['id']}/reverse", json={"note": "nhầm"}).status_code
            == 201
        )
        assert world.get(official="binh") == {"r2", "r4", "r5"}
        back = sup.post(f"/corrections/{first['id']}/reverse").json()
        assert back["reversed"]["actor"] == "api:truong-bo-phan"
        assert sup.post(f"/corrections/{first['id']}/reverse").status_code == 409
        assert world.get(official="an") == {"r1", "r2", "r3", "q1"}
        assert an.get(f"/ratings/{rid}").json()["correction"] is None
        listed = sup.get("/corrections", params={"rating_id": rid}).json()
        assert [(c["id"], c["reversed"] is not None) for c in listed] == [
            (second["id"], True),
            (first["id"], True),
        ]
    audit = world.api.get("/audit", params={"entity": "rating", "entity_id": str(rid)}).json()
    assert [a["action"] for a in audit].count("correct") == 2
    assert [a["action"] for a in audit].count("reverse-correction") == 2


def test_the_cli_corrects_and_reverses(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from hub.cli import app

    monkeypatch.setenv("SIPAS_HUB_DATA_DIR", str(world.hub.settings.data_dir))
    monkeypatch.setenv("SIPAS_HUB_OFFICE", world.hub.settings.office)
    runner = CliRunner()
    rid = str(world.ids["r6"])
    res = runner.invoke(
        app, ["rating", "correct", rid, "--official", "an", "--reason", "quên check-in"]
    )
    assert res.exit_code == 0 and "now belongs to an" in res.output, res.output
    assert "r6" in world.get(official="an")
    cid = world.api.get("/corrections", params={"rating_id": rid}).json()[0]["id"]
    res = runner.invoke(app, ["rating", "uncorrect", str(cid), "--actor", "ky-thuat"])
    assert res.exit_code == 0, res.output
    assert "r6" not in world.get(official="an")


def test_batch_of_cases_is_all_or_nothing(world: World) -> None:
    def batch(codes: list[tuple[str, str]]) -> httpx.Response:
        return world.api.post(
            "/cases/batch",
            json=[
                {"code": c, "desk_id": d, "handed_back_at": "2026-05-04T09:00"} for c, d in codes
            ],
        )

    r = batch([("B-1", "quay-1"), ("B-2", "quay-9"), ("B-3", "quay-2")])
    assert r.status_code == 404 and "row 2 (case B-2)" in r.json()["detail"], r.text
    assert world.api.get("/cases", params={"code": "B-1"}).json() == []
    r = batch([("B-1", "quay-1"), ("B-2", "quay-2"), ("B-3", "quay-2")])
    assert r.status_code == 201 and [x["created"] for x in r.json()] == [True, True, True]
    again = batch([("B-1", "quay-1"), ("B-2", "quay-2"), ("B-3", "quay-2")])
    assert [x["created"] for x in again.json()] == [False, False, False]
    too_many = world.api.post(
        "/cases/batch", json=[{"code": f"X-{i}", "desk_id": "quay-1"} for i in range(1001)]
    )
    assert too_many.status_code == 413


def test_an_official_sees_only_their_own_ratings(world: World) -> None:
    ids = world.ids
    with world.client("an") as an:
        assert world.names(an.get("/ratings").json()) == {"r1", "r2", "r3", "q1"}
        assert an.get("/ratings", params={"official": "binh"}).status_code == 403
        assert world.names(an.get("/ratings", params={"official": "an"}).json()) == {
            "r1",
            "r2",
            "r3",
            "q1",
        }
        assert an.get(f"/ratings/{ids['r4']}").status_code == 404
        assert an.get(f"/ratings/{ids['r1']}").status_code == 200
        assert an.get(f"/ratings/{ids['r4']}/exclusions").status_code == 404
        assert an.get(f"/ratings/{ids['r3']}/exclusions").json()[0]["reason"] == "test"
        rows = list(csv.reader(io.StringIO(an.get("/ratings", params={"format": "csv"}).text)))[1:]
        assert {int(r[0]) for r in rows} == {ids[n] for n in ("r1", "r2", "r3", "q1")}
        for method, path, body in [
            ("POST", f"/ratings/{ids['r1']}/exclusions", {"reason": "on_behalf"}),
            ("POST", "/exclusions/1/reinstate", {}),
            ("GET", "/exclusions", None),
            ("POST", f"/ratings/{ids['r1']}/corrections", {"official_id": None, "reason": "x"}),
            ("POST", "/corrections/1/reverse", {}),
            ("GET", "/corrections", None),
        ]:
            r = an.request(method, path, json=body)
            assert r.status_code == 403, (method, path, r.text)
    with world.client("aud") as aud:  # district staff: read everything, change nothing
        assert world.names(aud.get("/ratings").json()) == ALL
        assert aud.get("/exclusions").status_code == 200
        assert aud.get("/corrections").status_code == 200
        r = aud.post(f"/ratings/{ids['r1']}/exclusions", json={"reason": "on_behalf"})
        assert r.status_code == 403
    assert httpx.get(f"{world.hub.api_url}/ratings").status_code == 401


def test_cursor_pages_while_ratings_arrive_have_no_duplicate_and_no_gap(
    hub: HubService, api: httpx.Client, terminal_factory
) -> None:
    terms = [terminal_factory(desk="quay-1"), terminal_factory(desk="quay-2")]
    pump(terms, lambda: all(t.app.online() for t in terms))

    def burst(n: int) -> None:
        for i in range(n):
            terms[i % 2].press(1 + i % 3)
        pump(terms, lambda: all(t.depth() == 0 for t in terms))

    burst(7)
    seen: list[int] = []
    pages = 0
    params: dict[str, Any] = {"limit": 3}
    while True:
        r = api.get("/ratings", params=params)
        assert r.status_code == 200, r.text
        seen += [x["id"] for x in r.json()]
        pages += 1
        if pages in (1, 2):
            burst(4)  # arrive while the client is between pages
        nxt = r.headers.get("X-Next-Cursor")
        if nxt is None:
            assert "Link" not in r.headers
            break
        assert r.headers["Link"].endswith('rel="next"') and f"cursor={nxt}" in r.headers["Link"]
        params = {"limit": 3, "cursor": nxt}
    everything = [x["id"] for x in api.get("/ratings", params={"limit": 1000}).json()]
    assert len(everything) == 15 and pages >= 5
    assert seen == everything  # in order, none twice, none missing

    # newest first: what arrives meanwhile is newer than the first page, so it is not in the walk
    first = api.get("/ratings", params={"limit": 4, "order": "desc"})
    burst(2)
    walk = [x["id"] for x in first.json()]
    cursor = first.headers["X-Next-Cursor"]
    while cursor:
        r = api.get("/ratings", params={"limit": 4, "order": "desc", "cursor": cursor})
        walk += [x["id"] for x in r.json()]
        cursor = r.headers.get("X-Next-Cursor")
    assert walk == sorted(everything, reverse=True)
    r = api.get("/ratings", params={"cursor": first.headers["X-Next-Cursor"]})
    assert r.status_code == 400 and "order=desc" in r.json()["detail"]
