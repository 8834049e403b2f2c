"""The fixed boot code's update states (firmware/ota_boot.py) on a real directory, with a power cut
after every single filesystem operation of the swap, the rollback and the confirmation.

A power cut is modelled at ota_boot's seam with the filesystem: its ``os`` and ``open`` are wrapped
so that the N-th mutating operation (rename, remove, rmdir, mkdir, creating a file, writing it) does
not happen; a write that is cut leaves half its bytes. Each operation is atomic on littlefs, as here.
After the cut the terminal boots again (normally) and must run one complete version: never a mix of
two, never none, and the version to fall back to must never be lost.

The application's half (firmware/app/ota.py through App) is here too: a new version confirms itself
with its first heartbeat over a live connection, 5 minutes up clears the safe-mode counter, and safe
mode keeps ratings while turning the extras off.
"""

from __future__ import annotations

import builtins
import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

from provisioning.simulate import HostBoard, firmware_path

firmware_path()
import ota_boot  # noqa: E402
from app import config  # noqa: E402
from app.app import FW_VERSION, App  # noqa: E402

pytestmark = pytest.mark.unit

FILES = ("__init__.py", "app.py", "codec.py", "outbox.py", "start.py")


class PowerCut(Exception):
    pass


class Flash:
    """ota_boot's view of the flash, losing power before mutating operation number ``budget``."""

    def __init__(self, budget: int | None, on_cut: Any = None) -> None:
        self.budget = budget
        self.ops = 0
        self.on_cut = on_cut

    def _op(self) -> None:
        if self.budget is not None and self.ops >= self.budget:
            if self.on_cut:
                self.on_cut()
            raise PowerCut
        self.ops += 1

    def rename(self, a: str, b: str) -> None:
        self._op()
        os.rename(a, b)

    def remove(self, p: str) -> None:
        self._op()
        os.remove(p)

    def rmdir(self, p: str) -> None:
        self._op()
        os.rmdir(p)

    def mkdir(self, p: str) -> None:
        self._op()
        os.mkdir(p)

    stat = staticmethod(os.stat)
    listdir = staticmethod(os.listdir)

    def open(self, path: str, mode: str = "r") -> Any:
        if "w" not in mode and "a" not in mode:
            return builtins.open(path, mode)
        self._op()  # the file is created (empty) ...
        return _TornFile(builtins.open(path, mode), self)


class _TornFile:
    def __init__(self, f: Any, flash: Flash) -> None:
        self.f, self.flash = f, flash

    def write(self, data: str) -> int:
        try:
            self.flash._op()  # ... then its contents reach the flash
        except PowerCut:
            self.f.write(data[: len(data) // 2])
            self.f.close()
            raise
        return int(self.f.write(data))

    def __enter__(self) -> _TornFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()


@pytest.fixture
def cut(monkeypatch: pytest.MonkeyPatch):
    """cut(budget, fn, *args): run fn with the power failing before mutating op `budget`; returns
    (completed, ops done)."""

    def run(budget: int | None, fn: Any, *args: Any, on_cut: Any = None) -> tuple[bool, int]:
        flash = Flash(budget, on_cut)
        monkeypatch.setattr(ota_boot, "os", flash)
        monkeypatch.setattr(ota_boot, "open", flash.open, raising=False)
        try:
            fn(*args)
            return True, flash.ops
        except PowerCut:
            return False, flash.ops
        finally:
            monkeypatch.setattr(ota_boot, "os", os)
            monkeypatch.delattr(ota_boot, "open")

    return run


def write_app(d: Path, version: str) -> None:
    d.mkdir()
    for name in FILES:
        (d / name).write_text(f"# {name} of {version}\n" + ("x = 1\n" * 50))


def version_of(d: Path) -> str | None:
    """The version a directory holds completely, "mixed/partial", or None if it is missing."""
    if not d.is_dir():
        return None
    names = sorted(p.name for p in d.iterdir())
    versions = {p.read_text().split()[3] for p in d.iterdir()}
    if (
        names != sorted(FILES)
        or len(versions) != 1
        or any(p.stat().st_size < 300 for p in d.iterdir())
    ):
        return "mixed/partial"
    return versions.pop()


def layout(root: Path) -> dict[str, str | None]:
    return {n: version_of(root / n) for n in ("app", "app.new", "app.old", "app.bad")}


def state(root: Path) -> dict[str, Any]:
    return json.loads((root / "ota.json").read_text())


def staged(root: Path) -> None:
    write_app(root / "app", "v1")
    write_app(root / "app.new", "v2")
    write_app(root / "app.old", "v0")  # from an earlier update that never confirmed its clean-up
    (root / "ota.json").write_text('{"state": "staged", "version": "v2", "from": "v1"}')


def on_trial(root: Path, tries: int) -> None:
    write_app(root / "app", "v2")
    write_app(root / "app.old", "v1")
    st = {"state": "trial", "version": "v2", "from": "v1", "tries": tries}
    (root / "ota.json").write_text(json.dumps(st))


def complete_somewhere(root: Path, version: str) -> bool:
    return version in layout(root).values()


# -- the states, one boot at a time ---------------------------------------------------------
def test_no_update_boots_count_towards_safe_mode_until_healthy(tmp_path: Path) -> None:
    write_app(tmp_path / "app", "v1")
    seen = [ota_boot.boot(str(tmp_path)) for _ in range(4)]
    assert [b["safe_mode"] for b in seen] == [
        False,
        False,
        False,
        True,
    ]  # 3 failed boots, then safe
    assert [b["bootfail"] for b in seen] == [1, 2, 3, 4]
    assert all(b["state"] is None and not b["trial"] for b in seen)
    assert ota_boot.status(str(tmp_path))["safe_mode"] is True  # what the application reads
    ota_boot.healthy(str(tmp_path))  # it connected (or ran 5 minutes)
    assert ota_boot.boot(str(tmp_path))["safe_mode"] is False
    assert ota_boot.status(str(tmp_path))["safe_mode"] is False
    assert layout(tmp_path)["app"] == "v1"


def test_staged_update_is_swapped_in_and_tried_three_times_then_rolled_back(tmp_path: Path) -> None:
    staged(tmp_path)
    (tmp_path / "bootfail").write_text("2")
    b = ota_boot.boot(str(tmp_path))
    assert b["trial"] and b["tries"] == 1 and b["safe_mode"] is False
    assert layout(tmp_path) == {"app": "v2", "app.new": None, "app.old": "v1", "app.bad": None}
    assert state(tmp_path) == {"state": "trial", "version": "v2", "from": "v1", "tries": 1}
    assert ota_boot.in_trial(str(tmp_path))
    assert [ota_boot.boot(str(tmp_path))["tries"] for _ in range(2)] == [2, 3]
    b = ota_boot.boot(str(tmp_path))  # the 4th boot: three tries never confirmed
    assert not b["trial"] and b["state"] == "rolled_back" and b["safe_mode"] is False
    assert layout(tmp_path) == {"app": "v1", "app.new": None, "app.old": None, "app.bad": None}
    assert state(tmp_path) == {"state": "rolled_back", "version": "v2", "from": "v1"}
    assert ota_boot.boot(str(tmp_path))["state"] == "rolled_back"  # reported until the next update


def test_a_confirmed_trial_keeps_the_new_version_and_drops_the_old(tmp_path: Path) -> None:
    on_trial(tmp_path, 1)
    assert ota_boot.confirm(str(tmp_path), "v2") is True
    assert state(tmp_path) == {"state": "ok", "version": "v2"}
    assert layout(tmp_path) == {"app": "v2", "app.new": None, "app.old": None, "app.bad": None}
    assert ota_boot.confirm(str(tmp_path), "v2") is False  # only a trial is confirmed
    b = ota_boot.boot(str(tmp_path))
    assert b["state"] == "ok" and not b["trial"] and b["bootfail"] == 1


def test_trial_boots_do_not_count_towards_safe_mode(tmp_path: Path) -> None:
    on_trial(tmp_path, 0)
    (tmp_path / "bootfail").write_text("7")
    b = ota_boot.boot(str(tmp_path))
    assert b["trial"] and not b["safe_mode"]
    assert ota_boot.status(str(tmp_path))["safe_mode"] is False


@pytest.mark.parametrize(
    ("setup", "expect_app", "expect_state"),
    [
        # the staged files vanished before the swap: nothing to swap, the old version stays
        ("staged_without_files", "v1", "rolled_back"),
        # a torn or unreadable state file: treated as no update
        ("garbage_state", "v1", None),
        # the application directory is missing but the old version is there: it comes back
        ("only_old", "v1", "ok"),
        # leftovers of a download cut short, a confirmation cut short, a finished rollback
        ("leftovers", "v1", "ok"),
    ],
)
def test_odd_states_end_with_one_complete_version(
    tmp_path: Path, setup: str, expect_app: str, expect_state: str | None
) -> None:
    if setup == "staged_without_files":
        write_app(tmp_path / "app", "v1")
        (tmp_path / "ota.json").write_text('{"state": "staged", "version": "v2", "from": "v1"}')
    elif setup == "garbage_state":
        write_app(tmp_path / "app", "v1")
        (tmp_path / "ota.json").write_text('{"state": "tri')
    elif setup == "only_old":
        write_app(tmp_path / "app.old", "v1")
        (tmp_path / "ota.json").write_text('{"state": "ok", "version": "v1"}')
    else:
        write_app(tmp_path / "app", "v1")
        for name in ("app.new", "app.old", "app.bad"):
            write_app(tmp_path / name, "v9")
            (tmp_path / name / "app.py").unlink()
        (tmp_path / "ota.json").write_text('{"state": "ok", "version": "v1"}')
        (tmp_path / "ota.json.tmp").write_text('{"sta')
    b = ota_boot.boot(str(tmp_path))
    assert b["state"] == expect_state and not b["trial"]
    assert layout(tmp_path) == {
        "app": expect_app,
        "app.new": None,
        "app.old": None,
        "app.bad": None,
    }
    assert not (tmp_path / "ota.json.tmp").exists()


# -- power cuts after every filesystem operation --------------------------------------------
def sweep(
    tmp_path: Path, prepare: Any, action: Any, check_cut: Any, check_after: Any, cut: Any
) -> int:
    """Cut the power before operation 0, 1, 2, ... of ``action`` until it completes; after each
    cut, boot normally and check. Returns the number of operations of the uncut action."""
    for budget in range(500):
        root = tmp_path / f"cut{budget}"
        root.mkdir()
        prepare(root)
        completed, ops = cut(budget, action, str(root), on_cut=lambda r=root: check_cut(r))
        if completed:
            return ops
        ota_boot.boot(str(root))  # the power is back
        check_after(root, budget)
    raise AssertionError("the action never completed")


def test_power_cut_anywhere_in_the_swap(tmp_path: Path, cut: Any) -> None:
    def check_cut(root: Path) -> None:
        # at the very moment of the cut: both versions still complete somewhere
        assert complete_somewhere(root, "v1") and complete_somewhere(root, "v2"), layout(root)

    def check_after(root: Path, budget: int) -> None:
        where = f"power cut before operation {budget}"
        assert layout(root) == {"app": "v2", "app.new": None, "app.old": "v1", "app.bad": None}, (
            where
        )
        # the cut boot never started the application: it is not counted as a try
        assert state(root) == {"state": "trial", "version": "v2", "from": "v1", "tries": 1}, where

    ops = sweep(tmp_path, staged, ota_boot.boot, check_cut, check_after, cut)
    assert ops >= 14  # the stale app.old's files and dir, two renames, bootfail and state writes


def test_power_cut_anywhere_in_the_rollback(tmp_path: Path, cut: Any) -> None:
    def check_cut(root: Path) -> None:
        assert complete_somewhere(root, "v1"), layout(root)

    def check_after(root: Path, budget: int) -> None:
        where = f"power cut before operation {budget}"
        assert layout(root) == {"app": "v1", "app.new": None, "app.old": None, "app.bad": None}, (
            where
        )
        assert state(root) == {"state": "rolled_back", "version": "v2", "from": "v1"}, where
        assert ota_boot.status(str(root))["safe_mode"] is False, where

    ops = sweep(tmp_path, lambda r: on_trial(r, 3), ota_boot.boot, check_cut, check_after, cut)
    assert ops >= 12  # two renames, bootfail and state writes, the new version's files and dir


def test_power_cut_anywhere_in_the_confirmation(tmp_path: Path, cut: Any) -> None:
    def check_after(root: Path, budget: int) -> None:
        where = f"power cut before operation {budget}"
        st = state(root)
        if st["state"] == "ok":  # confirmed: the old version is cleaned up at boot
            assert layout(root) == {"app": "v2", "app.new": None, "app.old": None, "app.bad": None}
        else:  # not yet: still on trial, the fallback intact
            assert st["state"] == "trial" and st["tries"] == 2, where
            assert layout(root) == {"app": "v2", "app.new": None, "app.old": "v1", "app.bad": None}

    ops = sweep(
        tmp_path,
        lambda r: on_trial(r, 1),
        lambda r: ota_boot.confirm(r, "v2"),
        lambda r: complete_somewhere(r, "v2"),
        check_after,
        cut,
    )
    assert ops >= 8


def test_random_power_cuts_through_a_whole_failed_update(tmp_path: Path, cut: Any) -> None:
    # Staged, then boots that never confirm, the power failing at random moments of any boot, some
    # boots cut twice in a row: the terminal always ends on the old version, rolled back.
    rng = random.Random(20240612)
    for trial in range(40):
        root = tmp_path / f"run{trial}"
        root.mkdir()
        staged(root)
        for _ in range(40):
            if rng.random() < 0.5:
                cut(rng.randint(0, 20), ota_boot.boot, str(root))
            else:
                ota_boot.boot(str(root))
            lay = layout(root)
            assert complete_somewhere(root, "v1"), (trial, lay)
            if (root / "ota.json").exists() and state(root)["state"] == "rolled_back":
                break
        ota_boot.boot(str(root))
        assert state(root)["state"] == "rolled_back", trial
        assert layout(root) == {"app": "v1", "app.new": None, "app.old": None, "app.bad": None}


# -- the application's half: confirmation, health, safe mode ------------------------------
DEVICE = {
    "terminal_id": "t-0123456789ab", "office": "office-test", "epoch": 1, "hub_key": "11" * 32,
    "district_key": "22" * 32, "broker_host": "hub", "mqtt_password": "x", "heartbeat_min_s": 0,
}  # fmt: skip


class Client:
    def __init__(self, *_a: Any, **_kw: Any) -> None:
        self.connected = False
        self.published: list[tuple[str, Any]] = []

    def set_last_will(self, *_a: Any, **_kw: Any) -> None: ...
    def connect(self, clean_session: bool = True) -> bool:
        self.connected = True
        return False

    def subscribe(self, *_a: Any) -> None: ...
    def publish(self, topic: str, msg: Any, qos: int = 0, retain: bool = False) -> int:
        self.published.append((topic, msg))
        return 1

    def poll(self, _ms: int = 0) -> None: ...
    def close(self) -> None:
        self.connected = False

    disconnect = close


class ClockBoard(HostBoard):
    def __init__(self) -> None:
        super().__init__()
        self.ms = 0

    def ticks_ms(self) -> int:
        return self.ms


def make_app(root: Path, safe_mode: bool = False, **cfg: Any) -> App:
    c = config.validate({**DEVICE, "outbox_dir": str(root / "outbox"), **cfg})
    return App(c, ClockBoard(), client_factory=Client, root=str(root), safe_mode=safe_mode)


def beats(app: App) -> list[dict[str, Any]]:
    assert app.client is not None
    return [json.loads(m) for t, m in app.client.published if t == app.t_status]


def test_the_first_heartbeat_of_a_new_version_confirms_it(tmp_path: Path) -> None:
    on_trial(tmp_path, 1)
    app = make_app(tmp_path)
    assert app.ota == "trial"
    app.step(0)  # connects and publishes a heartbeat: the new version works
    assert beats(app)[0]["ota"] == "trial" and beats(app)[0]["fw"] == FW_VERSION
    assert state(tmp_path) == {"state": "ok", "version": FW_VERSION}
    assert layout(tmp_path) == {"app": "v2", "app.new": None, "app.old": None, "app.bad": None}
    assert (tmp_path / "bootfail").read_text() == "0"
    app.step(0)  # and says so at once (heartbeat_min_s permitting)
    assert beats(app)[-1]["ota"] == "ok" and "safe_mode" not in beats(app)[-1]


def test_no_confirmation_without_the_broker_but_five_minutes_up_is_healthy(tmp_path: Path) -> None:
    on_trial(tmp_path, 1)
    (tmp_path / "bootfail").write_text("2")
    app = make_app(tmp_path)
    app.board.network = False
    app.step(0)
    board = app.board
    assert isinstance(board, ClockBoard)
    board.ms += 299_000
    app.step(0)
    assert (tmp_path / "bootfail").read_text() == "2" and not app.healthy
    board.ms += 1_000
    app.step(0)
    assert (tmp_path / "bootfail").read_text() == "0" and app.healthy
    assert state(tmp_path)["state"] == "trial"  # the trial timer still rolls it back if it must


def test_safe_mode_keeps_ratings_and_turns_off_the_extras(tmp_path: Path) -> None:
    write_app(tmp_path / "app", "v1")
    app = make_app(tmp_path, safe_mode=True)
    assert app.button(3) == 1  # a negative rating: stored, but no reason asked
    assert [k for k, _ in app.board.feedbacks] == ["saved_offline"]
    assert app.button(1) == 2  # so the next press is a rating of its own
    app.step(0)
    assert beats(app)[0]["safe_mode"] is True and "ota" not in beats(app)[0]
    app._on_message(app.t_cmd, b'{"v":1,"id":"p1","cmd":"prompt"}')
    app._on_message(app.t_cmd, b'{"v":1,"id":"i1","cmd":"identify"}')
    assert app.client is not None
    replies = [json.loads(m) for t, m in app.client.published if t == app.t_reply]
    assert replies == [
        {"v": 1, "id": "p1", "ok": False, "error": "safe mode: prompts are off"},
        {"v": 1, "id": "i1", "ok": True},
    ]
    assert app.prompt_until is None
