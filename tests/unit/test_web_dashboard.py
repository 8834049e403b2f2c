"""The dashboard's files without a browser: both dictionaries carry every string the pages use, the
hub serves the files without a token (and nothing outside them), and the data needs one."""

from __future__ import annotations

import asyncio
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import SQLModel, create_engine

from hub import office as ofc
from hub import reports
from hub.alerts import LEVEL_LABELS, REASON_LABELS, REASON_LABELS_EN, RULES
from hub.api.app import create_app
from hub.api.auth import ROLES
from hub.district.api_reports import WEB as DISTRICT_WEB
from hub.web import SHARED, STATIC

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DICTS = {lang: json.loads((STATIC / f"i18n.{lang}.json").read_text()) for lang in ("vi", "en")}
# the hub's pages and what they share with the district's (hub/web/shared, served at /shared/)
SOURCES = sorted(STATIC.glob("*.js")) + sorted(STATIC.glob("*.html")) + sorted(SHARED.glob("*.js"))
LINK_STATUSES = ("linked", "case_already_rated", "late", "no_case", "not_linked")


def test_both_languages_have_every_key_and_the_same_placeholders() -> None:
    vi, en = DICTS["vi"], DICTS["en"]
    assert sorted(set(vi) - set(en)) == [], "keys missing in English"
    assert sorted(set(en) - set(vi)) == [], "keys missing in Vietnamese"
    for key in vi:
        assert vi[key].strip() and en[key].strip(), f"{key} is empty"
        holes = (set(re.findall(r"\{(\w+)\}", vi[key])), set(re.findall(r"\{(\w+)\}", en[key])))
        assert holes[0] == holes[1], f"{key}: placeholders differ {holes}"


def test_every_key_the_pages_use_is_in_the_dictionaries() -> None:
    namespaces = {k.split(".")[0] for k in DICTS["vi"]}
    alternatives = "|".join(namespaces)
    literal = re.compile(r"[\"'`]((?:" + alternatives + r")\.[a-z0-9_.]*[a-z0-9_])[\"'`]")
    used: set[str] = set()
    for src in SOURCES:
        used |= set(literal.findall(src.read_text()))
    assert len(used) > 120  # the regular expression does find them
    assert sorted(used - set(DICTS["vi"])) == []


def test_both_dashboards_have_every_key_the_shared_scripts_use() -> None:
    used = set()
    for src in SHARED.glob("*.js"):
        used |= set(re.findall(r"data-i18n=\"([\w.]+)\"", src.read_text()))
    assert {"lang.label", "login.logout"} <= used
    for folder in (STATIC, DISTRICT_WEB):
        for lang in ("vi", "en"):
            words = json.loads((folder / f"i18n.{lang}.json").read_text())
            assert sorted(used - set(words)) == [], f"{folder}/i18n.{lang}.json"
            assert sorted(k for k in words if k.startswith("role.")) != []  # showWho's role


def test_keys_built_at_run_time_cover_what_the_hub_sends() -> None:
    vi, en = DICTS["vi"], DICTS["en"]
    for scale, labels in LEVEL_LABELS.items():  # the same words as the alerts and exports
        for level, label in labels.items():
            assert vi[f"level.{scale}.{level}"] == label
            assert f"level.{scale}.{level}" in en
    for n, label in REASON_LABELS.items():
        assert (vi[f"reason.{n}"], en[f"reason.{n}"]) == (label, REASON_LABELS_EN[n])
    wanted = (
        [f"role.{r}" for r in ROLES]
        + [f"alerts.rule.{r}" for r in RULES]
        + [
            f"exclusion.{r}"
            for r in {*ofc.AUTO_REASONS, *ofc.MANUAL_REASONS, *reports.REASON_LABELS}
        ]
        + [f"link.{s}" for s in LINK_STATUSES]
        + [f"weekday.{d}" for d in range(7)]
        + [f"channel.{c}" for c in ("terminal", "qr", "paper")]
        + [f"stream.{s}" for s in ("connecting", "live", "offline", "auth", "role", "missing")]
        + [
            f"nav.{p}"
            for p in re.findall(r'data-page="(\w+)"', (STATIC / "index.html").read_text())
        ]
    )
    assert sorted(k for k in wanted if k not in vi) == []


def test_every_module_the_pages_import_is_shipped() -> None:
    district = sorted(DISTRICT_WEB.glob("*.js")) + sorted(DISTRICT_WEB.glob("*.html"))
    for src in [*SOURCES, *district]:
        for name in re.findall(r"from \"\./([\w.]+)\"", src.read_text()):
            assert (src.parent / name).is_file(), f"{src.name} imports {name}, which is missing"
        for name in re.findall(r"\"/static/([\w.]+)\"", src.read_text()):
            assert (src.parent / name).is_file(), f"{src.name} refers to /static/{name}"
        for name in re.findall(r"\"/shared/([\w.]+)\"", src.read_text()):
            assert (SHARED / name).is_file(), f"{src.name} imports /shared/{name}, which is missing"
    # both dashboards load the shared scripts (one copy of the token, errors, languages, header)
    for app in (STATIC / "app.js", DISTRICT_WEB / "app.js"):
        assert '"/shared/shell.js"' in app.read_text(), app
    # pyproject ships static/* and shared/* (no sub-folders, which those patterns would miss)
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "hub.web" in data["packages"]
    assert data["package-data"]["hub.web"] == ["static/*", "shared/*"]
    assert not [p for d in (STATIC, SHARED) for p in d.iterdir() if p.is_dir()]
    # no address outside the hub: the dashboards work on a LAN with no internet
    for src in [*SOURCES, *district, STATIC / "app.css", DISTRICT_WEB / "app.css"]:
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", src.read_text()), src.name


class Client:
    """The app in process, through httpx's ASGI transport (no server, no port)."""

    def __init__(self) -> None:
        engine = create_engine("sqlite://")
        SQLModel.metadata.create_all(engine)
        self.app = create_app(engine, token="t" * 32, office="ubnd-phuong-1")

    def get(self, path: str, **kw: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://hub") as c:
                return await c.get(path, **kw)

        return asyncio.run(go())


@pytest.fixture
def client() -> Client:
    return Client()


def test_the_hub_serves_the_pages_without_a_token_and_nothing_else(client: Client) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert '<html lang="vi">' in r.text
    r = client.get("/static/app.js")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert client.get("/static/i18n.en.json").json()["nav.live"] == "Live"
    for bad in ("/static/../__init__.py", "/static/%2e%2e/__init__.py", "/static/nope.js"):
        assert client.get(bad).status_code == 404, bad
    assert client.get("/static/").status_code == 404
    # the scripts shared with the district's dashboard, from the hub itself
    r = client.get("/shared/api.js")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert "sessionStorage" in r.text
    for bad in ("/shared/../__init__.py", "/shared/%2e%2e/static/app.js", "/shared/nope.js"):
        assert client.get(bad).status_code == 404, bad


def test_the_data_needs_a_token(client: Client) -> None:
    assert client.get("/api/v1/dashboard/context").status_code == 401
    r = client.get("/api/v1/dashboard/context", headers={"Authorization": "Bearer " + "t" * 32})
    assert r.json() == {"office": "ubnd-phuong-1", "timezone": "Asia/Ho_Chi_Minh"}
