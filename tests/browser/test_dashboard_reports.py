"""The dashboard's figures in real headless Chromium: today per desk and official, the heat map, and
the monthly report on paper (print layout, saved as PDF) and as the XLSX the district gets."""

from __future__ import annotations

import base64
import time
import zipfile
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.print_page_options import PrintOptions
from selenium.webdriver.support.ui import Select

from hub.office import OFFICE_TZ
from hub.service import HubService
from tests.fixtures.browser import Browser, log_in, seed_office
from tests.fixtures.hub import pump

pytestmark = pytest.mark.browser


@pytest.fixture
def rated(hub: HubService, api: httpx.Client, terminal_factory) -> HubService:
    """An office where An (desk 1) got a very satisfied rating and Bình (desk 2) a dissatisfied one."""
    seed_office(api)
    t1 = terminal_factory(desk="quay-1")
    t2 = terminal_factory(desk="quay-2")
    pump([t1, t2], lambda: t1.app.online() and t2.app.online())
    api.post("/duty/check-in", json={"desk_id": "quay-1", "official_id": "an"}).raise_for_status()
    api.post("/duty/check-in", json={"desk_id": "quay-2", "official_id": "binh"}).raise_for_status()
    t1.press(1)
    t2.press(3)
    pump([t1, t2], lambda: t1.depth() == 0 and t2.depth() == 0)
    return hub


def test_today_per_desk_and_official_and_the_heat_map(rated: HubService, browser: Browser) -> None:
    log_in(browser, rated, rated.settings.api_token, page="stats")
    by_desk = browser.wait_text("#stats-out table[data-by='desk']", "Quầy 1 - Hộ tịch")
    cells = {
        tr.get_attribute("data-key"): tr.text
        for tr in by_desk.find_elements("css selector", "tbody tr")
    }
    assert "100,0" in cells["quay-1"] and "0,0" in cells["quay-2"]  # Vietnamese decimal comma
    assert "50,0" in cells["total"]
    by_official = browser.css("#stats-out table[data-by='official']").text
    assert "Nguyễn Văn An" in by_official and "Trần Thị Bình" in by_official
    browser.shot("stats-today")
    browser.css("#stats-month").click()
    browser.wait(
        lambda d: browser.css("#stats-month").get_attribute("aria-pressed") == "true",
        what="this month",
    )
    browser.wait_text("#stats-out table[data-by='desk']", "Quầy 2 - Chứng thực")

    browser.css("#nav a[data-page='heatmap']").click()
    browser.wait(lambda d: browser.all("svg.heatmap"), what="the heat map")
    counts = [int(x.text) for x in browser.all("svg.heatmap g.cell text.count")]
    assert sum(counts) == 2
    now = datetime.now(OFFICE_TZ)
    cell = browser.css(
        f"svg.heatmap g.cell[data-weekday='{now.weekday()}'][data-hour='{now.hour}']"
    )
    assert cell.find_element("css selector", "text.count").text == "2"
    browser.shot("heatmap")

    # both ratings came from desk terminals: QR only is an empty map, terminal only has them
    channel = Select(browser.css("#hm-channel"))
    assert [o.text for o in channel.options] == [
        "Thiết bị và mã QR", "Chỉ thiết bị tại quầy", "Chỉ mã QR",
    ]  # fmt: skip
    assert "Phiếu giấy không ghi giờ" in browser.text_of("#main")
    for value, total in (("qr", 0), ("terminal", 2)):
        channel.select_by_value(value)
        browser.click("#main form.filters button[type=submit]")
        browser.wait(
            lambda d, total=total: (
                browser.all("svg.heatmap")
                and sum(int(x.text) for x in browser.all("svg.heatmap g.cell text.count")) == total
            ),
            what=f"the heat map of channel {value}",
        )


def test_monthly_report_prints_and_downloads_as_xlsx(rated: HubService, browser: Browser) -> None:
    downloads = browser.shots.parent / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    for old in downloads.glob("*"):
        old.unlink()
    browser.driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    log_in(browser, rated, rated.settings.api_token, page="report")
    month = datetime.now(OFFICE_TZ).strftime("%Y-%m")
    browser.js(
        "const m = document.getElementById('report-month');"
        "m.value = arguments[0]; m.dispatchEvent(new Event('change'));",
        month,
    )
    table = browser.wait_text("#report-out table.report", "Nguyễn Văn An")
    assert "Trần Thị Bình" in table.text and "Tổng số phiếu" in table.text
    heading = f"Kết quả đánh giá sự hài lòng tháng {month[5:]}/{month[:4]}"
    assert heading in browser.text_of("#report-out")

    # on paper: no menu, no buttons, the table and the signature lines
    browser.driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    try:
        assert not browser.css("#top").is_displayed()
        assert not browser.css("#report-print").is_displayed()
        assert browser.css("#report-out table.report").is_displayed()
        assert browser.css(".signatures").is_displayed()
        browser.shot("report-print-layout")
    finally:
        browser.driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})
    opts = PrintOptions()
    opts.orientation = "landscape"
    pdf = base64.b64decode(browser.driver.print_page(opts))
    assert pdf.startswith(b"%PDF")
    (browser.shots / f"{browser.test_name}--report.pdf").write_bytes(pdf)

    browser.css("#report-xlsx").click()  # fetched with the token, saved under the hub's name
    deadline = time.monotonic() + 10
    got: list[Path] = []
    while time.monotonic() < deadline:
        got = [p for p in downloads.glob("*.xlsx")]
        if got:
            break
        time.sleep(0.1)
    assert [p.name for p in got] == [f"bao-cao-hai-long-{month}.xlsx"]
    with zipfile.ZipFile(got[0]) as z:
        text = "".join(z.read(n).decode() for n in z.namelist() if n.endswith(".xml"))
    assert "Nguyễn Văn An" in text and "Trần Thị Bình" in text


def test_terminals_health_and_an_exclusion_made_and_taken_back(
    rated: HubService, api: httpx.Client, browser: Browser
) -> None:
    log_in(browser, rated, rated.settings.api_token, page="terminals")
    table = browser.wait_text("#terminals-out table.terminals", "Quầy 1 - Hộ tịch")
    assert table.text.count("trực tuyến") == 2
    assert "2/2 thiết bị" in browser.text_of("#terminals-out")

    [rating] = api.get("/ratings", params={"desk": "quay-2"}).json()
    browser.css("#nav a[data-page='exclusions']").click()
    browser.wait(lambda d: browser.all("#ex-new"), what="the exclusion form")
    browser.css("#ex-new-rating").send_keys(str(rating["id"]))
    Select(browser.css("#ex-new-reason")).select_by_value("on_behalf")
    browser.css("#ex-new-note").send_keys("cán bộ bấm hộ")
    browser.css("#ex-new button[type=submit]").click()
    browser.wait_text("#ex-new-message", f"Đánh giá #{rating['id']} đã được loại trừ")
    row = browser.wait_text("#ex-rows tr", "cán bộ bấm thay")
    assert "cán bộ bấm hộ" in row.text and "đang áp dụng" in row.text
    assert api.get(f"/ratings/{rating['id']}").json()["valid"] is False
    browser.shot("exclusion-made")

    browser.click("#ex-rows tr button.reinstate")
    prompt = browser.wait(lambda d: d.switch_to.alert, what="the reinstate prompt")
    prompt.send_keys("đã xác minh")
    prompt.accept()
    browser.wait_text("#ex-rows tr", "đã khôi phục")
    assert api.get(f"/ratings/{rating['id']}").json()["valid"] is True
