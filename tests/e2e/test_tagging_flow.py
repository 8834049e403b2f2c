"""The supervisor's day through the API: desks, an official checks in, a case is handed back, the
terminal invites a rating, the citizen presses, and the rating carries the official and the case."""

from __future__ import annotations

import httpx
import pytest

from hub.service import HubService
from tests.fixtures.hub import pump

pytestmark = pytest.mark.e2e


def test_handed_back_case_prompts_and_links_the_next_rating(
    hub: HubService, api: httpx.Client, terminal_factory
) -> None:
    api.post("/desks", json={"id": "quay-1", "name": "Quầy 1 - Hộ tịch"}).raise_for_status()
    api.post("/officials", json={"id": "an", "name": "Nguyễn Văn An"}).raise_for_status()
    term = terminal_factory(desk="quay-1")
    pump([term], term.app.online)
    r = api.post(
        "/duty/check-in",
        json={"desk_id": "quay-1", "official_id": "an"},
        headers={"X-SIPAS-Actor": "truong-bo-phan"},
    )
    assert r.status_code == 201
    assert api.get("/duty/current").json() == {"quay-1": "an"}

    r = api.post(
        "/cases",
        json={
            "code": "HS-2026-0001",
            "desk_id": "quay-1",
            "field": "Hộ tịch",
            "procedure": "Đăng ký khai sinh",
            "source": "scanner",
        },
    )
    assert r.status_code == 201 and r.json()["created"] is True
    case_id = r.json()["case"]["id"]
    pump([term], lambda: ("prompt", 0) in term.board.feedbacks)  # the LED invites a rating

    term.press(1)
    term.press(3)  # a second press within the lockout: a repeat
    pump([term], lambda: term.depth() == 0)
    rows = api.get("/ratings").json()
    assert [
        (x["seq"], x["official_id"], x["case_id"], x["link_status"], x["prompted"]) for x in rows
    ] == [
        (1, "an", case_id, "linked", True),
        (2, "an", None, "not_linked", False),
    ]
    assert [x["seq"] for x in api.get("/ratings", params={"valid": True}).json()] == [1]
    assert api.get(f"/ratings/{rows[1]['id']}/exclusions").json()[0]["reason"] == "repeat"

    again = api.post("/cases", json={"code": "HS-2026-0001", "desk_id": "quay-1"})
    assert again.status_code == 201 and again.json()["created"] is False

    audit = api.get("/audit").json()
    assert {(a["entity"], a["action"]) for a in audit} >= {
        ("desk", "create"),
        ("official", "create"),
        ("duty", "check-in"),
        ("case", "handed-back"),
    }
    assert any(a["actor"] == "api:truong-bo-phan" for a in audit)
    assert api.get("/integrity").json()["ok"] is True


def test_clear_errors(hub: HubService, api: httpx.Client) -> None:
    r = api.post("/duty/check-in", json={"desk_id": "nope", "official_id": "an"})
    assert r.status_code == 404 and "desk nope does not exist" in r.json()["detail"]
    api.post("/desks", json={"id": "quay-2", "name": "Quầy 2"}).raise_for_status()
    r = api.post("/desks", json={"id": "quay-2", "name": "Quầy 2"})
    assert r.status_code == 409 and "already exists" in r.json()["detail"]
    r = api.post("/desks", json={"id": "Quầy 3", "name": "x"})
    assert r.status_code == 422
    r = api.post("/duty/check-out", json={"desk_id": "quay-2"})
    assert r.status_code == 409 and "nobody is checked in" in r.json()["detail"]
    r = api.post("/ratings/999/exclusions", json={"reason": "on_behalf"})
    assert r.status_code == 404


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("get", "/ratings?after_id=99999999999999999999", None),
        ("get", "/ratings/99999999999999999999/exclusions", None),
        ("post", "/exclusions/99999999999999999999/reinstate", None),
        ("get", "/alerts/99999999999999999999", None),
        ("get", "/ratings?since=0001-01-01T00:00:00", None),
        (
            "post",
            "/cases",
            {"code": "X", "desk_id": "quay-9", "handed_back_at": "0001-01-01T00:00:00"},
        ),
    ],
)
def test_out_of_range_input_is_a_client_error(
    hub: HubService, api: httpx.Client, method: str, path: str, body: dict | None
) -> None:
    r = api.request(method.upper(), path, json=body)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
