"""The district dashboard in real headless Chromium: an auditor logs in with a token, sees two
offices ranked with their figures (Vietnamese number format), the fields and months, and a forged
rating on the integrity page; an office viewer sees only its own office."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine

from hub.district import auth
from hub.district.api import create_app
from hub.district.db import make_engine, migrate
from tests.fixtures.browser import Browser
from tests.fixtures.district import Served, add_office, batch, new_terminal, settings_for
from tests.integration.test_district_reports import Hub, case, rating

pytest_plugins = ["tests.fixtures.browser"]
pytestmark = pytest.mark.browser


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Served, Engine]]:
    """A district on SQLite with two offices' June 2026 (the current month is not needed: the
    page is asked for June)."""
    url = f"sqlite:///{tmp_path / 'district.sqlite3'}"
    engine = make_engine(url)
    migrate(engine)
    app = create_app(settings_for(url, tmp_path), engine)
    with Served(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        hub_a = Hub(client, "phuong-1", add_office(engine, "phuong-1", "UBND phường 1"))
        hub_b = Hub(client, "xa-2", add_office(engine, "xa-2", "UBND xã 2"))
        ta, tb = new_terminal(engine, "phuong-1"), new_terminal(engine, "xa-2")
        hub_a.send(
            "ratings",
            [rating(ta, s, lv, case_code=f"HS-{s}") for s, lv in enumerate([1, 1, 2, 3], 1)],
        )
        hub_a.send("cases", [case(i, f"HS-{i}", "Hộ tịch") for i in range(1, 5)])
        hub_b.send("ratings", [rating(tb, s, lv, case_code=None) for s, lv in enumerate([1, 3], 1)])
        # a hub that alters a rating: level 3 turned into level 1 after signing
        forged: dict[str, Any] = rating(tb, 3, 3)
        raw = bytearray(bytes.fromhex(forged["raw"]))
        raw[12] = 1  # the level byte of the signed body
        forged["raw"] = raw.hex()
        body, headers = batch("xa-2", "ratings", 2, [forged])
        r = client.post(
            "/api/v1/sync/ratings",
            content=body,
            headers={**headers, "Authorization": f"Bearer {hub_b.token}"},
        )
        assert r.status_code == 200 and r.json()["rejected"], r.text
        yield server, engine
    engine.dispose()


def _log_in(b: Browser, url: str, token: str) -> None:
    b.driver.get(f"{url}/#/offices")
    b.wait(lambda d: b.all("#token"), what="the login form")
    b.css("#token").send_keys(token)
    b.css("#login-button").click()
    b.wait(lambda d: b.css("#who-role").is_displayed(), what="the role after login")


def _june(b: Browser) -> None:
    b.js(
        "const m = document.getElementById('period-month'); m.value = '2026-06';"
        "m.dispatchEvent(new Event('change'));"
    )
    b.wait_text("#offices-period", "month:2026-06")


def test_an_auditor_sees_both_offices_and_the_forged_rating(
    served: tuple[Served, Engine], browser: Browser
) -> None:
    server, engine = served
    _, token = auth.create_token(engine, name="phong.noi.vu", role="auditor")
    _log_in(browser, server.url, token)
    assert browser.text_of("#who-role") == "Phòng Nội vụ"
    _june(browser)
    table = browser.wait_text("table[data-by='office']", "UBND xã 2")
    rows = {
        tr.get_attribute("data-key"): tr for tr in table.find_elements("css selector", "tbody tr")
    }
    a, b = rows["phuong-1"].text, rows["xa-2"].text
    assert "UBND phường 1" in a and "75,0" in a  # 3 of 4 satisfied, Vietnamese decimal comma
    assert "UBND xã 2" in b and "50,0" in b
    assert "Đủ" in a  # 4 ratings for 4 cases
    assert rows["total"].text.split()[2] == "6"  # Tổng cộng | 6 valid ratings
    browser.shot("offices")

    browser.css("#nav a[data-page='fields']").click()
    browser.wait_text("table[data-by='field']", "Hộ tịch")
    browser.css("#nav a[data-page='integrity']").click()
    block = browser.wait_text("section.office-block[data-office='xa-2']", "Phiếu giả hoặc bị sửa")
    assert "1 phát hiện" in block.text
    assert "Không phát hiện gì" in browser.text_of("section.office-block[data-office='phuong-1']")
    browser.shot("integrity")

    browser.css("#lang").send_keys("English")
    browser.wait_text("#nav", "Integrity")
    browser.wait_text("section.office-block[data-office='xa-2']", "Forged or altered rating")


def test_an_office_viewer_sees_only_its_office(
    served: tuple[Served, Engine], browser: Browser
) -> None:
    server, engine = served
    _, token = auth.create_token(engine, name="chi.lan", role="viewer", office="xa-2")
    _log_in(browser, server.url, token)
    _june(browser)
    table = browser.wait_text("table[data-by='office']", "UBND xã 2")
    assert "UBND phường 1" not in table.text
    browser.shot("viewer")
