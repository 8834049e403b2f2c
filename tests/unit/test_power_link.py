"""The link layer of the terminal (firmware/app/link.py) on the host board: Wi-Fi re-associated
with exponential back-off and jitter while the access point is gone (no reconnect storm), at once
usable when it is back; NTP retried until it answers; the prompt's breathing LED runs only while a
prompt is active. Time is the test's: the board's tick counter moves only when the test says."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioning.simulate import HostBoard, SimTerminal

pytestmark = pytest.mark.unit

DEVICE = {
    "terminal_id": "t-0123456789ab", "office": "office-test", "epoch": 1, "hub_key": "11" * 32,
    "district_key": "22" * 32, "broker_host": "127.0.0.1", "broker_port": 9, "mqtt_password": "x",
    "wifi_ssid": "office", "wifi_password": "secret",
}  # fmt: skip


class ClockBoard(HostBoard):
    """A host board whose tick counter the test moves."""

    def __init__(self) -> None:
        super().__init__()
        self.ms = 0
        self.wifi_manual = True  # the station comes back only through connect_wifi()

    def ticks_ms(self) -> int:
        return self.ms & (self.TICKS_PERIOD - 1)

    @staticmethod
    def sleep_ms(ms: int) -> None:  # the app's idle wait: time is the test's
        pass


def terminal(tmp_path: Path, **cfg: object) -> tuple[SimTerminal, ClockBoard]:
    term = SimTerminal({**DEVICE, **cfg}, tmp_path)
    board = ClockBoard()
    term.app.board = board
    term.app.link = type(term.app.link)(board, "office", "secret")  # app.link.Link on this board
    return term, board


def run(term: SimTerminal, board: ClockBoard, seconds: float, every_ms: int = 100) -> None:
    for _ in range(int(seconds * 1000 / every_ms)):
        board.ms += every_ms
        term.app.step(0)


def test_wifi_back_off_is_exponential_capped_and_jittered(tmp_path: Path) -> None:
    term, board = terminal(tmp_path)
    board.network = False  # the access point is gone for ten minutes
    run(term, board, 600)
    t = board.wifi_attempts
    gaps = [b - a for a, b in zip(t, t[1:], strict=False)]
    # 4 s (an association takes 1-3 s), doubling to a 60 s cap, each +0-25 % of jitter,
    # rounded up to the test's 100 ms loop turn
    want = [4000, 8000, 16000, 32000] + [60000] * (len(gaps) - 4)
    assert len(t) <= 15, f"reconnect storm: {len(t)} attempts in 10 minutes"
    for g, d in zip(gaps, want, strict=True):
        assert d <= g <= d * 1.25 + 100, (gaps, want)
    assert len({g - d for g, d in zip(gaps, want, strict=True)}) > 1  # jittered, not in lockstep
    # while the station is down the broker is not even tried (and its back-off does not grow)
    assert not any(k == "connect failed" for k, _ in term.app.events)


def test_wifi_recovers_at_the_next_attempt_and_resets_the_back_off(tmp_path: Path) -> None:
    term, board = terminal(tmp_path)
    board.network = False
    run(term, board, 120)
    n = len(board.wifi_attempts)
    board.network = True  # the access point is back
    run(term, board, 80)
    assert len(board.wifi_attempts) == n + 1 and term.app.link.up  # one more attempt: up
    assert any(k == "connect failed" for k, _ in term.app.events)  # the broker is tried at once
    board.network = False  # a new outage starts again from the short delay
    run(term, board, 6)  # the next attempt comes 4-5 s later
    t = board.wifi_attempts
    assert len(t) == n + 3 and 4000 <= t[-1] - t[-2] <= 5100


def test_ntp_is_retried_until_it_answers(tmp_path: Path) -> None:
    term, board = terminal(tmp_path)
    board.clock_known = False
    board.ntp_available = False
    run(term, board, 300)
    tries = board.ntp_tries
    assert 4 <= tries <= 6  # 10 s doubling: at 0, 10, 30, 70, 150 s (+ jitter), not every turn
    assert term.app.board.time() is None
    board.ntp_available = True
    run(term, board, 700)  # the back-off is at most 10 minutes
    assert board.ntp_tries == tries + 1 and board.time() is not None
    run(term, board, 600)
    assert board.ntp_tries == tries + 1  # once set, it is checked again only every 6 hours


def test_prompt_breathes_only_while_prompted(tmp_path: Path) -> None:
    from app import commands

    term, board = terminal(tmp_path)
    run(term, board, 1)
    assert not board.animations  # no prompt: the LEDs stay dark
    commands.handle(term.app, {"id": "c1", "cmd": "prompt", "args": {"window": 5}})
    run(term, board, 2)
    frames = list(board.animations)
    assert len(frames) == 20 and all(k == "prompt" for k, _ in frames)
    phases = [p for _, p in frames]
    assert phases == sorted(phases, reverse=True) and 2900 <= phases[-1] <= 3000  # ms left
    term.button(1)  # the citizen rates: the prompt ends, the LEDs stop breathing
    run(term, board, 1)
    assert list(board.animations)[20:] == [(None, 0)]
    assert term.app.outbox.pending(0, 1)  # and the rating is stored, flagged as prompted
    board.animations.clear()
    commands.handle(term.app, {"id": "c2", "cmd": "prompt", "args": {"window": 1}})
    run(term, board, 3)  # nobody presses: it ends with the window
    frames = list(board.animations)
    assert frames[-1] == (None, 0) and len([f for f in frames if f[0] == "prompt"]) == 9
