"""Battery mode with a button that stays down (stuck, or leaned on), under CPython and real
MicroPython: the terminal still goes to sleep after battery_awake_max_s, and because the board then
leaves that button out of the ext1 wake-up (tests/unit/test_review_hal.py), it comes back by timer
within battery_retry_s to arm it again, not after the 6-hour heartbeat timer. A timer wake with the
button still down stores nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.scripts import run_cpython

pytestmark = pytest.mark.unit

SCENARIO = """
import json
from app import config
from app.app import App
from app.power import Power

class Board:
    def __init__(self):
        self.rtc = 5000000
        self.t = 0
        self.mem = b""
        self.wake = ("other", [])
        self.sleeps = []
        self.stuck = True
    def ticks_ms(self): return self.t
    def ticks_diff(self, a, b): return a - b
    def ticks_add(self, a, b): return a + b
    def sleep_ms(self, ms): self.advance(ms)
    def advance(self, ms): self.t += ms; self.rtc += ms
    def time(self): return 1795000000 + self.rtc // 1000
    def set_time(self, t): pass
    def network_up(self): return True
    def feed_watchdog(self): pass
    def feedback(self, kind, level): pass
    def read_presses(self): return []
    def stats(self): return {}
    def wake_reason(self): return self.wake[0]
    def wake_buttons(self): return list(self.wake[1])
    def buttons_held(self): return self.stuck
    def rtc_ms(self): return self.rtc
    def rtc_memory(self, data=None):
        if data is not None: self.mem = data
        return self.mem
    def deep_sleep(self, timer_ms=None): self.sleeps.append(timer_ms)

class Client:
    def __init__(self, *a, **kw):
        self.connected = False
        self.on_message = None
    def set_last_will(self, *a, **kw): pass
    def connect(self, clean_session=True): self.connected = True
    def subscribe(self, t, q=1): pass
    def publish(self, t, m, qos=0, retain=False): return 1
    def poll(self, ms=0): pass
    def close(self): self.connected = False
    def disconnect(self): self.connected = False

cfg = config.validate({"terminal_id": "t-0123456789ab", "office": "office-test", "epoch": 1,
                       "hub_key": "11" * 32, "district_key": "22" * 32, "broker_host": "hub",
                       "mqtt_password": "pw", "outbox_dir": "ob", "power_mode": "battery",
                       "reason_s": 0, "battery_awake_max_s": 20, "battery_beat_s": 21600,
                       "battery_retry_s": 900})
board = Board()
out = []

def boot():
    app = App(cfg, board, client_factory=Client)
    pm = Power(cfg, board)
    pressed = pm.start(app)
    while not pm.step(app):
        app.step(20)
        board.advance(1)
    out.append({"pressed": pressed, "awake_ms": board.t, "timer": board.sleeps[-1],
                "depth": app.outbox.depth(), "last_seq": app.outbox.last_seq})

boot()                                   # power-on with the button already stuck down
board.rtc += board.sleeps[-1]; board.t = 0; board.wake = ("timer", [])
boot()                                   # the timer wake: still stuck, nothing stored
board.stuck = False
board.rtc += board.sleeps[-1]; board.t = 0; board.wake = ("timer", [])
boot()                                   # released: back to the heartbeat timer
print(json.dumps(out))
"""


def check(w: list[dict]) -> None:
    for x in w[:2]:
        # awake for battery_awake_max_s waiting for the release, then asleep anyway, and back
        # within battery_retry_s (not after the 6-hour heartbeat timer)
        assert 20000 <= x["awake_ms"] < 20100
        assert x["timer"] <= 900 * 1000
        assert x["pressed"] == [] and x["last_seq"] == 0  # a held button is not a new press
    assert w[2]["awake_ms"] < 1000 and w[2]["timer"] > 900 * 1000


def test_stuck_button_sleeps_and_retries_under_cpython(tmp_path: Path) -> None:
    check(json.loads(run_cpython(SCENARIO, tmp_path).strip().splitlines()[-1]))


@pytest.mark.integration
def test_stuck_button_sleeps_and_retries_under_micropython(micropython) -> None:  # type: ignore[no-untyped-def]
    check(json.loads(micropython.run(SCENARIO).strip().splitlines()[-1]))
