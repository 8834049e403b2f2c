"""Who may call what, proved on a real hub (its Mosquitto, its SQLite file, simulated terminals).

Every route of the app is found by walking ``app.routes``, so a route another part of the code adds
later is covered without touching this file: it must declare its roles with ``require(...)`` (or be
on the short public list below), admin must reach it, auditors must reach every read and no write,
officials no office write, and each role's calls must get exactly the answer its roles say. Then
the same roles on real data: two officials with real terminal presses, and neither one's token ever
returns the other's ratings, results or duty log.
"""

from __future__ import annotations

import io
import json
import re
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

import fastapi.routing
import httpx
import pytest
from starlette.responses import StreamingResponse
from typer.testing import CliRunner

from hub.api.auth import ADMIN, AUDITOR, OFFICIAL, SUPERVISOR, api_routes, roles_of
from hub.cli import app as cli_app
from hub.service import HubService
from provisioning.simulate import SimTerminal
from tests.fixtures.hub import make_settings, pump

pytestmark = pytest.mark.integration

# Routes that take no token, each with the reason. Anything else without require(...) fails.
PUBLIC = {
    "/api/v1/openapi.json": "the API's own description",
    "/api/v1/docs": "the API's documentation page",
    "/docs/oauth2-redirect": "part of the documentation page",
    "/redoc": "the API's documentation page",
    "/api/v1/firmware/{version}/{path:path}": "terminals download updates (signed files)",
    "/": "the dashboard's page (holds no data; its data comes from the API with a token)",
    "/dashboard": "a redirect to the dashboard's page",
    "/static/{name:path}": "the dashboard's scripts and styles",
    "/shared/{name:path}": "the scripts the dashboard shares with the district's (no data)",
    "/q/{token}": "the citizen's QR page and the rating it posts (the desk's QR token)",
    "/q/static/{name}": "the QR page's script and styles",
}
ADMIN_READS = {"/api/v1/tokens"}  # reads that only administrators need (who holds which token)
NOT_FOR_AUDITORS = {  # reads kept from auditors, with the reason
    "/api/v1/tokens": "who holds which token: administrators only",
    "/api/v1/qr/desks": "a desk's QR address lets anyone rate that desk",
    "/api/v1/qr/desks/{desk_id}/sticker": "a desk's QR address lets anyone rate that desk",
}
ADMIN_AREAS = ("/api/v1/terminals", "/api/v1/firmware", "/api/v1/rollouts", "/api/v1/tokens")
OFFICIAL_WRITES = {
    ("POST", "/api/v1/duty/check-in"),
    ("POST", "/api/v1/duty/check-out"),
    ("POST", "/api/v1/cases"),  # the receipt scan at the desk where they are on duty
}

AN, BINH = "cb-an", "cb-binh"
NAMES = {AN: "Nguyễn Văn An", BINH: "Trần Thị Bình"}


def _public(path: str) -> bool:
    return path in PUBLIC


@dataclass
class World:
    hub: HubService
    tokens: dict[str, str]  # admin, supervisor, auditor, official (AN), official2 (BINH), revoked
    token_ids: dict[str, int]
    cli: Any
    ratings: dict[str, list[int]]  # official -> ids of the ratings pressed at their desk

    def client(self, who: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return httpx.Client(base_url=self.hub.api_url, headers=headers, timeout=20)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("roles")
    hub = HubService(make_settings(tmp / "hub"))
    hub.start()
    terminals: list[SimTerminal] = []
    try:
        with pytest.MonkeyPatch.context() as mp:
            # the CLI works on the running hub's database, as a technician does on the Pi
            mp.setenv("SIPAS_HUB_DATA_DIR", str(hub.settings.data_dir))
            mp.setenv("SIPAS_HUB_OFFICE", hub.settings.office)
            mp.setenv("COLUMNS", "200")
            runner = CliRunner()

            def cli(*args: str, code: int = 0) -> tuple[str, str]:
                res = runner.invoke(cli_app, list(args))
                assert res.exit_code == code, (res.stdout, res.stderr)
                return res.stdout, res.stderr

            boot = {"Authorization": f"Bearer {hub.settings.api_token}"}
            with httpx.Client(base_url=hub.api_url, headers=boot, timeout=20) as api:
                for desk, off in (("quay-1", AN), ("quay-2", BINH)):
                    api.post("/desks", json={"id": desk, "name": desk.upper()}).raise_for_status()
                    api.post("/officials", json={"id": off, "name": NAMES[off]}).raise_for_status()
                    r = api.post("/duty/check-in", json={"desk_id": desk, "official_id": off})
                    r.raise_for_status()
                tokens: dict[str, str] = {}
                ids: dict[str, int] = {}
                for key, args in {
                    ADMIN: ["--role", "admin"],
                    SUPERVISOR: ["--role", "supervisor"],
                    AUDITOR: ["--role", "auditor"],
                    OFFICIAL: ["--role", "official", "--official", AN],
                    "official2": ["--role", "official", "--official", BINH],
                    "revoked": ["--role", "supervisor"],
                }.items():
                    stdout, stderr = cli("tokens", "create", "--name", f"t-{key}", *args)
                    tokens[key] = stdout.strip()
                    ids[key] = int(re.search(r"token (\d+) for", stderr)[1])  # type: ignore[index]
                    assert "Store it now" in stderr
                cli("tokens", "revoke", str(ids["revoked"]))

                # real presses: two at An's desk, one (unhappy) at Binh's
                t1 = SimTerminal(hub.add_terminal(desk="quay-1"), tmp / "t1")
                t2 = SimTerminal(hub.add_terminal(desk="quay-2"), tmp / "t2")
                terminals += [t1, t2]
                pump(terminals, lambda: t1.app.online() and t2.app.online())
                t1.press(1)
                t2.press(3)
                pump(terminals, lambda: t1.depth() == 0 and t2.depth() == 0)
                time.sleep(1.2)  # past the repeat lockout would not matter: repeats are kept too
                t1.press(2)
                pump(terminals, lambda: t1.depth() == 0)
                deadline = time.monotonic() + 10
                while len(api.get("/ratings").json()) < 3 and time.monotonic() < deadline:
                    time.sleep(0.05)
                ratings: dict[str, list[int]] = {AN: [], BINH: []}
                for row in api.get("/ratings").json():
                    ratings[row["official_id"]].append(row["id"])
                assert (len(ratings[AN]), len(ratings[BINH])) == (2, 1)
            yield World(hub, tokens, ids, cli, ratings)
    finally:
        for t in terminals:
            t.stop()
        hub.stop()


def _operations(world: World) -> Iterator[tuple[str, str, Any]]:
    """(method, path, route) of every API operation, as FastAPI runs it."""
    for r in api_routes(world.hub.app):
        for m in sorted(r.methods):
            yield m, r.path, r


# -- every route declares who may call it ----------------------------------------------------------
def test_every_route_declares_its_roles(world: World) -> None:
    undeclared = []
    contexts = getattr(fastapi.routing, "iter_route_contexts", list)
    everything = list(contexts(world.hub.app.routes))  # static mounts and docs pages too
    assert len(api_routes(world.hub.app)) > 40
    for r in everything:
        path = getattr(r, "path", "")
        if roles_of(r) is None and not _public(path):
            undeclared.append(f"{sorted(getattr(r, 'methods', None) or [])} {path}")
    assert not undeclared, (
        "routes without require(...) (hub/api/auth.py); a public one goes on PUBLIC with its "
        f"reason: {undeclared}"
    )


def test_the_roles_follow_the_policy(world: World) -> None:
    """Admin does everything; auditors read everything and write nothing; supervisors do not
    administer terminals, firmware or tokens; officials write only their own duty."""
    problems = []
    for method, path, route in _operations(world):
        roles = roles_of(route)
        if roles is None:
            continue
        read = method in ("GET", "HEAD")
        if ADMIN not in roles:
            problems.append(f"{method} {path}: admin cannot call it")
        if read and path not in NOT_FOR_AUDITORS and AUDITOR not in roles:
            problems.append(f"{method} {path}: auditors cannot read it")
        if not read and AUDITOR in roles:
            problems.append(f"{method} {path}: auditors can write")
        admin_area = path.startswith(ADMIN_AREAS) and (not read or path in ADMIN_READS)
        if admin_area and SUPERVISOR in roles:
            problems.append(f"{method} {path}: supervisors can administer it")
        if not read and OFFICIAL in roles and (method, path) not in OFFICIAL_WRITES:
            problems.append(f"{method} {path}: officials can write it")
    assert not problems, problems


def test_the_openapi_document_lists_each_operations_roles(world: World) -> None:
    with world.client(None) as anon:
        doc = anon.get("/openapi.json").json()
    assert {"type": "http", "scheme": "bearer"} in doc["components"]["securitySchemes"].values()
    for method, path, route in _operations(world):
        if not route.include_in_schema:
            continue
        op = doc["paths"][route.path_format][method.lower()]
        roles = roles_of(route)
        assert op.get("x-roles") == (sorted(roles) if roles else None), (method, path)


# -- each role, on real data -----------------------------------------------------------------------
def test_missing_unknown_and_revoked_tokens_get_a_clear_401(world: World) -> None:
    with world.client(None) as anon:
        r = anon.get("/desks")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert r.json()["detail"].startswith("missing API token: send 'Authorization: Bearer")
        r = anon.get("/desks", headers={"Authorization": "Bearer sipas_not-a-real-token"})
        assert (r.status_code, r.json()["detail"]) == (
            401,
            "unknown API token: ask an administrator for one",
        )
    with world.client("revoked") as gone:
        r = gone.get("/desks")
        assert r.status_code == 401 and "revoked" in r.json()["detail"]


def test_me_says_who_the_token_belongs_to(world: World) -> None:
    for key, role, official in (
        (ADMIN, ADMIN, None),
        (SUPERVISOR, SUPERVISOR, None),
        (AUDITOR, AUDITOR, None),
        (OFFICIAL, OFFICIAL, AN),
    ):
        with world.client(key) as c:
            me = c.get("/me").json()
        assert (me["name"], me["role"], me["official_id"]) == (f"t-{key}", role, official)
        assert me["token_id"] == world.token_ids[key]


def test_supervisor_runs_the_office_but_not_terminals_firmware_or_tokens(world: World) -> None:
    with world.client(SUPERVISOR) as sup:
        r = sup.post("/desks", json={"id": "quay-9", "name": "Quầy 9"})
        assert r.status_code == 201
        assert sup.get("/terminals").status_code == 200
        assert sup.get("/alerts").status_code == 200
        for method, path, body in (
            ("POST", "/terminals", {"desk_id": "quay-9"}),
            ("PUT", "/terminals/t-000000000001/desk?desk_id=quay-9", None),
            ("POST", "/terminals/t-000000000001/retire", {}),
            ("POST", "/rollouts", {"version": "1.0.0", "all": True}),
            ("GET", "/tokens", None),
            ("POST", f"/tokens/{world.token_ids[AUDITOR]}/revoke", None),
        ):
            r = sup.request(method, path, json=body)
            assert r.status_code == 403, (method, path, r.text)
            assert r.json()["detail"] == "role supervisor may not do this; it needs: admin"
    with world.client(ADMIN) as adm:
        audit = adm.get("/audit", params={"entity": "desk", "entity_id": "quay-9"}).json()
        assert [(a["actor"], a["action"]) for a in audit] == [("api:t-supervisor", "create")]


def test_auditor_reads_everything_and_writes_nothing(world: World) -> None:
    with world.client(AUDITOR) as aud:
        assert len(aud.get("/ratings").json()) >= 3
        assert {o["id"] for o in aud.get("/officials").json()} == {AN, BINH}
        assert {e["official_id"] for e in aud.get("/duty").json()} == {AN, BINH}
        assert aud.get("/audit").status_code == 200
        assert aud.get("/integrity").json()["ok"] is True
        for method, path, body in (
            ("POST", "/desks", {"id": "quay-8", "name": "Quầy 8"}),
            ("POST", "/duty/check-out", {"desk_id": "quay-1"}),
            ("POST", "/cases", {"code": "HS-A1", "desk_id": "quay-1"}),
            ("POST", "/ratings/1/exclusions", {"reason": "on_behalf"}),
            ("POST", "/alerts/1/acknowledge", {}),
        ):
            r = aud.request(method, path, json=body)
            assert r.status_code == 403, (method, path, r.text)
            assert r.json()["detail"].startswith("role auditor may not do this")
    with world.client(SUPERVISOR) as sup:
        assert sup.get("/duty/current").json()["quay-1"] == AN  # nothing changed


def test_an_official_sees_only_their_own_ratings_and_duty_log(world: World) -> None:
    with world.client(OFFICIAL) as an:
        rows = an.get("/ratings").json()
        assert [r["id"] for r in rows] == world.ratings[AN]
        log = an.get("/duty").json()
        assert log and {e["official_id"] for e in log} == {AN}
        assert [o["id"] for o in an.get("/officials").json()] == [AN]
        r = an.get("/duty", params={"official_id": BINH})
        assert r.status_code == 403 and "only their own" in r.json()["detail"]
        assert {d["id"] for d in an.get("/desks").json()} >= {"quay-1", "quay-2"}
        for path in ("/duty/current", "/cases", "/audit", "/terminals", "/alerts", "/health"):
            r = an.get(path)
            assert r.status_code == 403, path
            assert r.json()["detail"].startswith("role official may not do this"), path
    with world.client("official2") as binh:
        rows = binh.get("/ratings").json()
        assert [r["id"] for r in rows] == world.ratings[BINH]


def test_no_route_open_to_officials_returns_another_officials_data(world: World) -> None:
    """Every read an official may call, plain and asking for the other official by every
    official-like parameter it has: the other's id and name never appear in the answer (JSON,
    CSV, or inside an XLSX)."""
    checked = []
    for method, path, route in _operations(world):
        roles = roles_of(route)
        if method != "GET" or roles is None or OFFICIAL not in roles or _is_stream(route):
            continue
        for key, other in ((OFFICIAL, BINH), ("official2", AN)):
            # path parameters name the other official and one of their ratings
            theirs = {"official_id": other, "official": other, "rating_id": world.ratings[other][0]}
            url = _fill(route, theirs)
            # plain; asking for the other official; and every choice of every closed parameter
            # (a report by=official lists officials by name)
            asks: list[dict[str, str]] = [{}]
            for q in route.dependant.query_params:
                if "official" in q.alias:
                    asks.append({q.alias: other})
                if get_origin(q.field_info.annotation) is Literal:
                    asks += [{q.alias: v} for v in get_args(q.field_info.annotation)]
            with world.client(key) as c:
                for p in asks:
                    r = c.get(url, params=p)
                    assert r.status_code < 500, (path, p, r.text)
                    text = _text(r)
                    for leak in (other, NAMES[other]):
                        assert leak not in text, f"{path} {p}: {key} sees {leak!r}: {text[:300]}"
        checked.append(path)
    assert {"/api/v1/me", "/api/v1/duty", "/api/v1/officials"} <= set(checked), checked


def test_an_official_checks_only_themselves_in_and_out_and_only_now(world: World) -> None:
    with world.client("official2") as binh, world.client(SUPERVISOR) as sup:
        r = binh.post("/duty/check-in", json={"desk_id": "quay-9", "official_id": AN})
        assert r.status_code == 403 and "only themselves" in r.json()["detail"]
        r = binh.post("/duty/check-in", json={"desk_id": "quay-9", "at": "2026-01-01T08:00:00"})
        assert r.status_code == 403 and "current time" in r.json()["detail"]
        r = binh.post("/duty/check-out", json={"desk_id": "quay-1"})  # An is on duty there
        assert r.status_code == 403 and f"{AN} is on duty" in r.json()["detail"]
        r = binh.post("/duty/check-in", json={"desk_id": "quay-9"})
        assert r.status_code == 201 and r.json()["official_id"] == BINH
        assert sup.get("/duty/current").json()["quay-9"] == BINH
        # on duty, Bình records the hand-backs of that desk, as they happen, as her own
        r = binh.post("/cases", json={"code": "HS-O2", "desk_id": "quay-9", "source": "scanner"})
        assert r.status_code == 201, r.text
        [case] = sup.get("/cases", params={"code": "HS-O2"}).json()
        assert (case["desk_id"], case["official_id"]) == ("quay-9", BINH)
        for body in (
            {"code": "HS-O3", "desk_id": "quay-1"},  # An's desk
            {"code": "HS-O4", "desk_id": "quay-9", "official_id": AN},
            {"code": "HS-O5", "desk_id": "quay-9", "handed_back_at": "2026-01-01T08:00:00"},
        ):
            r = binh.post("/cases", json=body)
            assert r.status_code == 403, (body, r.text)
        r = binh.post("/duty/check-out", json={"desk_id": "quay-9"})
        assert r.status_code == 201 and r.json()["kind"] == "out"
        audit = sup.get("/audit", params={"actor": "api:t-official2"}).json()
        assert [a["action"] for a in audit][:3] == ["check-out", "handed-back", "check-in"]
        for method, path, body in (
            ("POST", "/desks", {"id": "quay-7", "name": "Quầy 7"}),
            ("POST", "/cases", {"code": "HS-O1", "desk_id": "quay-2"}),
            ("POST", "/officials", {"id": "cb-x", "name": "X"}),
        ):
            r = binh.request(method, path, json=body)
            assert r.status_code == 403, (path, r.text)


def test_admin_administers_terminals_and_tokens(world: World) -> None:
    with world.client(ADMIN) as adm:
        r = adm.post("/terminals", json={"desk_id": "quay-9"})
        assert r.status_code == 201 and r.json()["terminal_id"].startswith("t-")
        tokens = adm.get("/tokens").json()
        assert {t["name"] for t in tokens} >= {"t-admin", "t-supervisor", "t-official"}
        text = json.dumps(tokens)
        assert not any(tok in text for tok in world.tokens.values()), "a token was listed"
        assert "token_hash" not in text
        sup = next(t for t in tokens if t["name"] == "t-supervisor")
        assert sup["last_used_at"] is not None and sup["revoked_at"] is None
        # a token revoked through the API stops at once, and the audit log says who did it
        with world.client(ADMIN) as probe:
            extra = world.cli("tokens", "create", "--name", "t-extra", "--role", "auditor")
            token, tid = extra[0].strip(), int(re.search(r"token (\d+)", extra[1])[1])  # type: ignore[index]
            h = {"Authorization": f"Bearer {token}"}
            assert probe.get("/me", headers=h).json()["name"] == "t-extra"
            r = adm.post(f"/tokens/{tid}/revoke")
            assert r.status_code == 200 and r.json()["revoked_at"] is not None
            assert probe.get("/me", headers=h).status_code == 401
        assert adm.post("/tokens/999999/revoke").status_code == 404
        audit = adm.get("/audit", params={"entity": "token", "entity_id": str(tid)}).json()
        assert [(a["action"], a["actor"]) for a in audit] == [
            ("revoke", "api:t-admin"),
            ("create", audit[1]["actor"]),
        ]
        assert audit[1]["actor"].startswith("cli:") and audit[1]["detail"]["role"] == "auditor"


def test_the_token_list_never_shows_a_token(world: World) -> None:
    stdout, _ = world.cli("tokens", "list")
    for key in ("t-admin", "t-official", "t-revoked", AN):
        assert key in stdout
    assert not any(tok in stdout for tok in world.tokens.values())
    assert not any(tok[6:] in stdout for tok in world.tokens.values())
    # the revoked one shows when it was revoked; the others have an empty column
    line = next(x for x in stdout.splitlines() if "t-revoked" in x)
    assert re.search(r"\d\d/\d\d/\d{4} \d\d:\d\d\s*│\s*$", line), line
    _, err = world.cli("tokens", "create", "--name", "x", "--role", "boss", code=2)
    assert "unknown role 'boss'" in err
    _, err = world.cli("tokens", "create", "--name", "x", "--role", "official", code=2)
    assert "--official goes with --role official" in err
    _, err = world.cli(
        "tokens", "create", "--name", "x", "--role", "official", "--official", "nobody", code=1
    )
    assert "no official 'nobody'" in err
    _, err = world.cli("tokens", "revoke", "424242", code=1)
    assert "no token with id 424242" in err


def test_audit_log_filters_and_pages(world: World) -> None:
    with world.client(AUDITOR) as aud:
        everything = aud.get("/audit", params={"limit": 5000}).json()
        assert len(everything) >= 8
        assert [a["id"] for a in everything] == sorted((a["id"] for a in everything), reverse=True)
        pages, before = [], None
        while True:
            params: dict[str, Any] = {"limit": 3}
            if before:
                params["before_id"] = before
            page = aud.get("/audit", params=params).json()
            if not page:
                break
            pages += page
            before = page[-1]["id"]
        assert pages == everything
        duty = aud.get("/audit", params={"entity": "duty"}).json()
        assert duty and {a["entity"] for a in duty} == {"duty"}
        assert aud.get("/audit", params={"since": "2999-01-01T00:00:00"}).json() == []
        r = aud.get("/audit", params={"before_id": 0})
        assert r.status_code == 422 and "before_id" in r.text


# -- every operation, every kind of caller ---------------------------------------------------------
def test_every_operation_answers_each_caller_as_its_roles_say(world: World) -> None:
    """No token, an unknown or revoked one: 401. A role the route does not list: 403 naming the
    roles that may. A role it lists: through the door (whatever the dummy input then gets, never a
    5xx). Write bodies are deliberately of the wrong type, so nothing is changed by this sweep."""
    callers = [None, "unknown", "revoked", ADMIN, SUPERVISOR, AUDITOR, OFFICIAL]
    world.tokens.setdefault("unknown", "sipas_nobody-has-this-token")
    failures: list[str] = []
    count = 0
    clients = {k: world.client(k) for k in callers}
    try:
        for method, path, route in _operations(world):
            roles = roles_of(route)
            if roles is None:
                continue
            url = _fill(route, {})
            body = _wrong_body(route)
            for who in callers:
                count += 1
                with clients[who].stream(method, url, json=body) as r:
                    r.read() if not _is_stream(route) or r.status_code != 200 else None
                    got = r.status_code
                    detail = _detail(r) if got in (401, 403) else ""
                if who in (None, "unknown", "revoked"):
                    ok = got == 401
                elif who in roles:
                    ok = got < 500 and got != 401 and "may not do this" not in detail
                else:
                    ok = got == 403 and detail.startswith(f"role {who} may not do this")
                if not ok:
                    failures.append(f"{who}: {method} {path} -> {got} {detail}")
    finally:
        for c in clients.values():
            c.close()
    assert count > 100
    assert not failures, "\n".join(failures)


# -- helpers ---------------------------------------------------------------------------------------
def _is_stream(route: Any) -> bool:
    rc = route.response_class
    return route.path.endswith("/stream") or (
        isinstance(rc, type) and issubclass(rc, StreamingResponse)
    )


def _fill(route: Any, values: dict[str, Any]) -> str:
    """The route's path with every parameter filled: ids that do not exist unless told."""
    path = route.path.removeprefix("/api/v1")
    for p in route.dependant.path_params:
        dummy = 999999 if p.field_info.annotation is int else "zz-none"
        path = re.sub(r"\{" + p.name + r"(:[a-z]+)?\}", str(values.get(p.name, dummy)), path)
    return path


def _wrong_body(route: Any) -> Any:
    if route.body_field is None:
        return None
    return {} if get_origin(route.body_field.field_info.annotation) is list else []


def _detail(r: httpx.Response) -> str:
    try:
        return str(r.json().get("detail", ""))
    except (ValueError, AttributeError):
        return r.text[:200]


def _text(r: httpx.Response) -> str:
    """What a person would read in the answer: JSON with its escapes undone, CSV, or the sheets of
    an XLSX file."""
    kind = r.headers.get("content-type", "")
    if "spreadsheetml" in kind or r.content[:2] == b"PK":
        with zipfile.ZipFile(io.BytesIO(r.content)) as z:
            return "\n".join(z.read(n).decode("utf-8", "replace") for n in z.namelist())
    if "json" in kind:
        return json.dumps(r.json(), ensure_ascii=False)
    return r.text
