"""The report API on a real hub (its own Mosquitto, SQLite file, API on a port): the contract's
shape, role scoping (an official sees only their own results), the monthly XLSX opened with
openpyxl (Vietnamese headings, the right numbers), the CSV, and the CLI's table."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import openpyxl
import pytest
from sqlmodel import Session
from typer.testing import CliRunner

from hub.api.auth import create_token
from hub.models import Case, Desk, Exclusion, Official, Rating
from hub.service import HubService
from tests.fixtures.hub import make_settings

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 10, 2, 0, tzinfo=UTC)  # Tuesday 10/11/2026 09:00 office time


@dataclass
class World:
    hub: HubService
    tokens: dict[str, str]

    def client(self, who: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.hub.api_url, headers={"Authorization": f"Bearer {self.tokens[who]}"}
        )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    hub = HubService(make_settings(tmp_path_factory.mktemp("hub")))
    hub.start()
    e = hub.engine
    with Session(e) as s:
        s.add(Desk(id="quay-1", office="office-test", name="Quầy 1 - Hộ tịch"))
        s.add(Official(id="an", office="office-test", name="Nguyễn Văn An"))
        s.add(Official(id="binh", office="office-test", name="Trần Thị Bình"))
        seq = 0
        # an: 4 rated cases (levels 1, 1, 2, 3) + 1 unrated case; binh: 2 ratings (1, 3), 1 excluded
        for who, levels, unrated in (("an", [1, 1, 2, 3], 1), ("binh", [1, 3, 1], 0)):
            for i, lv in enumerate([*levels, *([None] * unrated)]):
                at = T0 + timedelta(minutes=10 * seq)
                case = Case(office="office-test", code=f"HS-{seq:03d}", field="Hộ tịch" if who == "an" else "Chứng thực",
                            procedure="Đăng ký khai sinh", desk_id="quay-1", official_id=who,
                            handed_back_at=at, actor="t")  # fmt: skip
                s.add(case)
                s.flush()
                seq += 1
                if lv is None:
                    continue
                r = Rating(terminal_id="t-1", epoch=1, seq=seq, office="office-test", desk="quay-1",
                           level=lv, scale=3, press_time=at + timedelta(minutes=1), official_id=who,
                           case_id=case.id, link_status="linked", raw=bytes(48))  # fmt: skip
                s.add(r)
                s.flush()
                if who == "binh" and i == 2:
                    s.add(Exclusion(rating_id=r.id, reason="on_behalf", actor="t"))
        s.commit()
    tokens = {
        "admin": hub.settings.api_token,
        "sup": create_token(e, name="sup", role="supervisor")[1],
        "aud": create_token(e, name="aud", role="auditor")[1],
        "an": create_token(e, name="an", role="official", official_id="an")[1],
    }
    yield World(hub, tokens)
    hub.stop()


ROW_KEYS = {"key", "label", "valid", "excluded", "excluded_by_reason", "levels", "scale",
            "satisfied", "rate", "ci_low", "ci_high", "cases", "rated_cases", "response_rate",
            "shrunk_rate", "rank", "adequacy", "paper"}  # fmt: skip


def test_satisfaction_by_official_has_the_contract_shape_and_numbers(world: World) -> None:
    with world.client("sup") as c:
        r = c.get("/reports/satisfaction", params={"period": "month:2026-11", "by": "official"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert {"from", "to", "by", "rows", "total"} <= set(body)
    assert (body["from"], body["to"], body["by"]) == ("2026-11-01", "2026-11-30", "official")
    rows = {x["key"]: x for x in body["rows"]}
    for x in [*body["rows"], body["total"]]:
        assert set(x) >= ROW_KEYS
        assert set(x["adequacy"]) >= {"population", "required", "ok"}
    an, binh = rows["an"], rows["binh"]
    assert an["label"] == "Nguyễn Văn An"
    assert (an["valid"], an["satisfied"], an["levels"]) == (4, 3, {"1": 2, "2": 1, "3": 1})
    assert an["rate"] == 0.75 and an["cases"] == 5 and an["rated_cases"] == 4
    assert an["response_rate"] == 0.8
    assert an["adequacy"] == {"population": 5, "required": 5, "ok": False,
                              "required_formula": 5, "ok_formula": False}  # fmt: skip
    assert (binh["valid"], binh["excluded"], binh["excluded_by_reason"]) == (2, 1, {"on_behalf": 1})
    assert body["total"]["valid"] == 6 and body["total"]["excluded"] == 1
    assert an["rank"] is not None and an["shrunk_rate"] is not None


def test_an_official_sees_only_their_own_results(world: World) -> None:
    with world.client("an") as c:
        mine = c.get("/reports/satisfaction", params={"period": "month:2026-11", "by": "official"})
        office = c.get("/reports/satisfaction", params={"period": "month:2026-11"})
        other = c.get(
            "/reports/satisfaction", params={"period": "month:2026-11", "official": "binh"}
        )
        heat = c.get("/reports/heatmap", params={"period": "month:2026-11"})
        xlsx = c.get("/reports/monthly.xlsx", params={"month": "2026-11"})
    assert mine.status_code == 200
    assert [x["key"] for x in mine.json()["rows"]] == ["an"]
    assert mine.json()["total"]["valid"] == 4  # not the office's 6
    assert mine.json()["rows"][0]["rank"] is None and mine.json()["rows"][0]["shrunk_rate"] is None
    assert office.json()["total"]["valid"] == 4
    assert other.status_code == 403
    assert sum(x["valid"] for x in heat.json()["cells"]) == 4
    assert xlsx.status_code == 403  # the office's monthly report is not an official's


def test_heatmap_and_errors(world: World) -> None:
    with world.client("aud") as c:
        h = c.get("/reports/heatmap", params={"from": "2026-11-01", "to": "2026-11-30"})
        bad = c.get("/reports/satisfaction", params={"period": "month:2026-13"})
        bad_by = c.get("/reports/satisfaction", params={"by": "planet"})
        bad_ch = c.get("/reports/satisfaction", params={"channel": "fax"})
    cells = h.json()["cells"]
    assert len(cells) == 168
    assert {(x["weekday"], x["hour"]) for x in cells if x["valid"]} == {(1, 9), (1, 10)}
    assert h.json()["excluded_by_reason"] == {"on_behalf": 1}
    assert bad.status_code == 400 and "month:2026-13" in bad.json()["detail"]
    assert bad_by.status_code == 422
    assert bad_ch.status_code == 400 and "fax" in bad_ch.json()["detail"]
    with httpx.Client(base_url=world.hub.api_url) as anon:
        assert anon.get("/reports/satisfaction").status_code == 401


def test_heatmap_per_channel(world: World) -> None:
    """The world's ratings all came from the desk terminal: the QR-only map is empty; paper,
    which has no time of day, is refused alone with the reason and left out of a list."""
    nov = {"period": "month:2026-11"}
    with world.client("sup") as c:
        term = c.get("/reports/heatmap", params={**nov, "channel": "terminal"})
        qr = c.get("/reports/heatmap", params={**nov, "channel": "qr"})
        listed = c.get("/reports/heatmap", params={**nov, "channel": "terminal,qr,paper"})
        paper = c.get("/reports/heatmap", params={**nov, "channel": "paper"})
        fax = c.get("/reports/heatmap", params={**nov, "channel": "qr,fax"})
    assert term.status_code == qr.status_code == listed.status_code == 200, qr.text
    assert (term.json()["channels"], term.json()["valid"], term.json()["excluded"]) == (
        ["terminal"], 6, 1,
    )  # fmt: skip
    assert (qr.json()["channels"], qr.json()["valid"], qr.json()["excluded"]) == (["qr"], 0, 0)
    assert not any(x["valid"] or x["excluded"] for x in qr.json()["cells"])
    assert listed.json()["channels"] == ["terminal", "qr"]
    assert listed.json()["cells"] == term.json()["cells"]
    assert paper.status_code == 400 and "no time of day" in paper.json()["detail"]
    assert "channel=terminal" in paper.json()["detail"]  # says what to ask for instead
    assert fax.status_code == 400 and "fax" in fax.json()["detail"]


def _sheet_rows(ws: object) -> list[list[object]]:
    return [list(r) for r in ws.iter_rows(values_only=True)]  # type: ignore[attr-defined]


def test_monthly_xlsx_opens_with_vietnamese_headings_and_the_numbers(world: World) -> None:
    with world.client("aud") as c:
        r = c.get("/reports/monthly.xlsx", params={"month": "2026-11"})
    assert r.status_code == 200
    assert "bao-cao-hai-long-2026-11.xlsx" in r.headers["content-disposition"]
    wb = openpyxl.load_workbook(io.BytesIO(r.content))
    assert wb.sheetnames == ["Theo công chức", "Theo lĩnh vực", "Theo hồ sơ"]
    rows = _sheet_rows(wb["Theo công chức"])
    assert rows[0][0].startswith("BÁO CÁO KẾT QUẢ ĐÁNH GIÁ SỰ HÀI LÒNG")  # type: ignore[union-attr]
    assert "Số phiếu bị loại (không tính vào kết quả): 1" in rows[2][0]  # type: ignore[operator]
    head = next(x for x in rows if x[0] == "STT")
    assert head[:8] == ["STT", "Đơn vị", "Công chức", "Tổng số phiếu", "Rất hài lòng: số lượng",
                        "Rất hài lòng: tỷ lệ %", "Hài lòng: số lượng", "Hài lòng: tỷ lệ %"]  # fmt: skip
    body = rows[rows.index(head) + 1 :]
    an = next(x for x in body if x[2] == "Nguyễn Văn An")
    assert an[1] == "office-test" and an[3] == 4
    assert an[4:10] == [2, 50.0, 1, 25.0, 1, 25.0]
    assert body[-1][2] == "Tổng cộng" and body[-1][3] == 6
    fields = _sheet_rows(wb["Theo lĩnh vực"])
    fhead = next(x for x in fields if x[0] == "STT")
    assert fhead[2] == "Lĩnh vực"
    assert {x[2]: x[3] for x in fields[fields.index(fhead) + 1 :]} == {
        "Chứng thực": 2, "Hộ tịch": 4, "Tổng cộng": 6,
    }  # fmt: skip
    cases = _sheet_rows(wb["Theo hồ sơ"])
    chead = next(x for x in cases if x[0] == "STT")
    assert chead[1:4] == ["Mã hồ sơ", "Thủ tục hành chính", "Lĩnh vực"]
    crow = {x[1]: x for x in cases[cases.index(chead) + 1 :]}
    assert len(crow) == 8
    assert crow["HS-000"][7] == "Rất hài lòng (1/3)" and crow["HS-000"][9] == "Hợp lệ"
    assert crow["HS-000"][6] == "10/11/2026 09:00"
    assert crow["HS-004"][9] == "Chưa đánh giá"
    assert crow["HS-007"][9].startswith("Bị loại: cán bộ bấm thay")


def test_monthly_csv_and_english(world: World) -> None:
    with world.client("sup") as c:
        r = c.get("/reports/monthly.csv", params={"month": "2026-11", "sheet": "field"})
        en = c.get("/reports/monthly.csv", params={"month": "2026-11", "lang": "en"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    text = r.content.decode("utf-8")
    assert text.startswith("\ufeffSTT,Đơn vị,Lĩnh vực,Tổng số phiếu")
    assert "Hộ tịch" in text
    assert en.content.decode("utf-8").startswith("\ufeffNo.,Unit,Official,Total ratings")


def test_cli_prints_the_table_and_writes_the_xlsx(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hub.cli import app

    s = world.hub.settings
    monkeypatch.setenv("SIPAS_HUB_DATA_DIR", str(s.data_dir))
    monkeypatch.setenv("SIPAS_HUB_OFFICE", s.office)
    monkeypatch.setenv("COLUMNS", "200")
    out = tmp_path / "t11.xlsx"
    res = CliRunner().invoke(
        app, ["report", "--period", "month:2026-11", "--by", "official", "--xlsx", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert "Nguyễn Văn An" in res.output and "Hài lòng %" in res.output
    assert "cán bộ bấm thay người dân: 1" in res.output
    assert openpyxl.load_workbook(out).sheetnames[0] == "Theo công chức"
    en = CliRunner().invoke(app, ["report", "--period", "month:2026-11", "--lang", "en"])
    assert en.exit_code == 0 and "Satisfied %" in en.output
    bad = CliRunner().invoke(app, ["report", "--period", "month:2026-13"])
    assert bad.exit_code == 2 and "not a real date" in bad.output


def test_a_cached_monthly_report_follows_a_new_exclusion(world: World) -> None:
    """Runs last: it changes the module's data."""
    with world.client("aud") as c:
        before = c.get("/reports/monthly.xlsx", params={"month": "2026-11"})
        again = c.get("/reports/monthly.xlsx", params={"month": "2026-11"})
        assert before.content == again.content  # the second one came from the cache
        with Session(world.hub.engine) as s:
            s.add(Exclusion(rating_id=1, reason="technician", actor="t"))
            s.commit()
        after = c.get("/reports/monthly.xlsx", params={"month": "2026-11"})
    rows = _sheet_rows(openpyxl.load_workbook(io.BytesIO(after.content))["Theo công chức"])
    assert "Số phiếu bị loại (không tính vào kết quả): 2" in rows[2][0]  # type: ignore[operator]
    body = rows[rows.index(next(x for x in rows if x[0] == "STT")) + 1 :]
    assert body[-1][3] == 5  # 6 valid ratings, one more left out
