"""A token revoked while its live stream is open: the stream ends with ``event: end`` and the reason
within a moment, while a stream opened with another token keeps going; the dashboard then says so
and asks to log in again instead of reconnecting. A real hub (its own Mosquitto, SQLite, the API),
a simulated terminal, the `sipas-hub tokens` commands and, for the dashboard, headless Chromium."""

from __future__ import annotations

import json
import queue
import re
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.support.ui import Select
from sqlmodel import Session
from typer.testing import CliRunner

from hub.cli import app as cli_app
from hub.models import ApiToken
from hub.service import HubService
from provisioning.simulate import SimTerminal
from tests.fixtures.browser import Browser, log_in, no_script_errors, seed_office, stream_live
from tests.fixtures.hub import pump
from tests.helpers import sse_records

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
RECHECK = 0.25  # the hub's token re-check interval for these tests (5 s by default)
PING = 0.3
SOON = 3.0  # "within a few seconds": many re-check intervals, on a busy 2-core machine


class Stream:
    """One live stream read in a thread: each event (its ``event:`` and parsed ``data:``) goes to a
    queue; ``closed`` is set when the hub ends the response."""

    def __init__(self, url: str, token: str) -> None:
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.started = threading.Event()
        self.closed = threading.Event()
        self.status = 0
        self._client = httpx.Client(timeout=httpx.Timeout(10, read=5))
        self._thread = threading.Thread(target=self._run, args=(url, token), daemon=True)
        self._thread.start()
        assert self.started.wait(5), "the stream did not start"
        assert self.status == 200, self.status

    def _run(self, url: str, token: str) -> None:
        try:
            with self._client.stream("GET", url, headers={"Authorization": f"Bearer {token}"}) as r:
                self.status = r.status_code
                for kind, v in sse_records(r.iter_lines()):
                    if kind == "retry":
                        self.started.set()  # subscribed: what happens from now on reaches us
                    elif kind == "event":
                        self.events.put((v.get("event", "message"), json.loads(v["data"])))
        except httpx.HTTPError:
            pass  # closed by the test
        finally:
            self.started.set()
            self.closed.set()

    def next(
        self, timeout: float = SOON, pump_terms: Sequence[SimTerminal] = ()
    ) -> tuple[str, dict[str, Any]]:
        """The next event; terminals keep running meanwhile (they deliver the presses)."""
        deadline = time.monotonic() + timeout
        while True:
            for t in pump_terms:
                t.step(0)
            try:
                return self.events.get(timeout=0.02)
            except queue.Empty:
                assert time.monotonic() < deadline, f"no event in {timeout} s"

    def close(self) -> None:
        self._client.close()
        self._thread.join(timeout=5)


@pytest.fixture
def fast(hub: HubService) -> HubService:
    """The hub re-checks stream tokens every RECHECK s (and pings often) instead of every 5 s."""
    hub.app.state.token_recheck_seconds = RECHECK
    hub.app.state.ratings_ping_seconds = PING
    hub.app.state.alert_ping_seconds = PING
    return hub


@pytest.fixture
def tokens_cli(hub: HubService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """`sipas-hub tokens ...` on the running hub's database, as a technician runs it on the Pi."""
    monkeypatch.setenv("SIPAS_HUB_ENV_FILE", str(tmp_path / "none.env"))
    monkeypatch.setenv("SIPAS_HUB_DATA_DIR", str(hub.settings.data_dir))
    monkeypatch.setenv("SIPAS_HUB_OFFICE", hub.settings.office)
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()

    def tokens(*args: str) -> tuple[str, str]:
        res = runner.invoke(cli_app, ["tokens", *args])
        assert res.exit_code == 0, (res.stdout, res.stderr)
        return res.stdout, res.stderr

    return tokens


def new_token(tokens_cli: Any, name: str, role: str) -> tuple[int, str]:
    stdout, stderr = tokens_cli("create", "--name", name, "--role", role)
    return int(re.search(r"token (\d+) for", stderr)[1]), stdout.strip()  # type: ignore[index]


@pytest.fixture
def term(terminal_factory: Any) -> SimTerminal:
    t: SimTerminal = terminal_factory(desk="quay-1")
    pump([t], t.app.online)
    return t


@pytest.fixture
def streams() -> Iterator[list[Stream]]:
    opened: list[Stream] = []
    yield opened
    for s in opened:
        s.close()


def assert_ended(s: Stream, reason: str, since: float) -> dict[str, Any]:
    kind, data = s.next()
    assert kind == "end", (kind, data)
    assert data["reason"] == reason
    assert s.closed.wait(SOON), "the hub kept the response open after the end event"
    took = time.monotonic() - since
    assert took < SOON, took
    assert s.events.empty()  # nothing after the end
    return data


def test_revoking_a_token_ends_its_ratings_stream_and_no_other(
    fast: HubService, tokens_cli: Any, term: SimTerminal, streams: list[Stream]
) -> None:
    hub = fast
    wall_id, wall = new_token(tokens_cli, "man-hinh-sanh", "supervisor")  # the lobby screen
    _, desk = new_token(tokens_cli, "truong-bo-phan", "supervisor")
    url = hub.api_url + "/ratings/stream"
    revoked, kept = Stream(url, wall), Stream(url, desk)
    streams += [revoked, kept]
    term.press(1)
    for s in (revoked, kept):  # both live
        kind, data = s.next(pump_terms=[term])
        assert (kind, data["level"]) == ("rating", 1)

    t0 = time.monotonic()
    _, said = tokens_cli("revoke", str(wall_id))
    assert f"token {wall_id} (man-hinh-sanh, supervisor) revoked" in said
    data = assert_ended(revoked, "token_revoked", t0)
    assert "revoked" in data["detail"] and "administrator" in data["detail"]

    term.board.clock.advance(11)  # past the repeat lockout
    term.press(2)
    kind, data = kept.next(pump_terms=[term])
    assert (kind, data["level"]) == ("rating", 2)  # the other screen keeps going
    assert revoked.events.empty()
    # reconnecting with the revoked token is refused with the reason
    r = httpx.get(url, headers={"Authorization": f"Bearer {wall}"})
    assert r.status_code == 401 and "revoked" in r.json()["detail"]


def test_revoking_a_token_ends_its_alerts_stream_even_while_events_flow(
    fast: HubService, tokens_cli: Any, term: SimTerminal, streams: list[Stream]
) -> None:
    hub = fast
    auditor_id, auditor = new_token(tokens_cli, "phong-noi-vu", "auditor")
    _, supervisor = new_token(tokens_cli, "truong-bo-phan", "supervisor")
    url = hub.api_url + "/alerts/stream"
    revoked, kept = Stream(url, auditor), Stream(url, supervisor)
    streams += [revoked, kept]
    term.press(3)  # dissatisfied: an alert
    for s in (revoked, kept):
        kind, data = s.next(pump_terms=[term])
        assert (kind, data["event"], data["alert"]["rule"]) == ("alert", "created", "negative")
    alert_id = data["alert"]["id"]

    # the supervisor keeps commenting (an event every 50 ms) while the auditor's token is revoked
    stop = threading.Event()

    def comment() -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {supervisor}"}) as c:
            n = 0
            while not stop.is_set():
                n += 1
                r = c.post(f"{hub.api_url}/alerts/{alert_id}/comment", json={"comment": f"#{n}"})
                r.raise_for_status()
                time.sleep(0.05)

    commenter = threading.Thread(target=comment, daemon=True)
    commenter.start()
    try:
        kind, _ = revoked.next()
        assert kind == "alert"  # the flow reaches the auditor before the revocation
        t0 = time.monotonic()
        tokens_cli("revoke", str(auditor_id))
        while True:  # comments sent before the re-check may still arrive, then the end
            kind, data = revoked.next()
            if kind != "alert":
                break
            assert time.monotonic() - t0 < SOON, "comments kept reaching the revoked token"
        assert (kind, data["reason"]) == ("end", "token_revoked")
        assert revoked.closed.wait(SOON)
        assert time.monotonic() - t0 < SOON
        # the supervisor's stream still hears every comment, after the revocation too
        time.sleep(RECHECK * 2)
        while not kept.events.empty():
            kept.events.get()
        kind, data = kept.next()
        assert (kind, data["event"]) == ("alert", "commented")
    finally:
        stop.set()
        commenter.join(5)


def test_a_role_that_no_longer_allows_the_stream_ends_it(
    fast: HubService, tokens_cli: Any, streams: list[Stream]
) -> None:
    hub = fast
    token_id, token = new_token(tokens_cli, "truong-bo-phan", "supervisor")
    s = Stream(hub.api_url + "/alerts/stream", token)
    streams.append(s)
    # the holder became an official, who may not read the office's alerts (no command does this:
    # an administrator changed the database, or a future command will)
    with Session(hub.engine) as db:
        row = db.get(ApiToken, token_id)
        assert row is not None
        row.role, row.official_id = "official", "an"
        db.add(row)
        db.commit()
    data = assert_ended(s, "role_forbidden", time.monotonic())
    assert "role" in data["detail"]


@pytest.mark.browser
def test_the_dashboard_says_the_token_was_revoked_and_stops_reconnecting(
    fast: HubService, api: httpx.Client, tokens_cli: Any, term: SimTerminal, browser: Browser
) -> None:
    hub = fast
    seed_office(api)
    first_id, first = new_token(tokens_cli, "man-hinh-sanh", "supervisor")
    log_in(browser, hub, first)
    stream_live(browser)

    tokens_cli("revoke", str(first_id))
    notice = browser.wait_text("#feed-message .stream-ended", "đã bị thu hồi", timeout=SOON)
    assert "Vui lòng đăng nhập lại bằng một mã truy cập còn hiệu lực" in notice.text
    assert browser.css("#feed-state").get_attribute("data-state") == "ended"
    assert browser.text_of("#feed-state") == "Đã dừng – cần đăng nhập lại"
    browser.shot("revoked-vi")
    # no reconnect: the stream's retry is 3 s; a reconnect would be refused (401) and lead to the
    # login page with a vaguer message. The page stays, with the reason.
    time.sleep(4)
    assert browser.all("#feed-message .stream-ended") and not browser.all("#token")
    requests = browser.js(
        "return performance.getEntriesByType('resource')"
        ".filter(e => e.name.includes('/ratings/stream')).length"
    )
    assert requests == 1, requests

    browser.click("#feed-message button.sign-in-again")
    browser.wait(lambda d: browser.all("#token"), what="the login form")
    assert browser.js("return sessionStorage.getItem('sipas.token')") is None

    # in English, on the alerts page
    second_id, second = new_token(tokens_cli, "truong-bo-phan", "supervisor")
    log_in(browser, hub, second, page="alerts")
    Select(browser.css("#lang")).select_by_value("en")
    browser.wait_text("#nav", "Live")
    stream_live(browser, "#alerts-state")
    tokens_cli("revoke", str(second_id))
    notice = browser.wait_text("#alerts-message .stream-ended", "was revoked", timeout=SOON)
    assert "Please log in again with a valid access token" in notice.text
    assert browser.text_of("#alerts-state") == "Stopped – log in again"
    browser.shot("revoked-en")
    no_script_errors(browser, allow=("401",))
