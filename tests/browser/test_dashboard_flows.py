"""The staff dashboard in real headless Chromium against a real hub (its own Mosquitto, SQLite, the
API) and simulated terminals running the firmware: what a supervisor and an official do with it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from hub.api.auth import create_token
from hub.service import HubService
from tests.fixtures.browser import (
    Browser,
    base_url,
    log_in,
    no_script_errors,
    seed_office,
    stream_live,
)
from tests.fixtures.hub import make_settings, pump

pytestmark = pytest.mark.browser


def test_log_in_see_a_rating_arrive_live_and_switch_to_english(
    hub: HubService, api: httpx.Client, terminal_factory, browser: Browser
) -> None:
    seed_office(api)
    term = terminal_factory(desk="quay-1")
    pump([term], term.app.online)
    browser.driver.get(base_url(hub) + "/")
    browser.wait_text("#login-form", "Đăng nhập")  # Vietnamese by default
    log_in(browser, hub, hub.settings.api_token)
    assert browser.text_of("#who-role") == "Quản trị"
    stream_live(browser)
    assert browser.text_of("#feed-count").startswith("Hôm nay chưa có đánh giá")

    term.press(1)
    pump([term], lambda: term.depth() == 0)
    row = browser.wait_text("#feed-rows tr", "Rất hài lòng")
    assert "Quầy 1 - Hộ tịch" in row.text
    browser.shot("live-feed")

    Select(browser.css("#lang")).select_by_value("en")
    browser.wait_text("#nav", "Live")
    browser.wait_text("#feed-rows tr", "Very satisfied")
    assert browser.text_of("#who-role") == "Administrator"
    assert browser.js("return document.documentElement.lang") == "en"
    browser.shot("english")

    # a reload keeps the session (sessionStorage) and the language (localStorage)
    browser.driver.refresh()
    browser.wait_text("#feed-rows tr", "Very satisfied")
    stream_live(browser)
    term.press(2)
    pump([term], lambda: term.depth() == 0)
    browser.wait_text("#feed-rows tr", "Satisfied")
    assert len(browser.all("#feed-rows tr")) == 2
    no_script_errors(browser)

    browser.css("#logout").click()
    browser.wait(lambda d: browser.all("#token"), what="the login form after logout")
    assert browser.js("return sessionStorage.getItem('sipas.token')") is None


def test_a_negative_rating_raises_an_alert_the_supervisor_acknowledges(
    hub: HubService, api: httpx.Client, terminal_factory, browser: Browser
) -> None:
    seed_office(api)
    _, token = create_token(hub.engine, name="truong-bo-phan", role="supervisor")
    term = terminal_factory(desk="quay-1")
    pump([term], term.app.online)
    log_in(browser, hub, token, page="alerts")
    assert browser.text_of("#who-role") == "Lãnh đạo bộ phận"
    stream_live(browser, "#alerts-state")

    term.press(3)  # "Không hài lòng"
    pump([term], lambda: term.depth() == 0)
    card = browser.wait_text("#alerts-list article", "không hài lòng")
    assert card.get_attribute("data-state") == "open"
    card.find_element("css selector", "input.comment").send_keys("Đã gặp công dân")
    card.find_element("css selector", "button.ack").click()
    browser.wait(
        lambda d: browser.css("#alerts-list article").get_attribute("data-state") == "acknowledged",
        what="the alert acknowledged",
    )
    browser.shot("alert-acknowledged")
    [alert] = api.get("/alerts").json()
    assert alert["state"] == "acknowledged"
    full = api.get(f"/alerts/{alert['id']}").json()
    assert any(e.get("comment") == "Đã gặp công dân" for e in full["events"])

    browser.click("#alerts-list article button.resolve")
    browser.wait_text("#alerts-list", "Không có cảnh báo nào")  # the default view: not resolved
    assert api.get("/alerts").json()[0]["state"] == "resolved"
    no_script_errors(browser)


def test_check_in_scan_a_handed_back_case_and_see_the_next_rating_link_to_it(
    hub: HubService, api: httpx.Client, terminal_factory, browser: Browser
) -> None:
    seed_office(api)
    term = terminal_factory(desk="quay-1")
    pump([term], term.app.online)
    log_in(browser, hub, hub.settings.api_token, page="duty")

    Select(browser.css("#duty-desk")).select_by_value("quay-1")
    Select(browser.css("#duty-official")).select_by_value("an")
    browser.css("#check-in").click()
    browser.wait_text("#duty-message", "Nguyễn Văn An đã vào ca tại Quầy 1 - Hộ tịch")
    browser.wait_text(".duty-now tr[data-desk='quay-1']", "Nguyễn Văn An")
    assert api.get("/duty/current").json()["quay-1"] == "an"

    # the scanner types into whatever has the focus: the case field must have it
    scan = browser.css("#scan")
    assert browser.js("return document.activeElement.id") == "scan"
    browser.css("h1").click()  # a click on the page elsewhere gives it back to the field
    assert browser.js("return document.activeElement.id") == "scan"
    scan.send_keys("HS-2026-0001" + Keys.ENTER)
    browser.wait_text("#scan-result", "Đã ghi nhận trả kết quả hồ sơ HS-2026-0001 tại Quầy 1")
    assert scan.get_attribute("value") == ""
    assert browser.js("return document.activeElement.id") == "scan"
    browser.shot("case-scanned")

    scan.send_keys("HS-2026-0001" + Keys.ENTER)  # the scanner read the same receipt twice
    browser.wait_text("#scan-result", "Bỏ qua: mã HS-2026-0001 vừa được quét")
    cases = api.get("/cases").json()
    assert [(c["code"], c["desk_id"], c["official_id"], c["source"]) for c in cases] == [
        ("HS-2026-0001", "quay-1", "an", "scanner")
    ]

    pump([term], lambda: ("prompt", 0) in term.board.feedbacks)  # the terminal invites a rating
    term.press(1)
    pump([term], lambda: term.depth() == 0)
    browser.css("#nav a[data-page='live']").click()
    row = browser.wait_text("#feed-rows tr", "HS-2026-0001")
    assert "Nguyễn Văn An" in row.text and "đã gắn hồ sơ" in row.text
    browser.shot("rating-linked-to-case")
    no_script_errors(browser)


def test_an_official_sees_only_their_own_pages_and_checks_themselves_in(
    hub: HubService, api: httpx.Client, terminal_factory, browser: Browser
) -> None:
    seed_office(api)
    _, token = create_token(hub.engine, name="an", role="official", official_id="an")
    t1 = terminal_factory(desk="quay-1")
    t2 = terminal_factory(desk="quay-2")
    pump([t1, t2], lambda: t1.app.online() and t2.app.online())
    api.post("/duty/check-in", json={"desk_id": "quay-2", "official_id": "binh"}).raise_for_status()

    log_in(browser, hub, token, page="duty")
    assert browser.text_of("#who-role") == "Công chức"
    shown = {a.get_attribute("data-page") for a in browser.all("#nav a") if a.is_displayed()}
    assert shown == {"live", "stats", "heatmap", "duty"}
    assert not browser.css("#duty-official").is_enabled()
    Select(browser.css("#duty-desk")).select_by_value("quay-1")
    scan = browser.css("#scan")  # before checking in, the hub refuses the scan and says why
    scan.send_keys("HS-2026-0009" + Keys.ENTER)
    browser.wait_text("#scan-result", "bạn chưa vào ca tại quầy này")
    assert not api.get("/cases", params={"code": "HS-2026-0009"}).json()
    browser.css("#check-in").click()
    browser.wait_text("#duty-message", "Nguyễn Văn An đã vào ca tại Quầy 1 - Hộ tịch")
    browser.wait_text("#duty-current", "Bạn đang trực tại Quầy 1 - Hộ tịch")
    browser.css("#scan").send_keys("HS-2026-0010" + Keys.ENTER)  # at their own desk: recorded
    browser.wait_text("#scan-result", "Đã ghi nhận trả kết quả hồ sơ HS-2026-0010")
    [case] = api.get("/cases", params={"code": "HS-2026-0010"}).json()
    assert (case["desk_id"], case["official_id"]) == ("quay-1", "an")

    # a page the role may not see, asked for by its address, falls back to one it may
    browser.driver.get(f"{base_url(hub)}/#/alerts")
    browser.wait(lambda d: browser.all("#page-live"), what="the live page instead of alerts")
    stream_live(browser)
    t2.press(1)  # Bình's rating: not for An's eyes
    t1.press(2)  # An's
    pump([t1, t2], lambda: t1.depth() == 0 and t2.depth() == 0)
    browser.wait_text("#feed-rows tr", "Hài lòng")
    time.sleep(0.5)  # Bình's would have arrived by now
    rows = [r.text for r in browser.all("#feed-rows tr")]
    assert len(rows) == 1 and "Nguyễn Văn An" in rows[0], rows
    browser.shot("official-view")
    no_script_errors(
        browser,
        allow=(
            "/api/v1/cases - Failed to load resource: the server responded with a status of 403",
        ),
    )


def test_clear_messages_for_a_wrong_token_and_an_unreachable_hub(
    tmp_path: Path, browser: Browser
) -> None:
    hub = HubService(make_settings(tmp_path / "hub"))
    hub.start()
    try:
        browser.driver.get(base_url(hub) + "/")
        browser.wait(lambda d: browser.all("#token"), what="the login form")
        browser.css("#token").send_keys("sipas_not-a-token" + Keys.ENTER)
        browser.wait_text("#login-message", "Mã truy cập không đúng hoặc đã bị thu hồi")
        browser.css("#token").clear()
        log_in(browser, hub, hub.settings.api_token)
        stream_live(browser)
    finally:
        hub.stop()
    browser.wait(
        lambda d: browser.css("#feed-state").get_attribute("data-state") == "offline",
        what="the feed to notice the hub is gone",
    )
    assert "Mất kết nối" in browser.text_of("#feed-state")
    browser.css("#nav a[data-page='terminals']").click()
    browser.wait_text("#page-terminals", "Không kết nối được tới hub")
    browser.shot("hub-unreachable")


def test_phone_sized_screen(
    hub: HubService, api: httpx.Client, terminal_factory, browser: Browser
) -> None:
    seed_office(api)
    term = terminal_factory(desk="quay-1")
    pump([term], term.app.online)
    term.press(3)
    pump([term], lambda: term.depth() == 0)
    browser.driver.set_window_size(390, 844)  # a supervisor's phone
    log_in(browser, hub, hub.settings.api_token)
    browser.wait_text("#feed-rows", "Không hài lòng")

    def fits(_d: Any = None) -> bool:
        return bool(browser.js("return document.documentElement.scrollWidth <= window.innerWidth"))

    assert fits(), "the page is wider than the phone"
    assert not browser.css("#nav").is_displayed()  # the menu folds behind its button
    browser.shot("phone-live")
    browser.css("#menu-button").click()
    browser.wait(lambda d: browser.css("#nav").is_displayed(), what="the menu")
    browser.shot("phone-menu")
    browser.css("#nav a[data-page='alerts']").click()
    browser.wait_text("#alerts-list", "không hài lòng")
    assert not browser.css("#nav").is_displayed()
    assert fits()
    browser.shot("phone-alerts")
    no_script_errors(browser)
