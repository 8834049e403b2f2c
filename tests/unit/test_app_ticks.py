"""The terminal's timers under MicroPython's wrapping tick counter (2**30 ms, 12.4 days)."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioning.simulate import HostBoard, SimTerminal

pytestmark = pytest.mark.unit
DAY = 86_400_000

DEVICE = {
    "terminal_id": "t-0123456789ab", "office": "office-test", "epoch": 1, "hub_key": "11" * 32,
    "district_key": "22" * 32, "broker_host": "127.0.0.1", "broker_port": 9, "mqtt_password": "x",
}  # fmt: skip


class ClockBoard(HostBoard):
    """A host board whose clock the test moves."""

    def __init__(self) -> None:
        super().__init__()
        self.ms = 0
        self.network = False  # stay offline: only the timers matter here

    def ticks_ms(self) -> int:
        return self.ms & (self.TICKS_PERIOD - 1)


def test_host_board_has_micropython_tick_arithmetic() -> None:
    b = HostBoard
    assert b.ticks_diff(5, (1 << 30) - 5) == 10  # across the wrap
    assert b.ticks_diff(1 << 29, 0) == -(1 << 29)  # half a period on: looks negative
    assert b.ticks_add((1 << 30) - 1, 2) == 1


@pytest.mark.parametrize("idle_days", [1, 7, 10, 13])
def test_a_press_days_later_is_never_a_repeat(tmp_path: Path, idle_days: int) -> None:
    term = SimTerminal(DEVICE, tmp_path)
    board = ClockBoard()
    term.app.board = board
    assert term.press(1) == 1
    board.ms += 3_000
    term.press(2)  # within the 10 s lockout: a repeat
    assert term.board is not board and term.app.board.feedbacks[-1][0] == "repeat"
    board.ms += idle_days * DAY
    term.press(3)
    assert board.feedbacks[-1][0] != "repeat"
    board.ms += 1_000
    term.app.step(0)  # the main loop runs between presses and forgets old stamps
    board.ms += idle_days * DAY
    term.app.step(0)
    term.press(1)
    assert board.feedbacks[-1][0] != "repeat"
