"""The citizen's QR page in real headless Chromium at a phone's size, against a real hub: rate with
a reason and a phone number, see the thanks; the same phone cannot rate the same case twice; and
when the hub cannot be reached the page says so, keeps the choice, and "Gửi lại" sends it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from hub.service import HubService
from tests.fixtures.browser import Browser

pytestmark = pytest.mark.browser


def _desk_page(hub: HubService, api: httpx.Client) -> str:
    api.post("/desks", json={"id": "quay-1", "name": "Quầy 1 - Hộ tịch"}).raise_for_status()
    api.post("/officials", json={"id": "an", "name": "Nguyễn Văn An"}).raise_for_status()
    api.post("/duty/check-in", json={"desk_id": "quay-1", "official_id": "an"}).raise_for_status()
    (desk,) = api.get("/qr/desks").json()
    return str(desk["url"])


def _qr(api: httpx.Client) -> list[dict[str, Any]]:
    return [r for r in api.get("/ratings").json() if r["channel"] == "qr"]


def _choose(b: Browser, level: int) -> None:
    b.css(f'label.level:has(input[value="{level}"])').click()


def test_citizen_rates_from_the_phone_page(
    hub: HubService, api: httpx.Client, browser: Browser
) -> None:
    url = _desk_page(hub, api)
    case = api.post("/cases", json={"code": "HS-2026-0042", "desk_id": "quay-1"}).json()
    b = browser
    b.driver.set_window_size(390, 844)  # a phone
    b.driver.get(url)
    b.wait_text("h1", "Quầy 1 - Hộ tịch")
    assert "Nguyễn Văn An" in b.text_of(".official")
    assert len(b.all("label.level")) == 3
    assert not b.css("#reasons").is_displayed()  # the reason step follows a negative choice only
    _choose(b, 3)
    b.wait(lambda d: b.css("#reasons").is_displayed(), what="the reasons")
    b.css('label.reason:has(input[value="1"])').click()
    b.css('input[name="phone"]').send_keys("0912 345 678")
    b.shot("chosen")
    b.css("#send").click()
    b.wait(lambda d: b.css("#thanks").is_displayed(), what="the thanks")
    assert "Cảm ơn bạn đã đánh giá!" in b.text_of("#thanks")
    b.shot("thanks")
    (rating,) = _qr(api)
    assert (rating["level"], rating["reason"], rating["official_id"]) == (3, 1, "an")
    assert rating["case_id"] == case["case"]["id"] and rating["link_status"] == "linked"

    # the same phone, the same case: refused with a clear message, the choice kept
    b.driver.get(url)
    b.wait_text("h1", "Quầy 1")
    _choose(b, 1)
    b.css('input[name="phone"]').send_keys("0912345678")
    b.css("#send").click()
    b.wait_text("#msg", "Mỗi hồ sơ chỉ được đánh giá một lần")
    assert b.css('input[name="level"][value="1"]').is_selected()
    assert not b.css("#thanks").is_displayed()
    b.shot("one-per-case")
    assert len(_qr(api)) == 1
    assert not [m for m in b.logs() if "favicon" not in m and "409" not in m]


def test_page_says_when_the_hub_cannot_be_reached_and_keeps_the_choice(
    hub: HubService, api: httpx.Client, browser: Browser
) -> None:
    url = _desk_page(hub, api)
    b = browser
    b.driver.set_window_size(390, 844)
    b.driver.get(url + "?lang=en")
    b.wait_text("h1", "Quầy 1")
    _choose(b, 2)
    # the phone leaves the office's Wi-Fi: nothing reaches the hub
    b.driver.set_network_conditions(offline=True, latency=0, throughput=0)
    b.css("#send").click()
    b.wait_text("#msg", "cannot be reached")
    assert "join the office's Wi-Fi" in b.text_of("#msg")
    assert b.css('input[name="level"][value="2"]').is_selected()
    assert b.text_of("#send") == "Send again"
    b.shot("unreachable")
    assert _qr(api) == []
    # back on the Wi-Fi: "Send again" sends the same choice
    b.driver.set_network_conditions(offline=False, latency=0, throughput=1_000_000)
    b.css("#send").click()
    b.wait(lambda d: b.css("#thanks").is_displayed(), what="the thanks")
    assert [r["level"] for r in _qr(api)] == [2]
