"""The district's reports through its API, on a SQLite file and on a real PostgreSQL database:
figures worked out by hand for two offices, what an office viewer may see, late batches, exclusions
and corrections, and the monthly XLSX/CSV with its Vietnamese headings."""

from __future__ import annotations

import io
import secrets
import struct
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from openpyxl import load_workbook
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from hub import protocol
from hub.district import auth
from hub.district.api import create_app
from hub.district.models import PaperTally
from hub.reports.stats import shrink, wilson
from tests.fixtures.district import (
    ADMIN_TOKEN,
    Served,
    Term,
    add_office,
    batch,
    new_terminal,
    settings_for,
)

pytest_plugins = ["tests.fixtures.district_db"]  # pg_url, district_db_url, district_engine

pytestmark = pytest.mark.integration
A, B = "ubnd-phuong-1", "ubnd-xa-2"
JUNE_10 = int(datetime(2026, 6, 10, 2, 0, tzinfo=UTC).timestamp())  # 09:00 office time


# -- what hubs send --------------------------------------------------------------------------------
def rating(term: Term, seq: int, level: int, at: int = JUNE_10, **over: Any) -> dict[str, Any]:
    """A terminal's signed rating pressed at ``at`` (epoch seconds), as a hub relays it."""
    item = term.item(seq, level, **over)
    item["raw"] = term.record(seq, level, t=at - seq).hex()  # the record's time is t + seq
    return item


def qr_rating(desk: str, seq: int, level: int, at: int = JUNE_10, **over: Any) -> dict[str, Any]:
    """A QR rating: the hub makes the record; no district tag (zero bytes): the hub's word."""
    body = struct.pack("<BBHIIBBBB", 1, 0, 1, seq, at, level, 0, 3, 0)
    raw = body + protocol.rating_tag(secrets.token_bytes(32), f"qr-{desk}", body) + bytes(16)
    item = {
        "terminal_id": f"qr-{desk}",
        "epoch": 1,
        "seq": seq,
        "raw": raw.hex(),
        "channel": "qr",
        "desk": desk,
        "official_id": "an",
        "case_code": None,
        "link_status": None,
        "press_time": None,
        "received_at": "2026-06-10T02:00:05+00:00",
        "clock_unknown": False,
    }
    item.update(over)
    return item


def case(hub_id: int, code: str, field: str, day: str = "2026-06-10") -> dict[str, Any]:
    return {
        "id": hub_id,
        "code": code,
        "desk_id": "quay-1",
        "procedure": "Đăng ký khai sinh",
        "field": field,
        "official_id": "an",
        "handed_back_at": f"{day}T01:50:00+00:00",
        "source": "api",
    }


def annotation(hub_id: int, term: Term, seq: int, **kw: Any) -> dict[str, Any]:
    return {
        "id": hub_id,
        "rating": [term.terminal_id, term.epoch, seq],
        "actor": "api:giam.sat",
        "created_at": "2026-06-11T01:00:00+00:00",
        "reverses": None,
        **kw,
    }


class Hub:
    """One office's hub: sends its streams with the hub's watermarks (docs/sync.md)."""

    def __init__(self, client: httpx.Client, office: str, token: str) -> None:
        self.client, self.office, self.token = client, office, token
        self.pos: dict[str, int] = {}

    def send(self, stream: str, items: list[Any], start: int | None = None) -> dict[str, Any]:
        start = self.pos.get(stream, 0) if start is None else start
        body, headers = batch(self.office, stream, start, items)
        r = self.client.post(
            f"/api/v1/sync/{stream}",
            content=body,
            headers={**headers, "Authorization": f"Bearer {self.token}"},
        )
        assert r.status_code == 200, r.text
        self.pos[stream] = max(self.pos.get(stream, 0), start + len(items))
        answer: dict[str, Any] = r.json()
        assert answer["rejected"] == [], answer
        return answer


@pytest.fixture
def client(district_engine: Engine, district_db_url: str, tmp_path: Path) -> Iterator[httpx.Client]:
    app = create_app(settings_for(district_db_url, tmp_path), district_engine)
    with Served(app) as server, httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.fixture
def district(district_engine: Engine, client: httpx.Client) -> dict[str, Any]:
    """Two offices with what their hubs sent for June 2026 (the figures below are by hand).

    Office A: terminal ratings 1..6 at levels 1, 1, 2, 3, 1, 3; cases HS-1..HS-5 (Hộ tịch) linked
    to ratings 1..5; rating 5 excluded (pressed on a citizen's behalf); rating 2 re-attributed to
    Bình; rating 3 re-attributed and the correction taken back; one QR rating (level 1); a ballot
    box opened on 15 June with 4 × level 1 and 1 × level 3 (Chứng thực) and 2 invalid ballots.
    Office B: three terminal ratings, levels 1, 2, 3, no cases."""
    hub_a = Hub(client, A, add_office(district_engine, A, "UBND phường 1"))
    hub_b = Hub(client, B, add_office(district_engine, B, "UBND xã 2"))
    ta, tb = new_terminal(district_engine, A), new_terminal(district_engine, B)
    for hub in (hub_a, hub_b):
        hub.send(
            "directory",
            [
                {
                    "version": 1,
                    "desks": [{"id": "quay-1", "name": "Quầy 1 - Hộ tịch"}],
                    "officials": [
                        {"id": "an", "name": "Nguyễn Văn An"},
                        {"id": "binh", "name": "Trần Thị Bình"},
                    ],
                    "terminals": [],
                }
            ],
        )
    levels = [1, 1, 2, 3, 1, 3]
    hub_a.send(
        "ratings",
        [
            rating(ta, s, lv, official_id="an", case_code=f"HS-{s}" if s <= 5 else None)
            for s, lv in enumerate(levels, 1)
        ]
        + [qr_rating("quay-1", 1, 1)],
    )
    hub_a.send("cases", [case(i, f"HS-{i}", "Hộ tịch") for i in range(1, 6)])
    hub_a.send("exclusions", [annotation(1, ta, 5, reason="on_behalf", note="cán bộ bấm hộ")])
    hub_a.send(
        "corrections",
        [
            annotation(1, ta, 2, official_id="binh", reason="quên check-out"),
            annotation(2, ta, 3, official_id="binh", reason="nhầm"),
            annotation(3, ta, 3, official_id=None, reason="hủy", reverses=2),
        ],
    )
    hub_a.send(
        "paper",
        [
            {
                "id": 1,
                "desk_id": "quay-1",
                "opened_at": "2026-06-15T03:00:00+00:00",
                "seal_intact": True,
                "ballots": 7,
                "invalid_ballots": 2,
                "tallies": [
                    {"field": "Chứng thực", "scale": 3, "level": 1, "count": 4},
                    {"field": "Chứng thực", "scale": 3, "level": 3, "count": 1},
                ],
            }
        ],
    )
    hub_b.send(
        "ratings",
        [rating(tb, s, lv, official_id="an", case_code=None) for s, lv in enumerate([1, 2, 3], 1)],
    )
    with Session(district_engine) as s:
        assert len(s.exec(select(PaperTally)).all()) == 2
    return {"ta": ta, "tb": tb, "hub_a": hub_a, "hub_b": hub_b}


def _token(engine: Engine, role: str, office: str | None = None) -> dict[str, str]:
    _, tok = auth.create_token(engine, name=f"{role}-{office}", role=role, office=office)
    return {"Authorization": f"Bearer {tok}"}


ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _report(client: httpx.Client, headers: dict[str, str], **q: str) -> dict[str, Any]:
    r = client.get("/api/v1/reports/satisfaction", params=q, headers=headers)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def _rows(rep: dict[str, Any]) -> dict[Any, dict[str, Any]]:
    return {(r["office"], r["key"]): r for r in rep["rows"]}


def test_hand_computed_figures_across_two_offices(
    client: httpx.Client, district: dict[str, Any], district_engine: Engine
) -> None:
    auditor = _token(district_engine, "auditor")
    rep = _report(client, auditor, period="month:2026-06", by="office")
    rows = _rows(rep)
    a, b = rows[(A, A)], rows[(B, B)]
    # A: valid = 5 terminal (1, 2, 3, 4, 6) + 1 QR + 5 paper; satisfied = 3 + 1 + 4
    assert a["label"] == "UBND phường 1"
    assert (a["valid"], a["satisfied"]) == (11, 8)
    assert a["levels"] == {"1": 7, "2": 1, "3": 3}
    assert a["excluded"] == 3 and a["excluded_by_reason"] == {"on_behalf": 1, "paper_invalid": 2}
    assert (a["verified"], a["attested"], a["paper"]) == (5, 1, 5)
    assert a["channels"] == {"terminal": 5, "qr": 1, "paper": 5}
    assert a["rate"] == pytest.approx(8 / 11)
    assert (a["ci_low"], a["ci_high"]) == pytest.approx(wilson(8, 11))
    assert (a["cases"], a["rated_cases"], a["response_rate"]) == (5, 4, pytest.approx(0.8))
    assert a["adequacy"]["required"] == 5 and a["adequacy"]["ok"] is True
    assert (b["valid"], b["satisfied"], b["cases"]) == (3, 2, 0)
    assert b["adequacy"]["ok"] is None  # no case recorded: unknown
    # shrinkage over two offices: prior strength 10 at the district mean 10/14
    p0 = 10 / 14
    assert rep["prior"] == pytest.approx({"mean": p0, "strength": 10.0})
    from hub.reports.stats import Prior

    assert a["shrunk_rate"] == pytest.approx(shrink(8, 11, Prior(p0, 10.0)))
    assert b["shrunk_rate"] == pytest.approx(shrink(2, 3, Prior(p0, 10.0)))
    assert (a["rank"], b["rank"]) == (1, 2)
    assert rep["total"]["valid"] == 14 and rep["total"]["satisfied"] == 10

    by_official = _rows(_report(client, auditor, period="month:2026-06", by="official"))
    an = by_official[(A, "an")]
    # An: ratings 1, 3 (correction taken back), 4, 6 and the QR rating; rating 5 excluded
    assert (an["valid"], an["excluded"], an["label"]) == (5, 1, "Nguyễn Văn An")
    assert by_official[(A, "binh")]["valid"] == 1  # rating 2, corrected to Bình
    assert by_official[(A, None)]["paper"] == 5  # the tallies name no official
    assert by_official[(B, "an")]["valid"] == 3  # another office's "an" is another person

    by_field = _rows(_report(client, auditor, period="month:2026-06", by="field"))
    assert (
        by_field[(None, "Hộ tịch")]["valid"] == 4 and by_field[(None, "Hộ tịch")]["excluded"] == 1
    )
    assert by_field[(None, "Chứng thực")]["valid"] == 5
    assert by_field[(None, None)]["valid"] == 5  # rating 6, the QR rating, office B's three
    assert by_field[(None, None)]["label"] == "(không rõ lĩnh vực)"

    months = _report(client, auditor, period="quarter:2026-Q2", by="month")
    assert [r["key"] for r in months["rows"]] == ["2026-04", "2026-05", "2026-06"]
    assert months["rows"][2]["valid"] == 14 and months["rows"][0]["valid"] == 0
    # July is empty; a day outside the figures too
    assert _report(client, auditor, period="month:2026-07")["total"]["valid"] == 0
    assert _report(client, auditor, period="day:2026-06-10")["total"]["valid"] == 9


def test_an_office_viewer_sees_only_its_own_office(
    client: httpx.Client, district: dict[str, Any], district_engine: Engine
) -> None:
    viewer = _token(district_engine, "viewer", B)
    rep = _report(client, viewer, period="month:2026-06", by="office")
    assert [r["office"] for r in rep["rows"]] == [B]
    assert rep["total"]["valid"] == 3
    assert {
        r["office"] for r in _report(client, viewer, period="year:2026", by="official")["rows"]
    } == {B}
    for path, q in (
        ("/api/v1/reports/satisfaction", {"office": A}),
        ("/api/v1/reports/monthly.xlsx", {"month": "2026-06", "office": A}),
        ("/api/v1/reports/monthly.csv", {"month": "2026-06", "office": A}),
    ):
        assert client.get(path, params=q, headers=viewer).status_code == 403
    csv = client.get("/api/v1/reports/monthly.csv", params={"month": "2026-06"}, headers=viewer)
    assert csv.status_code == 200 and "UBND xã 2" in csv.text and "UBND phường 1" not in csv.text
    auditor = _token(district_engine, "auditor")
    assert len(_report(client, auditor, period="month:2026-06")["rows"]) == 2
    assert len(_report(client, ADMIN, period="month:2026-06", office=A)["rows"]) == 1
    provisioner = _token(district_engine, "provisioner")
    assert client.get("/api/v1/reports/satisfaction", headers=provisioner).status_code == 403
    assert client.get("/api/v1/reports/satisfaction").status_code == 401


def test_late_batches_change_the_months_figures(
    client: httpx.Client, district_engine: Engine
) -> None:
    """Ratings arrive after the month was reported, out of order; their cases after them; an
    exclusion and a correction last. Every report equals the direct query over the tables."""
    hub = Hub(client, A, add_office(district_engine, A, "UBND phường 1"))
    t = new_terminal(district_engine, A)
    auditor = _token(district_engine, "auditor")
    june = {"period": "month:2026-06"}
    hub.send("ratings", [rating(t, s, 1, case_code=f"HS-{s}") for s in (4, 5, 6)], start=3)
    assert _report(client, auditor, **june)["total"]["valid"] == 3
    # the earlier ratings, late (one on the last evening of May in office time, 23:30)
    may_31 = int(datetime(2026, 5, 31, 16, 30, tzinfo=UTC).timestamp())
    hub.send(
        "ratings",
        [rating(t, 1, 3, at=may_31, case_code="HS-1")]
        + [rating(t, s, 3, case_code=f"HS-{s}") for s in (2, 3)],
        start=0,
    )
    rep = _report(client, auditor, **june)
    assert (rep["total"]["valid"], rep["total"]["satisfied"]) == (5, 3)
    assert _report(client, auditor, period="month:2026-05")["total"]["valid"] == 1
    by_field = _rows(_report(client, auditor, by="field", **june))
    assert by_field[(None, None)]["valid"] == 5  # no case arrived yet
    hub.send("cases", [case(i, f"HS-{i}", "Cư trú") for i in range(1, 7)])
    rep = _report(client, auditor, by="field", **june)
    cu_tru = _rows(rep)[(None, "Cư trú")]
    assert (cu_tru["valid"], cu_tru["cases"], cu_tru["rated_cases"]) == (5, 6, 6)
    hub.send("exclusions", [annotation(1, t, 4, reason="repeat")])
    hub.send("corrections", [annotation(1, t, 5, official_id="binh", reason="nhầm")])
    rep = _report(client, auditor, by="official", **june)
    rows = _rows(rep)
    assert rows[(A, "binh")]["valid"] == 1
    assert rows[(A, "nguyen.van.an")]["valid"] == 3 and rows[(A, "nguyen.van.an")]["excluded"] == 1
    assert rep["total"]["rated_cases"] == 5  # HS-4's only rating is excluded
    # the exclusion taken back: counted again
    hub.send("exclusions", [annotation(2, t, 4, reason="repeat", reverses=1)])
    assert _report(client, auditor, **june)["total"]["valid"] == 5
    from hub.district import reports
    from hub.periods import resolve

    for by in ("office", "desk", "official", "field"):
        for period in ("month:2026-06", "month:2026-05", "year:2026", "day:2026-06-10"):
            p = resolve(period)
            got = reports.satisfaction(district_engine, p, by=by)
            want = reports.satisfaction(district_engine, p, by=by, direct=True)
            assert got["rows"] == want["rows"] or _same(got, want), (by, period)


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    strip = ("generated_at",)
    return {k: v for k, v in a.items() if k not in strip} == {
        k: v for k, v in b.items() if k not in strip
    }


def test_monthly_xlsx_and_csv_have_vietnamese_headings_and_the_figures(
    client: httpx.Client, district: dict[str, Any], district_engine: Engine
) -> None:
    auditor = _token(district_engine, "auditor")
    r = client.get("/api/v1/reports/monthly.xlsx", params={"month": "2026-06"}, headers=auditor)
    assert r.status_code == 200, r.text
    assert "toan-huyen-2026-06.xlsx" in r.headers["content-disposition"]
    wb = load_workbook(io.BytesIO(r.content))
    assert wb.sheetnames == ["Theo đơn vị", "Theo công chức", "Theo lĩnh vực"]
    ws = wb["Theo đơn vị"]
    cells = [[c.value for c in row] for row in ws.iter_rows()]
    assert "THÁNG 06/2026" in cells[0][0]
    head = cells[4]
    for h in (
        "STT",
        "Đơn vị",
        "Tổng số phiếu",
        "Rất hài lòng: số lượng",
        "Không hài lòng: tỷ lệ %",
        "Tỷ lệ hài lòng %",
        "Khoảng tin cậy 95 %",
        "Xếp hạng",
        "Trong đó phiếu giấy",
        "Trong đó phiếu QR (đơn vị xác nhận)",
        "Số hồ sơ đã trả",
        "Tỷ lệ phản hồi %",
        "Đủ mẫu theo quy định",
    ):
        assert h in head, (h, head)
    col = {h: i for i, h in enumerate(head)}
    first = dict(zip(head, cells[5], strict=True))
    assert first["Đơn vị"] == "UBND phường 1" and first["Tổng số phiếu"] == 11
    assert first["Rất hài lòng: số lượng"] == 7
    assert first["Tỷ lệ hài lòng %"] == round(100 * 8 / 11, 1)
    assert first["Xếp hạng"] == 1 and first["Trong đó phiếu giấy"] == 5
    assert first["Trong đó phiếu QR (đơn vị xác nhận)"] == 1
    assert first["Tỷ lệ phản hồi %"] == 80.0 and first["Đủ mẫu theo quy định"] == "Đủ"
    total = cells[7]
    assert total[col["Đơn vị"]] == "Tổng cộng" and total[col["Tổng số phiếu"]] == 14
    officials = [[c.value for c in row] for row in wb["Theo công chức"].iter_rows(min_row=6)]
    assert any(r[1:4] == ["UBND phường 1", "Nguyễn Văn An", 5] for r in officials)
    csv = client.get(
        "/api/v1/reports/monthly.csv",
        params={"month": "2026-06", "sheet": "field", "lang": "en"},
        headers=auditor,
    )
    assert csv.status_code == 200 and csv.content.startswith(b"\xef\xbb\xbf")
    lines = csv.content.decode("utf-8-sig").splitlines()
    assert lines[0].startswith("No.,Office,Field,Total ratings")
    assert any(line.split(",")[2:4] == ["Chứng thực", "5"] for line in lines[1:])
    # a new rating for June changes the next export (no stale cache)
    t2 = new_terminal(district_engine, B)
    district["hub_b"].send("ratings", [rating(t2, 1, 1, case_code=None)])
    again = client.get("/api/v1/reports/monthly.xlsx", params={"month": "2026-06"}, headers=auditor)
    ws2 = load_workbook(io.BytesIO(again.content))["Theo đơn vị"]
    assert list(ws2.iter_rows(values_only=True))[7][col["Tổng số phiếu"]] == 15


def test_the_dashboard_files_need_no_token(client: httpx.Client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and 'lang="vi"' in page.text
    for f in ("app.js", "api.js", "i18n.js", "app.css", "i18n.vi.json", "i18n.en.json"):
        assert client.get(f"/static/{f}").status_code == 200, f
    # the scripts shared with the hub's dashboard come from the district too (no internet needed)
    for f in ("api.js", "i18n.js", "shell.js"):
        assert client.get(f"/shared/{f}").status_code == 200, f
    assert "sessionStorage" in client.get("/shared/api.js").text
