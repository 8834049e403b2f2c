"""Paper ballots (seed 002) against a real hub over HTTP: the minutes and tallies of an opened box
are stored and audit-logged, bad minutes get a 4xx saying what is wrong, a broken seal raises an
alert and flags the box, a correction supersedes (never edits), and only admins and supervisors
may record (the auditor reads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from hub.api.auth import create_token
from hub.cli import app as cli
from hub.service import HubService

pytestmark = pytest.mark.integration


def _box(**kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "desk_id": "quay-1",
        "opened_at": "2026-10-31T16:30:00",
        "period_start": "2026-10-01",
        "period_end": "2026-10-31",
        "witnesses": ["Trần Thị Bình (Trưởng bộ phận Một cửa)", "Lê Văn Cường (Tổ công tác)"],
        "seal_intact": True,
        "ballots": 120,
        "invalid_ballots": 3,
        "scale": 3,
        "tallies": [
            {"level": 1, "count": 50, "field": "Hộ tịch"},
            {"level": 2, "count": 20, "field": "Hộ tịch"},
            {"level": 3, "count": 5, "field": "Hộ tịch"},
            {"level": 1, "count": 30, "field": "Chứng thực"},
            {"level": 2, "count": 12, "field": "Chứng thực"},
        ],
    }
    body.update(kw)
    return body


@pytest.fixture
def desk(api: httpx.Client) -> str:
    assert api.post("/desks", json={"id": "quay-1", "name": "Quầy 1"}).status_code == 201
    return "quay-1"


def test_minutes_and_tallies_are_stored_and_audited(api: httpx.Client, desk: str) -> None:
    r = api.post("/paper/boxes", json=_box())
    assert r.status_code == 201, r.text
    box = r.json()
    assert box["channel"] == "paper"
    assert (box["ballots"], box["invalid_ballots"], box["valid_ballots"]) == (120, 3, 117)
    assert box["seal_intact"] is True and box["seal_broken"] is False
    assert box["witnesses"][0].startswith("Trần Thị Bình")
    # office time (UTC+7) in, UTC out: the period is whole office days
    assert box["opened_at"].startswith("2026-10-31T09:30:00")
    assert box["period_start"].startswith("2026-09-30T17:00:00")
    assert box["period_end"] == box["opened_at"]  # "through the 31st", opened that afternoon
    assert sorted((t["field"], t["level"], t["count"]) for t in box["tallies"]) == [
        ("Chứng thực", 1, 30),
        ("Chứng thực", 2, 12),
        ("Hộ tịch", 1, 50),
        ("Hộ tịch", 2, 20),
        ("Hộ tịch", 3, 5),
    ]
    assert [b["id"] for b in api.get("/paper/boxes").json()] == [box["id"]]
    assert api.get(f"/paper/boxes/{box['id']}").json() == box
    assert api.get("/paper/boxes/999").status_code == 404
    audit = [a for a in api.get("/audit").json() if a["entity"] == "paperbox"]
    assert [(a["action"], a["entity_id"]) for a in audit] == [("record", str(box["id"]))]


@pytest.mark.parametrize(
    ("change", "status", "text"),
    [
        ({"ballots": 121}, 400, "the tallies add up to 117, but the minutes record 121 ballots"),
        ({"invalid_ballots": 200}, 400, "more than the ballots found"),
        ({"scale": 3, "tallies": [{"level": 4, "count": 117}]}, 400, "not on a 3-level ballot"),
        (
            {"tallies": [{"level": 1, "count": 100}, {"level": 1, "count": 17}]},
            400,
            "tallied twice",
        ),
        ({"period_start": "2026-11-01"}, 400, "period_start is after period_end"),
        ({"opened_at": "2026-10-15T10:00:00"}, 400, "after it was opened"),
        ({"desk_id": "quay-9"}, 404, "desk quay-9 does not exist"),
        ({"witnesses": ["Chỉ một người"]}, 422, "witnesses"),
        ({"ballots": -1}, 422, "ballots"),
        ({"seal_intact": False}, 400, "say in note what was found"),
        ({"supersedes": 999, "note": "sửa"}, 404, "paper box record 999 does not exist"),
    ],
)
def test_bad_minutes_get_a_clear_4xx(
    api: httpx.Client, desk: str, change: dict[str, Any], status: int, text: str
) -> None:
    r = api.post("/paper/boxes", json=_box(**change))
    assert r.status_code == status, r.text
    assert text in str(r.json()["detail"])
    assert api.get("/paper/boxes", params={"include_superseded": True}).json() == []


def test_broken_seal_is_recorded_alerted_and_flagged(api: httpx.Client, desk: str) -> None:
    r = api.post(
        "/paper/boxes",
        json=_box(seal_intact=False, note="Niêm phong bị rách một góc; đã báo Thủ trưởng"),
    )
    assert r.status_code == 201, r.text
    box = r.json()
    assert box["seal_broken"] is True and box["valid_ballots"] == 117  # counted, and flagged
    (alert,) = [a for a in api.get("/alerts").json() if a["detail"].get("kind") == "paper_seal"]
    assert alert["severity"] == "critical" and alert["desk"] == "quay-1"
    assert "niêm phong không còn nguyên vẹn" in alert["title_vi"]
    assert alert["detail"]["box_id"] == box["id"]


def test_a_correction_supersedes_and_never_edits(api: httpx.Client, desk: str) -> None:
    first = api.post("/paper/boxes", json=_box(ballots=118, invalid_ballots=1)).json()
    r = api.post("/paper/boxes", json=_box(supersedes=first["id"]))
    assert r.status_code == 400 and "needs a note" in r.json()["detail"]
    r = api.post(
        "/paper/boxes", json=_box(supersedes=first["id"], note="nhập nhầm số phiếu không hợp lệ")
    )
    assert r.status_code == 201, r.text
    fixed = r.json()
    assert fixed["supersedes"] == first["id"]
    # reports count the current record only; the old one is kept, marked as corrected
    assert [b["id"] for b in api.get("/paper/boxes").json()] == [fixed["id"]]
    every = {b["id"]: b for b in api.get("/paper/boxes?include_superseded=true").json()}
    assert every[first["id"]]["superseded_by"] == fixed["id"]
    assert every[first["id"]]["ballots"] == 118  # unchanged
    month = api.get("/reports/satisfaction", params={"period": "month:2026-10"}).json()["total"]
    assert month["paper"] == 117  # the corrected box counts once, as corrected
    assert month["excluded_by_reason"] == {"paper_invalid": 3}
    r = api.post("/paper/boxes", json=_box(supersedes=first["id"], note="lần nữa"))
    assert r.status_code == 409 and f"corrected by record {fixed['id']}" in r.json()["detail"]
    actions = [a["action"] for a in api.get("/audit").json() if a["entity"] == "paperbox"]
    assert sorted(actions) == ["correct", "record"]


def test_only_admins_and_supervisors_record(hub: HubService, api: httpx.Client, desk: str) -> None:
    api.post("/officials", json={"id": "nguyen.van.an", "name": "Nguyễn Văn An"})
    tokens = {
        role: create_token(
            hub.engine,
            name=role,
            role=role,
            official_id="nguyen.van.an" if role == "official" else None,
        )[1]
        for role in ("supervisor", "auditor", "official")
    }

    def as_(role: str) -> httpx.Client:
        return httpx.Client(
            base_url=hub.api_url, headers={"Authorization": f"Bearer {tokens[role]}"}
        )

    with as_("auditor") as c:
        r = c.post("/paper/boxes", json=_box())
        assert r.status_code == 403 and "auditor" in r.json()["detail"]
        assert c.get("/paper/boxes").json() == []
    with as_("official") as c:
        assert c.post("/paper/boxes", json=_box()).status_code == 403
        assert c.get("/paper/boxes").status_code == 403
    with as_("supervisor") as c:
        r = c.post("/paper/boxes", json=_box())
        assert r.status_code == 201
        assert r.json()["actor"] == "api:supervisor"
    with as_("auditor") as c:
        assert len(c.get("/paper/boxes").json()) == 1
    with httpx.Client(base_url=hub.api_url) as c:
        assert c.post("/paper/boxes", json=_box()).status_code == 401


def test_cli_records_a_box(
    hub: HubService, api: httpx.Client, desk: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    st = hub.settings
    monkeypatch.setenv("SIPAS_HUB_ENV_FILE", str(tmp_path / "none.env"))
    monkeypatch.setenv("SIPAS_HUB_OFFICE", st.office)
    monkeypatch.setenv("SIPAS_HUB_DATA_DIR", str(st.data_dir))
    args = [
        "paper", "record", "--desk", "quay-1", "--opened", "2026-10-31 16:30",
        "--from", "2026-10-01", "--to", "2026-10-31", "--witness", "Trần Thị Bình",
        "--witness", "Lê Văn Cường", "--seal-broken", "--note", "niêm phong bị rách",
        "--ballots", "10", "--invalid", "1", "--scale", "3",
        "--tally", "1=6", "--tally", "Hộ tịch:2=2", "--tally", "3=1", "--actor", "cli:binh",
    ]  # fmt: skip
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    box_id = int(res.stdout.strip())
    box = api.get(f"/paper/boxes/{box_id}").json()
    assert box["actor"] == "cli:binh" and box["valid_ballots"] == 9 and box["seal_broken"]
    assert [a["detail"]["box_id"] for a in api.get("/alerts").json()] == [box_id]
    # a sum that does not add up: exit 1 and the reason
    res = CliRunner().invoke(cli, [*args[:-8], "--tally", "1=5", "--tally", "3=1"])
    assert res.exit_code == 1 and "add up to 6" in res.stderr
    res = CliRunner().invoke(cli, ["paper", "list"])
    assert res.exit_code == 0 and "BROKEN" in res.stdout
