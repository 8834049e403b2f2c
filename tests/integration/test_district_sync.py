"""The district server receiving hubs' batches (docs/sync.md), on a SQLite file and on a real
PostgreSQL database: idempotency, the checks that catch a dishonest hub, and what stays untouched
when a batch is refused."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from typer.testing import CliRunner

from hub.district import receive
from hub.district.api import create_app
from hub.district.cli import app as cli
from hub.district.db import make_engine, migrate
from hub.district.models import (
    TABLES,
    CaseFile,
    Correction,
    Desk,
    DutyEvent,
    Exclusion,
    Finding,
    Heartbeat,
    PaperTally,
    Rating,
    SuspectedDeletion,
    SyncBatch,
    TerminalKey,
)
from tests.fixtures.district import (
    ADMIN_TOKEN,
    Served,
    Term,
    add_office,
    batch,
    new_terminal,
    settings_for,
)

pytest_plugins = ["tests.fixtures.district_db"]  # pg_url, district_db_url, district_engine

pytestmark = pytest.mark.integration
OFFICE = "ubnd-phuong-1"


@pytest.fixture
def client(district_engine: Engine, district_db_url: str, tmp_path: Path) -> Iterator[httpx.Client]:
    app = create_app(settings_for(district_db_url, tmp_path), district_engine)
    with Served(app) as server, httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.fixture
def hub_token(district_engine: Engine) -> str:
    return add_office(district_engine, OFFICE)


def _send(
    client: httpx.Client,
    token: str,
    stream: str,
    start: int,
    items: list[Any],
    office: str = OFFICE,
) -> Any:
    body, headers = batch(office, stream, start, items)
    return client.post(
        f"/api/v1/sync/{stream}",
        content=body,
        headers={**headers, "Authorization": f"Bearer {token}"},
    )


def _count(engine: Engine, model: Any) -> int:
    with Session(engine) as s:
        return int(s.exec(select(func.count()).select_from(model)).one())


def _admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def test_migrations_produce_exactly_the_models_schema(district_engine: Engine) -> None:
    with district_engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), TABLES
        )
    assert diff == []
    assert set(inspect(district_engine).get_table_names()) == set(TABLES.tables) | {
        "alembic_version"
    }
    migrate(district_engine)  # again: nothing to do, no error


def test_the_same_batch_twice_changes_nothing_and_answers_the_same(
    client: httpx.Client, district_engine: Engine, hub_token: str
) -> None:
    t = new_terminal(district_engine, OFFICE)
    items = [t.item(seq, level=1 + seq % 3) for seq in range(1, 6)]
    first = _send(client, hub_token, "ratings", 0, items)
    assert first.status_code == 200, first.text
    assert first.json() == {"stored": 5, "duplicates": 0, "rejected": [], "to": 5}
    again = _send(client, hub_token, "ratings", 0, items)
    assert again.status_code == 200 and again.json() == first.json()
    assert _count(district_engine, Rating) == 5 and _count(district_engine, SyncBatch) == 1
    # The same ratings in another batch (the hub lost its watermark): duplicates, not new rows.
    other = _send(client, hub_token, "ratings", 5, items)
    assert other.json() == {"stored": 0, "duplicates": 5, "rejected": [], "to": 10}
    # The same key with another body: refused, nothing stored.
    changed = _send(client, hub_token, "ratings", 0, [*items[:4], t.item(6)])
    assert changed.status_code == 409 and "another body" in changed.json()["detail"]
    assert _count(district_engine, Rating) == 5
    with Session(district_engine) as s:
        r = s.exec(select(Rating).where(Rating.seq == 2)).one()
    assert (r.level, r.verified, r.official_id, r.case_code) == (
        3,
        True,
        "nguyen.van.an",
        "HS-0002",
    )
    assert bytes(r.raw) == t.record(2, 3)


def test_a_dishonest_hub_is_caught_and_reported_per_office(
    client: httpx.Client, district_engine: Engine, hub_token: str, tmp_path: Path, monkeypatch
) -> None:
    """The terminal made ratings 1-5 (4 is the citizen's "Không hài lòng") and signed last_seq 5.
    The hub alters 3's level, drops 4, and invents a 6th; another office's hub is honest."""
    t = new_terminal(district_engine, OFFICE)
    honest_token = add_office(district_engine, "xa-an-binh", "UBND xã An Bình")
    h = new_terminal(district_engine, "xa-an-binh")

    altered = bytearray(t.record(3, level=3))
    altered[12] = 1  # "Rất hài lòng" instead of "Không hài lòng"; the tags stay the terminal's
    forged = bytearray(t.record(6, level=1))
    forged[32:48] = bytes(16)  # the hub cannot make the district tag
    items = [
        t.item(1, 1),
        t.item(2, 2),
        t.item(3, raw=bytes(altered).hex()),
        t.item(5, 2),
        t.item(6, raw=bytes(forged).hex()),
    ]
    res = _send(client, hub_token, "ratings", 0, items).json()
    assert res["stored"] == 3 and res["duplicates"] == 0
    assert [r["index"] for r in res["rejected"]] == [2, 4]
    assert all("district tag does not verify" in r["reason"] for r in res["rejected"])

    bad_beat = {**t.heartbeat(2), "last_seq": 2, "dtag": t.heartbeat(9)["dtag"]}
    res = _send(client, hub_token, "heartbeats", 0, [t.heartbeat(5), bad_beat]).json()
    assert res["stored"] == 1 and [r["index"] for r in res["rejected"]] == [1]

    assert (
        _send(client, honest_token, "ratings", 0, [h.item(1), h.item(2)], "xa-an-binh").json()[
            "stored"
        ]
        == 2
    )
    assert (
        _send(client, honest_token, "heartbeats", 0, [h.heartbeat(2)], "xa-an-binh").json()[
            "stored"
        ]
        == 1
    )

    report = {o["office"]: o for o in client.get("/api/v1/integrity", headers=_admin()).json()}
    bad = report[OFFICE]
    assert not bad["ok"] and report["xa-an-binh"]["ok"]
    assert sorted((f["kind"], f["seq"]) for f in bad["forged"]) == [
        ("forged_heartbeat", None),
        ("forged_rating", 3),
        ("forged_rating", 6),
    ]
    [gap] = bad["suspected_deletions"]
    assert (gap["terminal_id"], gap["seq_from"], gap["seq_to"], gap["missing"]) == (
        t.terminal_id,
        3,
        4,
        2,
    )
    assert gap["below_signed_last_seq"] == 5
    with Session(district_engine) as s:
        f = s.exec(select(Finding).where(Finding.seq == 3)).one()
    assert bytes(f.raw or b"") == bytes(altered)  # kept byte for byte for the auditor

    offices = {o["id"]: o for o in client.get("/api/v1/offices", headers=_admin()).json()}
    assert (offices[OFFICE]["forged"], offices[OFFICE]["suspected_deletions"]) == (3, 1)
    assert offices["xa-an-binh"]["ratings"] == 2

    # The same through the command line (exit 1: something was found).
    monkeypatch.setenv(
        "SIPAS_DISTRICT_DATABASE_URL", str(district_engine.url.render_as_string(False))
    )
    monkeypatch.setenv("COLUMNS", "200")
    res_cli = CliRunner().invoke(cli, ["integrity", "--office", OFFICE, "--json"])
    assert res_cli.exit_code == 1, res_cli.output
    [row] = json.loads(res_cli.stdout)
    assert row["suspected_deletions"][0]["seq_from"] == 3
    assert CliRunner().invoke(cli, ["integrity", "--office", "xa-an-binh"]).exit_code == 0


def test_a_gap_closes_when_the_late_ratings_arrive(
    client: httpx.Client, district_engine: Engine, hub_token: str
) -> None:
    t = new_terminal(district_engine, OFFICE)
    _send(client, hub_token, "ratings", 0, [t.item(1)])
    _send(client, hub_token, "heartbeats", 0, [t.heartbeat(4)])
    with Session(district_engine) as s:
        [gap] = s.exec(select(SuspectedDeletion)).all()
    assert (gap.seq_from, gap.seq_to, gap.resolved_at) == (2, 4, None)
    _send(client, hub_token, "ratings", 1, [t.item(2), t.item(4)])  # 3 is still missing
    report = client.get("/api/v1/integrity", params={"office": OFFICE}, headers=_admin()).json()
    assert [(g["seq_from"], g["seq_to"]) for g in report[0]["suspected_deletions"]] == [(3, 3)]
    _send(client, hub_token, "ratings", 3, [t.item(3)])
    report = client.get("/api/v1/integrity", params={"office": OFFICE}, headers=_admin()).json()
    assert report[0]["ok"] is True
    with Session(district_engine) as s:  # the history of what was missing stays
        assert all(g.resolved_at is not None for g in s.exec(select(SuspectedDeletion)).all())


def test_a_truncated_or_malformed_batch_stores_nothing(
    client: httpx.Client, district_engine: Engine, hub_token: str
) -> None:
    t = new_terminal(district_engine, OFFICE)
    body, headers = batch(OFFICE, "ratings", 0, [t.item(1), t.item(2)])
    auth = {**headers, "Authorization": f"Bearer {hub_token}"}
    for cut in (len(body) - 4, len(body) // 2, 10):  # lost trailer, half a batch, a header only
        r = client.post("/api/v1/sync/ratings", content=body[:cut], headers=auth)
        assert r.status_code == 400, r.text
        assert "gzip" in r.json()["detail"]
    r = client.post("/api/v1/sync/ratings", content=body + b"junk", headers=auth)
    assert r.status_code == 400
    wrong_key = {**auth, "Idempotency-Key": f"{OFFICE}:ratings:0-9"}
    assert client.post("/api/v1/sync/ratings", content=body, headers=wrong_key).status_code == 422
    not_json = gzip.compress(b"{not json")
    assert client.post("/api/v1/sync/ratings", content=not_json, headers=auth).status_code == 400
    assert client.post("/api/v1/sync/nothing", content=body, headers=auth).status_code == 404
    bad_case = _send(client, hub_token, "cases", 0, [{"id": 1, "code": "HS-1"}])  # no time
    assert bad_case.status_code == 422 and "handed_back_at" in bad_case.json()["detail"]
    for model in (Rating, SyncBatch, Finding, CaseFile):
        assert _count(district_engine, model) == 0
    # The hub's token decides the office: another office's batch is 403, a bad token 401.
    add_office(district_engine, "xa-khac")
    assert _send(client, hub_token, "ratings", 0, [t.item(1)], office="xa-khac").status_code == 403
    assert _send(client, "sipash_wrong", "ratings", 0, [t.item(1)]).status_code == 401
    assert _count(district_engine, Rating) == 0
    assert _send(client, hub_token, "ratings", 0, [t.item(1), t.item(2)]).json()["stored"] == 2


def test_the_hubs_other_streams_are_stored_once(
    client: httpx.Client, district_engine: Engine, hub_token: str
) -> None:
    t = new_terminal(district_engine, OFFICE)
    when = "2026-06-01T02:00:00Z"
    streams: dict[str, list[Any]] = {
        "cases": [
            {
                "id": 7,
                "code": "HS-0001",
                "desk_id": "quay-1",
                "procedure": "Đăng ký khai sinh",
                "field": "Hộ tịch",
                "official_id": "nguyen.van.an",
                "handed_back_at": when,
                "source": "api",
            }
        ],
        "duty": [
            {
                "id": 3,
                "desk_id": "quay-1",
                "official_id": "nguyen.van.an",
                "kind": "in",
                "at": when,
                "actor": "api:admin",
            }
        ],
        "exclusions": [
            {
                "id": 1,
                "rating": [t.terminal_id, 1, 1],
                "reason": "on_behalf",
                "note": None,
                "actor": "api:sup",
                "created_at": when,
                "reverses": None,
            },
            {
                "id": 2,
                "rating": [t.terminal_id, 1, 1],
                "reason": "on_behalf",
                "note": None,
                "actor": "api:sup",
                "created_at": when,
                "reverses": 1,
            },
        ],
        "corrections": [
            {
                "id": 1,
                "rating": [t.terminal_id, 1, 1],
                "official_id": "tran.thi.binh",
                "reason": "quên check-out",
                "actor": "api:sup",
                "created_at": when,
                "reverses": None,
            }
        ],
        "directory": [
            {
                "desks": [{"id": "quay-1", "name": "Quầy 1 - Hộ tịch", "requires_case": True}],
                "officials": [{"id": "nguyen.van.an", "name": "Nguyễn Văn An", "active": True}],
                "terminals": [{"id": t.terminal_id, "desk": "quay-1", "epoch": 1, "active": True}],
            }
        ],
        "paper": [
            {
                "id": 1,
                "desk_id": None,
                "opened_at": when,
                "period_start": when,
                "period_end": when,
                "witnesses": "A\nB",
                "seal_intact": True,
                "ballots": 12,
                "invalid_ballots": 1,
                "tallies": [
                    {"scale": 3, "level": 1, "count": 8},
                    {"scale": 3, "level": 3, "count": 3},
                ],
            }
        ],
    }
    for stream, items in streams.items():
        first = _send(client, hub_token, stream, 0, items)
        assert first.status_code == 200, (stream, first.text)
        assert first.json()["stored"] == len(items), stream
        if stream == "directory":  # each position is a new version of the directory
            continue
        # Resent under a new key (a hub that lost its watermark): stored once all the same.
        again = _send(client, hub_token, stream, 100, items)
        assert again.json()["stored"] == 0 and again.json()["duplicates"] == len(items), stream
    counts = {
        m.__name__: _count(district_engine, m)
        for m in (CaseFile, DutyEvent, Exclusion, Correction, Desk, PaperTally)
    }
    assert counts == {
        "CaseFile": 1,
        "DutyEvent": 1,
        "Exclusion": 2,
        "Correction": 1,
        "Desk": 1,
        "PaperTally": 2,
    }
    with Session(district_engine) as s:
        row = s.get(TerminalKey, (t.terminal_id, 1))
        assert row is not None and row.desk == "quay-1"
        assert s.exec(select(Exclusion.reverses).where(Exclusion.hub_id == 2)).one() == 1


def test_qr_ratings_are_kept_as_attested_by_the_hub(
    client: httpx.Client, district_engine: Engine, hub_token: str
) -> None:
    qr = Term("qr-quay-1", bytes(32))
    raw = bytearray(qr.record(1, level=2))
    raw[32:48] = bytes(16)
    item = qr.item(1, raw=bytes(raw).hex(), channel="qr")
    res = _send(client, hub_token, "ratings", 0, [item]).json()
    assert res["stored"] == 1
    # A terminal's rating passed off as a QR one to skip the check is refused.
    t = new_terminal(district_engine, OFFICE)
    res = _send(client, hub_token, "ratings", 1, [t.item(1, channel="qr")]).json()
    assert res["stored"] == 0 and "QR" in res["rejected"][0]["reason"]
    with Session(district_engine) as s:
        assert s.exec(select(Rating.verified)).all() == [False]


def test_heartbeats_of_unknown_terminals_are_refused(
    client: httpx.Client, district_engine: Engine, hub_token: str
) -> None:
    stranger = Term("t-00000000dead", b"k" * 32)
    res = _send(client, hub_token, "heartbeats", 0, [stranger.heartbeat(3)]).json()
    assert res["stored"] == 0 and "no key" in res["rejected"][0]["reason"]
    res = _send(client, hub_token, "ratings", 0, [stranger.item(1)]).json()
    assert res["stored"] == 0 and "unknown terminal" in res["rejected"][0]["reason"]
    assert _count(district_engine, Heartbeat) == 0


def test_concurrent_identical_batches_store_once_on_postgresql(pg_url: str) -> None:
    """Two API processes receive the same batch at the same moment (a hub retry racing its own
    timed-out request): one stores it, the other answers the same, nothing twice."""
    engines = [make_engine(pg_url), make_engine(pg_url)]  # separate pools, as two processes
    migrate(engines[0])
    try:
        add_office(engines[0], OFFICE)
        t = new_terminal(engines[0], OFFICE)
        for round_ in range(3):
            start = round_ * 500
            items = [t.item(seq) for seq in range(start + 1, start + 501)]
            data = json.dumps(
                {
                    "v": 1,
                    "office": OFFICE,
                    "stream": "ratings",
                    "from": start,
                    "to": start + 500,
                    "items": items,
                }
            ).encode()
            b = receive.parse(
                data,
                stream="ratings",
                key=f"{OFFICE}:ratings:{start}-{start + 500}",
                office=OFFICE,
            )
            go = threading.Barrier(2)
            answers: list[tuple[int, dict[str, Any]]] = []

            def run(
                engine: Engine,
                b: receive.Batch = b,
                go: threading.Barrier = go,
                answers: list[tuple[int, dict[str, Any]]] = answers,
            ) -> None:
                go.wait()
                answers.append(receive.receive(engine, b))

            threads = [threading.Thread(target=run, args=(e,)) for e in engines]
            for th in threads:
                th.start()
            for th in threads:
                th.join(60)
            assert len(answers) == 2 and answers[0] == answers[1]
            assert answers[0] == (
                200,
                {"stored": 500, "duplicates": 0, "rejected": [], "to": start + 500},
            )
            assert _count(engines[0], Rating) == start + 500
    finally:
        for e in engines:
            e.dispose()
