"""The live ratings stream (Server-Sent Events) on a real hub fed by simulated terminals: a press
arrives within a second, a reconnect with Last-Event-ID loses nothing, an official hears only
their own ratings, and stopping the hub ends open streams at once."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.api.auth import create_token
from hub.service import HubService
from provisioning.simulate import SimTerminal
from tests.fixtures.hub import make_settings, pump
from tests.helpers import sse_records

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
PING = 0.3


class Listener:
    """Reads the stream in a thread; events go to a queue with the time they arrived."""

    def __init__(self, url: str, token: str, last_event_id: int | None = None) -> None:
        self.events: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        self.pings = 0
        self.ended = threading.Event()
        self._stop = threading.Event()
        headers = {"Authorization": f"Bearer {token}"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self._client = httpx.Client(timeout=httpx.Timeout(10, read=5))
        self._thread = threading.Thread(target=self._run, args=(url, headers), daemon=True)
        self._thread.start()

    def _run(self, url: str, headers: dict[str, str]) -> None:
        try:
            with self._client.stream("GET", url, headers=headers) as r:
                assert r.status_code == 200, r.read()
                assert r.headers["content-type"].startswith("text/event-stream")
                for kind, v in sse_records(r.iter_lines()):
                    if self._stop.is_set():
                        return
                    if kind == "comment" and v.startswith(" ping"):
                        self.pings += 1
                    elif kind == "event":
                        data = json.loads(v["data"])
                        assert v["event"] == "rating" and int(v["id"]) == data["id"]
                        self.events.put((time.monotonic(), data))
        except httpx.HTTPError:
            pass  # the hub went away
        finally:
            self.ended.set()

    def ready(self, timeout: float = 5) -> None:
        """Wait for a heartbeat: the stream then knows where it starts."""
        deadline = time.monotonic() + timeout
        while self.pings == 0:
            assert time.monotonic() < deadline, "no heartbeat on the stream"
            time.sleep(0.02)

    def take(self, n: int, terms: list[SimTerminal], timeout: float = 10) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            assert time.monotonic() < deadline, f"got {len(out)} of {n} events"
            for t in terms:
                t.step(0)
            with suppress(queue.Empty):
                out.append(self.events.get(timeout=0.01)[1])
        return out

    def close(self) -> None:
        self._stop.set()
        self._client.close()
        self._thread.join(timeout=5)


@contextmanager
def listen(hub: HubService, token: str, last: int | None = None) -> Iterator[Listener]:
    listener = Listener(hub.api_url + "/ratings/stream", token, last)
    try:
        yield listener
    finally:
        listener.close()


@pytest.fixture
def fast_pings(hub: HubService) -> HubService:
    hub.app.state.ratings_ping_seconds = PING
    return hub


def test_a_press_arrives_within_a_second_and_a_reconnect_loses_nothing(
    fast_pings: HubService, terminal_factory
) -> None:
    hub, token = fast_pings, fast_pings.settings.api_token
    term = terminal_factory(desk="quay-1")
    pump([term], term.app.online)
    with listen(hub, token) as live:
        live.ready()
        t0 = time.monotonic()
        seq = term.press(1)
        while live.events.empty():
            assert time.monotonic() - t0 < 5, "the press never reached the stream"
            term.step(0)
            time.sleep(0.005)
        arrived, first = live.events.get()
        latency = arrived - t0
        assert latency < 1.0, latency
        assert (first["seq"], first["level"], first["terminal_id"]) == (seq, 1, term.terminal_id)
        assert first["valid"] is True and "exclusions" in first
        assert "effective_official_id" in first
        time.sleep(PING * 2)
        assert live.pings >= 2  # heartbeats while nothing happens

    # disconnected: three presses (one a repeat within the lockout, excluded at ingest)
    for level in (2, 3, 3):
        term.press(level)
    pump([term], lambda: term.depth() == 0)
    with listen(hub, token, last=first["id"]) as again:
        missed = again.take(3, [term])
        assert [m["level"] for m in missed] == [2, 3, 3]
        assert [m["id"] for m in missed] == sorted(m["id"] for m in missed)
        assert missed[0]["id"] > first["id"]
        assert [x["reason"] for x in missed[2]["exclusions"]] == ["repeat"]
        term.board.clock.advance(11)  # past the lockout
        term.press(1)
        [live_one] = again.take(1, [term])
        assert live_one["id"] > missed[-1]["id"]
    rows = httpx.get(hub.api_url + "/ratings", headers={"Authorization": f"Bearer {token}"}).json()
    assert [r["id"] for r in rows] == [first["id"], *(m["id"] for m in missed), live_one["id"]]


def test_an_official_hears_only_their_own_ratings(
    fast_pings: HubService, api: httpx.Client, terminal_factory
) -> None:
    hub = fast_pings
    for desk in ("quay-1", "quay-2"):
        api.post("/desks", json={"id": desk, "name": desk}).raise_for_status()
    for who in ("an", "binh"):
        api.post("/officials", json={"id": who, "name": who}).raise_for_status()
    api.post("/duty/check-in", json={"desk_id": "quay-1", "official_id": "an"}).raise_for_status()
    api.post("/duty/check-in", json={"desk_id": "quay-2", "official_id": "binh"}).raise_for_status()
    _, token = create_token(hub.engine, name="an", role="official", official_id="an")
    t1, t2 = terminal_factory(desk="quay-1"), terminal_factory(desk="quay-2")
    terms = [t1, t2]
    pump(terms, lambda: t1.app.online() and t2.app.online())
    with listen(hub, token) as live:
        live.ready()
        t2.press(1)  # binh's
        t1.press(2)  # an's
        [own] = live.take(1, terms)
        pump(terms, lambda: t1.depth() == 0 and t2.depth() == 0)
        pings = live.pings
        while live.pings < pings + 2:  # the stream has read the table again since
            time.sleep(0.05)
        assert (own["effective_official_id"], own["level"]) == ("an", 2)
        assert live.events.empty()
    r = httpx.get(
        hub.api_url + "/ratings/stream",
        params={"official": "binh"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 403


def test_stopping_the_hub_ends_open_streams_at_once(tmp_path: Path) -> None:
    hub = HubService(make_settings(tmp_path / "hub"))
    hub.app.state.ratings_ping_seconds = PING
    hub.start()
    listeners = [Listener(hub.api_url + "/ratings/stream", hub.settings.api_token) for _ in "ab"]
    for x in listeners:
        x.ready()
    t0 = time.monotonic()
    hub.stop()
    stopped = time.monotonic() - t0
    for x in listeners:
        assert x.ended.wait(5), "a stream stayed open after the hub stopped"
        x.close()
    assert stopped < 5, stopped
