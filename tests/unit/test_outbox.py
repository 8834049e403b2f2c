"""The terminal's flash outbox (firmware/app/outbox.py) on CPython; the same scenarios run under
MicroPython in tests/integration/test_firmware_micropython.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from provisioning.simulate import firmware_path

firmware_path()
from app import codec  # noqa: E402
from app.outbox import SEG_RECORDS, SLOT, Outbox, OutboxFull  # noqa: E402

pytestmark = pytest.mark.unit
TID = "t-0123456789ab"
KEY = bytes(32)


def rec(seq: int, epoch: int = 1, level: int = 1) -> bytes:
    return codec.encode_rating(TID, KEY, KEY, 0, epoch, seq, 1795000000 + seq, level, 0, 3)


def fill(ob: Outbox, n: int) -> list[int]:
    seqs = []
    for _ in range(n):
        seq = ob.next_seq()
        ob.append(rec(seq))
        seqs.append(seq)
    return seqs


def test_ratings_stay_until_acknowledged(tmp_path: Path) -> None:
    ob = Outbox(str(tmp_path / "ob"), 1)
    assert fill(ob, 3) == [1, 2, 3]
    assert [s for s, _ in ob.pending(0, 10)] == [1, 2, 3]
    assert ob.ack(1, [2]) == 1
    assert ob.depth() == 2
    assert [s for s, _ in ob.pending(0, 10)] == [1, 3]
    assert ob.ack(1, [1, 3]) == 2
    assert ob.depth() == 0 and ob.pending(0, 10) == []


def test_pending_returns_exact_records_in_order_with_limit(tmp_path: Path) -> None:
    ob = Outbox(str(tmp_path / "ob"), 1)
    fill(ob, 200)
    got = ob.pending(after=100, limit=8)
    assert [s for s, _ in got] == list(range(101, 109))
    assert got[0][1] == rec(101)


def test_sequence_survives_restart_even_when_everything_was_acked(tmp_path: Path) -> None:
    root = str(tmp_path / "ob")
    ob = Outbox(root, 1)
    fill(ob, 5)
    ob.ack(1, [1, 2, 3, 4, 5])
    assert [n for n in os.listdir(root) if n.endswith(".seg")] == []  # flash tidied
    ob2 = Outbox(root, 1)
    assert ob2.next_seq() == 6 and ob2.depth() == 0


def test_unacknowledged_ratings_survive_restart(tmp_path: Path) -> None:
    root = str(tmp_path / "ob")
    ob = Outbox(root, 1)
    fill(ob, 100)
    ob.ack(1, list(range(1, 41)))
    ob2 = Outbox(root, 1)
    assert ob2.next_seq() == 101
    pend = [s for s, _ in ob2.pending(0, 1000)]
    # Acks past the last saved watermark may be re-sent after a restart (the hub re-acks them);
    # nothing unacknowledged may be missing.
    assert set(range(41, 101)) <= set(pend)
    assert pend == sorted(pend)


def test_torn_tail_is_cut_and_earlier_records_kept(tmp_path: Path) -> None:
    root = tmp_path / "ob"
    ob = Outbox(str(root), 1)
    fill(ob, 3)
    seg = root / sorted(n for n in os.listdir(root) if n.endswith(".seg"))[-1]
    with open(seg, "ab") as f:
        f.write(rec(4)[:20])  # power cut in the middle of the 4th append
    ob2 = Outbox(str(root), 1)
    assert [s for s, _ in ob2.pending(0, 10)] == [1, 2, 3]
    assert ob2.next_seq() == 4  # seq 4 was never confirmed nor published
    assert seg.stat().st_size == 3 * SLOT


def test_corrupt_record_is_skipped_and_counted(tmp_path: Path) -> None:
    root = tmp_path / "ob"
    ob = Outbox(str(root), 1)
    fill(ob, SEG_RECORDS + 5)
    first = root / sorted(n for n in os.listdir(root) if n.endswith(".seg"))[0]
    data = bytearray(first.read_bytes())
    data[SLOT * 2 + 12] ^= 0xFF  # flip a byte of record 3
    first.write_bytes(bytes(data))
    ob2 = Outbox(str(root), 1)
    pend = [s for s, _ in ob2.pending(0, 1000)]
    assert 3 not in pend and len(pend) == SEG_RECORDS + 4
    assert ob2.corrupt == 1 and ob2.depth() == SEG_RECORDS + 4
    ob2.pending(0, 1000)
    assert ob2.corrupt == 1  # counted once, at open
    # Everything deliverable is acknowledged: the damaged slot must not pin the outbox.
    ob2.ack(1, pend)
    assert ob2.depth() == 0 and ob2.watermark == SEG_RECORDS + 5
    assert [n for n in os.listdir(root) if n.endswith(".seg")] == []
    assert Outbox(str(root), 1).next_seq() == SEG_RECORDS + 6


def test_damaged_slot_in_newest_segment_keeps_the_records_after_it(tmp_path: Path) -> None:
    root = tmp_path / "ob"
    ob = Outbox(str(root), 1)
    fill(ob, 5)
    seg = root / sorted(n for n in os.listdir(root) if n.endswith(".seg"))[-1]
    data = bytearray(seg.read_bytes())
    data[SLOT * 1 + 20] ^= 0x01  # record 2 damaged
    seg.write_bytes(bytes(data))
    ob2 = Outbox(str(root), 1)
    assert [s for s, _ in ob2.pending(0, 10)] == [1, 3, 4, 5]
    assert ob2.next_seq() == 6  # no sequence number that reached flash is handed out again


def test_full_outbox_refuses_new_presses_and_keeps_stored_ones(tmp_path: Path) -> None:
    ob = Outbox(str(tmp_path / "ob"), 1, capacity=5)
    fill(ob, 5)
    with pytest.raises(OutboxFull):
        ob.append(rec(6))
    assert ob.depth() == 5 and ob.next_seq() == 6
    ob.ack(1, [1])
    ob.append(rec(6))
    assert [s for s, _ in ob.pending(0, 10)] == [2, 3, 4, 5, 6]


def test_out_of_sequence_append_is_refused(tmp_path: Path) -> None:
    ob = Outbox(str(tmp_path / "ob"), 1)
    fill(ob, 2)
    with pytest.raises(ValueError):
        ob.append(rec(2))


def test_ack_for_another_epoch_or_unknown_seq_changes_nothing(tmp_path: Path) -> None:
    ob = Outbox(str(tmp_path / "ob"), 2)
    ob.append(rec(1, epoch=2))
    assert ob.ack(1, [1]) == 0
    assert ob.ack(2, [7, 0, -1]) == 0
    assert ob.depth() == 1


def test_segments_deleted_as_they_are_acknowledged(tmp_path: Path) -> None:
    root = tmp_path / "ob"
    ob = Outbox(str(root), 1)
    fill(ob, SEG_RECORDS * 3)
    assert len([n for n in os.listdir(root) if n.endswith(".seg")]) == 3
    ob.ack(1, list(range(1, SEG_RECORDS + 1)))
    assert len([n for n in os.listdir(root) if n.endswith(".seg")]) == 2


def test_ten_thousand_ratings_fit_in_one_megabyte(tmp_path: Path) -> None:
    root = tmp_path / "ob"
    ob = Outbox(str(root), 1)
    fill(ob, 10_000)
    segs = [root / n for n in os.listdir(root) if n.endswith(".seg")]
    # littlefs stores file data in 4 KB blocks: a 78-record segment (4056 bytes) is one block.
    blocks = sum(-(-p.stat().st_size // 4096) for p in segs)
    assert blocks * 4096 <= 1024 * 1024 * 0.6
    assert all(p.stat().st_size <= 4096 for p in segs)
    assert Outbox(str(root), 1).depth() == 10_000


@pytest.mark.parametrize("before", [0, SEG_RECORDS], ids=["outbox drained", "segment full"])
def test_power_cut_between_creating_a_segment_and_its_first_slot(
    tmp_path: Path, before: int
) -> None:
    # The append that starts a segment creates the file first (littlefs commits the creation at
    # open); a power cut before the first whole slot leaves it empty. Its seq was never used.
    root = tmp_path / "ob"
    ob = Outbox(str(root), 1)
    fill(ob, 5)
    ob.ack(1, [1, 2, 3, 4, 5])  # drained: no segment left
    fill(ob, before)
    nxt = ob.next_seq()
    (root / f"00001_{nxt:010d}.seg").write_bytes(b"")
    ob2 = Outbox(str(root), 1)
    assert ob2.next_seq() == nxt and ob2.depth() == before
    fill(ob2, 3)
    ob3 = Outbox(str(root), 1)
    assert ob3.next_seq() == nxt + 3  # not nxt + 2: that seq is in flash already
    assert [s for s, _ in ob3.pending(0, 1000)] == list(range(6, nxt + 3))
    ob3.ack(1, list(range(6, nxt + 3)))
    assert ob3.depth() == 0  # no phantom seq pins the watermark


class _FlashFull:
    """A file whose write stores half the data and then fails, as on a full flash."""

    def __init__(self, path: str, mode: str) -> None:
        self.f = open(path, mode)  # noqa: SIM115

    def write(self, data: bytes) -> int:
        self.f.write(data[: len(data) // 2])
        raise OSError(28, "ENOSPC")

    def __enter__(self) -> _FlashFull:
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()


@pytest.mark.parametrize("before", [3, SEG_RECORDS], ids=["mid-segment", "new segment"])
def test_failed_append_leaves_no_partial_slot_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, before: int
) -> None:
    from app import outbox as outbox_module

    root = str(tmp_path / "ob")
    ob = Outbox(root, 1)
    fill(ob, before)
    monkeypatch.setattr(outbox_module, "open", _FlashFull, raising=False)
    with pytest.raises(OutboxFull):
        ob.append(rec(before + 1))
    monkeypatch.undo()
    fill(ob, 2)  # the flash has room again: the next appends must line up with their slots
    assert [s for s, _ in ob.pending(0, 1000)] == list(range(1, before + 3))
    sizes = [os.stat(root + "/" + n).st_size for n in os.listdir(root) if n.endswith(".seg")]
    assert all(0 < n <= SEG_RECORDS * SLOT and n % SLOT == 0 for n in sizes), sizes
    ob2 = Outbox(root, 1)
    assert ob2.corrupt == 0 and ob2.next_seq() == before + 3
    assert [r for _, r in ob2.pending(0, 1000)] == [rec(s) for s in range(1, before + 3)]
