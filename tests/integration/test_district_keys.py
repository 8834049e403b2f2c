"""Terminal district keys (issued at provisioning), roles, and the `sipas-district` command line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from hub.district import auth
from hub.district.api import create_app
from hub.district.cli import app as cli
from tests.fixtures.district import (
    ADMIN_TOKEN,
    Served,
    Term,
    add_office,
    batch,
    settings_for,
)

pytest_plugins = ["tests.fixtures.district_db"]
pytestmark = pytest.mark.integration
OFFICE = "ubnd-phuong-1"
TID = "t-a4cf12345678"


@pytest.fixture
def api(district_engine: Engine, district_db_url: str, tmp_path: Path) -> Iterator[httpx.Client]:
    app = create_app(settings_for(district_db_url, tmp_path), district_engine)
    with Served(app) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_only_a_provisioning_token_gets_a_key_and_only_once(
    api: httpx.Client, district_engine: Engine
) -> None:
    hub_token = add_office(district_engine, OFFICE)
    add_office(district_engine, "xa-khac")
    tokens = {
        role: auth.create_token(district_engine, name=role, role=role, office=office)[1]
        for role, office in (
            ("auditor", None),
            ("viewer", OFFICE),
            ("provisioner", OFFICE),
        )
    }
    other_prov = auth.create_token(
        district_engine, name="p2", role="provisioner", office="xa-khac"
    )[1]
    url = f"/api/v1/terminals/{TID}/key"
    body = {"office": OFFICE, "epoch": 1, "desk": "quay-1"}
    assert api.post(url, json=body).status_code == 401
    assert api.post(url, json=body, headers=_bearer("sipasd_nope")).status_code == 401
    assert api.post(url, json=body, headers=_bearer(hub_token)).status_code == 401  # a hub: never
    for role in ("auditor", "viewer"):
        r = api.post(url, json=body, headers=_bearer(tokens[role]))
        assert r.status_code == 403 and "provisioner" in r.json()["detail"], role
    assert api.post(url, json=body, headers=_bearer(other_prov)).status_code == 403

    r = api.post(url, json=body, headers=_bearer(tokens["provisioner"]))
    assert r.status_code == 201, r.text
    key = r.json()
    assert key["terminal_id"] == TID and key["epoch"] == 1 and len(key["district_key"]) == 64
    assert key["replaced_unused"] is False
    assert api.get("/api/v1/me", headers=_bearer(tokens["provisioner"])).json()["role"] == (
        "provisioner"
    )

    # Asked again before anything signed with it arrived (a provisioning run that failed half-way):
    # a fresh key replaces it.
    again = api.post(url, json=body, headers=_bearer(tokens["provisioner"])).json()
    assert again["replaced_unused"] is True and again["district_key"] != key["district_key"]
    term = Term(TID, bytes.fromhex(again["district_key"]))
    data, headers = batch(OFFICE, "ratings", 0, [term.item(1)])
    sent = api.post("/api/v1/sync/ratings", content=data, headers={**headers, **_bearer(hub_token)})
    assert sent.json()["stored"] == 1
    # Now it is in use: nobody can re-key that epoch, so nobody can make ratings verify under it.
    r = api.post(url, json=body, headers=_bearer(ADMIN_TOKEN))
    assert r.status_code == 409 and "new epoch" in r.json()["detail"]
    # A new epoch gets a new key; the old epoch's ratings still verify with the old key.
    r = api.post(url, json={**body, "epoch": 2}, headers=_bearer(ADMIN_TOKEN))
    assert r.status_code == 201
    assert api.post(url, json=body, headers=_bearer(ADMIN_TOKEN)).status_code == 409  # epochs go up
    data, headers = batch(OFFICE, "ratings", 1, [term.item(1)])
    resent = api.post(
        "/api/v1/sync/ratings", content=data, headers={**headers, **_bearer(hub_token)}
    )
    assert resent.json()["duplicates"] == 1 and resent.json()["rejected"] == []
    # Bad input is said plainly.
    assert (
        api.post("/api/v1/terminals/t-xyz/key", json=body, headers=_bearer(ADMIN_TOKEN)).status_code
        == 422
    )
    r = api.post(url, json={"office": "khong-co", "epoch": 3}, headers=_bearer(ADMIN_TOKEN))
    assert r.status_code == 404 and "office add" in r.json()["detail"]


def test_a_viewer_sees_only_its_office(api: httpx.Client, district_engine: Engine) -> None:
    add_office(district_engine, OFFICE)
    add_office(district_engine, "xa-khac")
    viewer = auth.create_token(district_engine, name="v", role="viewer", office=OFFICE)[1]
    auditor = auth.create_token(district_engine, name="a", role="auditor")[1]
    assert [o["id"] for o in api.get("/api/v1/offices", headers=_bearer(viewer)).json()] == [OFFICE]
    assert [o["office"] for o in api.get("/api/v1/integrity", headers=_bearer(viewer)).json()] == [
        OFFICE
    ]
    r = api.get("/api/v1/integrity", params={"office": "xa-khac"}, headers=_bearer(viewer))
    assert r.status_code == 403
    assert len(api.get("/api/v1/offices", headers=_bearer(auditor)).json()) == 2
    provisioner = auth.create_token(district_engine, name="p", role="provisioner")[1]
    assert api.get("/api/v1/offices", headers=_bearer(provisioner)).status_code == 403
    assert api.get("/api/v1/health").json()["ok"] is True  # the load balancer's check, no token


def test_the_command_line_sets_up_a_district(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SIPAS_DISTRICT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("SIPAS_DISTRICT_DATABASE_URL", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    run = CliRunner()

    r = run.invoke(cli, ["office", "add", "ubnd-phuong-1", "UBND phường 1"])
    assert r.exit_code == 3 and "sipas-district migrate" in r.stderr  # not migrated yet
    r = run.invoke(cli, ["migrate"])
    assert r.exit_code == 0 and "migrated from empty" in r.stderr
    assert "already at revision" in run.invoke(cli, ["migrate"]).stderr
    assert (tmp_path / "data" / "district.sqlite3").exists()
    assert run.invoke(cli, ["office", "add", "ubnd-phuong-1", "UBND phường 1"]).exit_code == 0
    r = run.invoke(cli, ["office", "add", "ubnd-phuong-1", "again"])
    assert r.exit_code == 2 and "exists already" in r.stderr
    assert run.invoke(cli, ["office", "add", "Bad Id", "x"]).exit_code == 2
    r = run.invoke(cli, ["hub", "add", "ubnd-phuong-1"])
    assert r.exit_code == 0 and r.stdout.strip().startswith("sipash_")
    assert r.stdout.strip() not in r.stderr
    assert run.invoke(cli, ["hub", "add", "khong-co"]).exit_code == 2
    r = run.invoke(cli, ["token", "create", "--role", "viewer", "--name", "chi.lan"])
    assert r.exit_code == 2 and "needs --office" in r.stderr
    r = run.invoke(
        cli,
        [
            "token",
            "create",
            "--role",
            "provisioner",
            "--name",
            "ky.thuat",
            "--office",
            "ubnd-phuong-1",
        ],
    )
    assert r.exit_code == 0 and r.stdout.strip().startswith("sipasd_")
    r = run.invoke(cli, ["integrity"])
    assert r.exit_code == 0 and "ubnd-phuong-1" in r.stdout and "ok" in r.stdout
