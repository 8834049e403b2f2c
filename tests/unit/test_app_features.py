"""The terminal application: reason step, remote configuration, reboot, boot counter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from provisioning.simulate import HostBoard, firmware_path

firmware_path()
from app import codec, config  # noqa: E402
from app.app import App  # noqa: E402

pytestmark = pytest.mark.unit

DEVICE = {
    "terminal_id": "t-0123456789ab", "office": "office-test", "epoch": 1, "hub_key": "11" * 32,
    "district_key": "22" * 32, "broker_host": "hub", "mqtt_password": "x",
}  # fmt: skip


class FakeClient:
    """The MQTT session at its interface (the socket level is tested in test_mqtt_packets)."""

    def __init__(self, *_a: Any, **_kw: Any) -> None:
        self.connected = False
        self.published: list[tuple[str, bytes | str]] = []

    def set_last_will(self, *_a: Any, **_kw: Any) -> None: ...
    def connect(self, clean_session: bool = True) -> bool:
        self.connected = True
        return False

    def subscribe(self, *_a: Any) -> None: ...
    def publish(self, topic: str, msg: bytes | str, qos: int = 0, retain: bool = False) -> int:
        self.published.append((topic, msg))
        return 1

    def poll(self, _ms: int = 0) -> None: ...
    def close(self) -> None:
        self.connected = False

    def disconnect(self) -> None:
        self.connected = False


class ClockBoard(HostBoard):
    def __init__(self) -> None:
        super().__init__()
        self.ms = 0

    def ticks_ms(self) -> int:
        return self.ms


@pytest.fixture
def make(tmp_path: Path):
    def build(**overrides: Any) -> tuple[App, ClockBoard]:
        cfg = config.validate({**DEVICE, "outbox_dir": str(tmp_path / "ob"), **overrides})
        board = ClockBoard()
        app = App(cfg, board, client_factory=FakeClient, config_path=str(tmp_path / "config.json"))
        return app, board

    return build


def records(app: App) -> list[tuple]:
    return [codec.decode_rating(r) for _, r in app.outbox.pending(0, 100)]


def test_buttons_give_the_reason_right_after_a_negative_rating(make) -> None:
    app, board = make()
    assert app.button(3) == 1  # "Không hài lòng"
    assert [k for k, _ in board.feedbacks] == ["saved_offline", "ask_reason"]
    board.ms += 2_000
    assert app.button(2) == 2  # "thời gian"
    assert board.feedbacks[-1] == ("reason", 2)
    rating, reason = records(app)
    assert (rating[1], rating[5], rating[6]) == (0, 3, 0)
    assert reason[1] & codec.FLAG_FOLLOWUP and (reason[5], reason[6]) == (3, 2)


def test_no_reason_after_the_window_or_after_a_satisfied_rating(make) -> None:
    app, board = make()
    app.button(1)
    assert ("ask_reason", 1) not in board.feedbacks
    board.ms += 20_000
    app.button(3)
    board.ms += 9_000  # past reason_s (8 s): the next press is a new rating
    board.ms += 2_000  # and past the lockout
    app.button(2)
    assert [(r[5], r[6], bool(r[1] & codec.FLAG_FOLLOWUP)) for r in records(app)] == [
        (1, 0, False),
        (3, 0, False),
        (2, 0, False),
    ]


def test_reason_step_can_be_switched_off(make) -> None:
    app, board = make(reason_s=0)
    app.button(3)
    board.ms += 1_000
    app.button(1)
    assert [r[1] & (codec.FLAG_FOLLOWUP | codec.FLAG_REPEAT) for r in records(app)] == [
        0,
        codec.FLAG_REPEAT,
    ]


def test_config_command_validates_saves_atomically_and_applies(make, tmp_path: Path) -> None:
    app, board = make()
    app.step(0)
    client = app.client
    assert isinstance(client, FakeClient)

    def command(cid: str, args: object) -> dict:
        app._on_message(
            app.t_cmd, json.dumps({"v": 1, "id": cid, "cmd": "config", "args": args}).encode()
        )
        return json.loads(client.published[-1][1])

    assert command("c1", {"lockout_s": 30, "reason_s": 5}) == {"v": 1, "id": "c1", "ok": True}
    assert app.cfg["lockout_s"] == 30
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["lockout_s"] == 30 and config.validate(saved)["reason_s"] == 5
    bad = command("c2", {"scale": 7})
    assert bad["ok"] is False and "scale" in bad["error"]
    fixed = command("c3", {"hub_key": "00" * 32})
    assert fixed["ok"] is False and "re-provision" in fixed["error"]
    assert app.cfg["scale"] == 3 and app.hub_key == bytes.fromhex("11" * 32)
    assert not (tmp_path / "config.json.tmp").exists()


def test_reboot_command_replies_first_then_resets(make) -> None:
    app, board = make()
    app.step(0)
    app._on_message(app.t_cmd, b'{"v":1,"id":"r1","cmd":"reboot"}')
    assert json.loads(app.client.published[-1][1]) == {"v": 1, "id": "r1", "ok": True}
    assert board.resets == 0
    app.step(0)
    assert board.resets == 1


def test_boot_counter_survives_restarts(make) -> None:
    first, _ = make()
    second, _ = make()
    assert (first.boots, second.boots) == (1, 2)


def test_presses_get_feedback_while_a_connect_attempt_hangs(tmp_path: Path) -> None:
    import threading
    import time

    from provisioning.simulate import SimTerminal

    term = SimTerminal({**DEVICE, "broker_port": 9}, tmp_path)
    board = term.board
    board.unreachable_s = 1.5  # the hub is switched off: each connect attempt blocks 1.5 s
    stamps: list[float] = []
    board.on_feedback = lambda kind, level: stamps.append(time.monotonic())
    pressed_at: list[float] = []

    def citizen() -> None:
        time.sleep(0.3)
        pressed_at.append(time.monotonic())
        board.queue_press(1)

    t = threading.Thread(target=citizen)
    t.start()
    term.app.step(0)  # blocks in the connect attempt
    t.join()
    assert stamps, "no feedback during the connect attempt"
    assert stamps[0] - pressed_at[0] < 0.2  # 50 ms slices: feedback well inside the attempt
    assert term.depth() == 1


def test_a_wake_from_deep_sleep_is_not_a_boot(tmp_path: Path) -> None:
    # Battery mode wakes on every press: counting those as boots would write flash each time and
    # make the heartbeat's boot count useless for spotting a terminal that keeps crashing.
    cfg = config.validate({**DEVICE, "outbox_dir": str(tmp_path / "ob")})
    boots = []
    for wake in ("other", "button", "timer", "other"):
        board = ClockBoard()
        board._wake = (wake, [])
        app = App(cfg, board, client_factory=FakeClient, config_path=str(tmp_path / "c.json"))
        boots.append(app.boots)
    assert boots == [1, 1, 1, 2]
