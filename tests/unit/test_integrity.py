"""`verify` finds ratings edited, deleted or reordered directly in the hub's SQLite file."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hub import integrity
from hub.db import make_engine
from hub.ingest import Ingestor
from hub.registry import add_terminal
from tests.helpers import rating_topic, record, status

pytestmark = pytest.mark.unit
OFFICE = "office-test"
T0 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


@pytest.fixture
def env(tmp_path: Path):
    path = tmp_path / "hub.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    devs = [add_terminal(engine, office=OFFICE)[1] for _ in range(2)]
    ing = Ingestor(engine, OFFICE)
    for dev in devs:
        ing.process(
            [
                (rating_topic(dev), record(dev, n, level=1 + n % 3, t=T0 + timedelta(minutes=n)))
                for n in range(1, 11)
            ]
        )
        ing.process([(rating_topic(dev, leaf="status"), status(dev, 10))])
    yield engine, path, devs, ing
    engine.dispose()


def sql(path: Path, stmt: str, *args: object) -> None:
    with sqlite3.connect(path) as c:
        c.execute(stmt, args)


def kinds(engine) -> set[str]:
    return {f.kind for f in integrity.verify(engine, OFFICE).findings}


def test_clean_database_verifies(env) -> None:
    engine, *_ = env
    rep = integrity.verify(engine, OFFICE)
    assert rep.ok and rep.ratings == 20 and rep.terminals == 2


def test_edited_level_is_found(env) -> None:
    engine, path, devs, _ = env
    # seq 3 was pressed "Rất hài lòng" (1); make it "Không hài lòng" (3) in the column only
    sql(
        path,
        "UPDATE rating SET level = 3 WHERE terminal_id = ? AND seq = 3",
        devs[0]["terminal_id"],
    )
    rep = integrity.verify(engine, OFFICE)
    assert [(f.kind, f.seqs[0]) for f in rep.findings] == [("modified", 3)]
    assert "differ from the signed record" in rep.findings[0].detail
    assert all(f.terminal_id == devs[0]["terminal_id"] for f in rep.findings)


def test_edited_raw_record_is_found(env) -> None:
    engine, path, devs, _ = env
    sql(
        path,
        "UPDATE rating SET raw = ? WHERE terminal_id = ? AND seq = 5",
        record(devs[0], 5, level=3, t=T0),
        devs[0]["terminal_id"],
    )  # even validly signed, it differs
    assert "chain_broken" in kinds(engine)


def test_edited_official_tag_is_found(env) -> None:
    engine, path, devs, _ = env
    sql(
        path,
        "UPDATE rating SET official_id = 'someone' WHERE seq = 2 AND terminal_id = ?",
        devs[1]["terminal_id"],
    )
    assert kinds(engine) == {"chain_broken"}


def test_deleted_middle_rating_is_found(env) -> None:
    engine, path, devs, _ = env
    sql(path, "DELETE FROM rating WHERE terminal_id = ? AND seq = 4", devs[0]["terminal_id"])
    rep = integrity.verify(engine, OFFICE)
    missing = [f for f in rep.findings if f.kind == "missing"]
    assert [f.seqs for f in missing] == [[4]] and "chain_broken" in kinds(engine)


def test_deleted_last_rating_is_found_through_the_signed_heartbeat(env) -> None:
    engine, path, devs, _ = env
    sql(path, "DELETE FROM rating WHERE terminal_id = ? AND seq = 10", devs[1]["terminal_id"])
    rep = integrity.verify(engine, OFFICE)
    assert [(f.kind, f.seqs) for f in rep.findings] == [("missing", [10])]


def test_ratings_still_in_the_outbox_are_not_missing(env) -> None:
    engine, _, devs, ing = env
    ing.process([(rating_topic(devs[0], leaf="status"), status(devs[0], 14, outbox=4))])
    assert integrity.verify(engine, OFFICE).ok


def test_forged_heartbeat_is_reported(env) -> None:
    engine, _, devs, ing = env
    forged = status(devs[0], 10).replace(b'"last_seq": 10', b'"last_seq": 12')
    ing.process([(rating_topic(devs[0], leaf="status"), forged)])
    assert "bad_heartbeat" in kinds(engine)


def test_quarantined_sequence_numbers_are_not_reported_missing(env) -> None:
    engine, _, devs, ing = env
    bad = bytearray(record(devs[0], 11, t=T0))
    bad[20] ^= 1  # a corrupted hub tag: quarantined, rejected
    ing.process(
        [(rating_topic(devs[0]), bytes(bad)), (rating_topic(devs[0]), record(devs[0], 12, t=T0))]
    )
    assert integrity.verify(engine, OFFICE).ok


def test_reordered_rows_are_found(env) -> None:
    engine, path, devs, _ = env
    tid = devs[0]["terminal_id"]
    with sqlite3.connect(path) as c:
        a = c.execute("SELECT id FROM rating WHERE terminal_id=? AND seq=6", (tid,)).fetchone()[0]
        b = c.execute("SELECT id FROM rating WHERE terminal_id=? AND seq=7", (tid,)).fetchone()[0]
        c.execute("UPDATE rating SET id = -1 WHERE id = ?", (a,))
        c.execute("UPDATE rating SET id = ? WHERE id = ?", (a, b))
        c.execute("UPDATE rating SET id = ? WHERE id = -1", (b,))
    assert "chain_broken" in kinds(engine)


def test_offline_last_will_does_not_hide_a_deleted_last_rating(env) -> None:
    engine, path, devs, ing = env
    ing.process([(rating_topic(devs[1], leaf="status"), b'{"v":1,"state":"offline"}')])
    sql(path, "DELETE FROM rating WHERE terminal_id = ? AND seq = 10", devs[1]["terminal_id"])
    rep = integrity.verify(engine, OFFICE)
    assert [(f.kind, f.seqs) for f in rep.findings] == [("missing", [10])]
