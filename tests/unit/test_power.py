"""Battery mode's policy (firmware/app/power.py) under CPython and under real MicroPython (wasm):
what survives a deep sleep, the lockout across sleeps, when the terminal goes back to sleep.

The same scenario runs on both interpreters. The board is a double (no ESP32 here): its tick
counter restarts at every wake while its RTC keeps counting, as on the device; the MQTT session is
a double whose "hub" acknowledges every rating it receives, unless the hub is unreachable."""

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
from app.power import Power, State

class Board:
    def __init__(self):
        self.rtc = 1000000  # RTC ms: counts through deep sleep
        self.t = 0  # ticks: restart at every wake
        self.mem = b""
        self.wake = ("other", [])
        self.sleeps = []
        self.fb = []
        self.net = True
    def ticks_ms(self): return self.t
    def ticks_diff(self, a, b): return a - b
    def ticks_add(self, a, b): return a + b
    def sleep_ms(self, ms): self.advance(ms)
    def advance(self, ms): self.t += ms; self.rtc += ms
    def time(self): return 1795000000 + self.rtc // 1000
    def set_time(self, t): pass
    def network_up(self): return self.net
    def open_socket(self, *a): raise OSError("unused")
    def feed_watchdog(self): pass
    def feedback(self, kind, level): self.fb.append(kind)
    def stats(self): return {"rssi": -60, "mem_free": 0, "vsupply": 4.1, "power": "battery"}
    def wake_reason(self): return self.wake[0]
    def wake_buttons(self): return list(self.wake[1])
    def rtc_ms(self): return self.rtc
    def rtc_memory(self, data=None):
        if data is not None: self.mem = data
        return self.mem
    def deep_sleep(self, timer_ms=None): self.sleeps.append(timer_ms)
    def sleep_for(self, ms, wake):  # time passes in deep sleep, then a wake
        self.rtc += ms; self.t = 0; self.wake = wake

class Client:  # the MQTT session; the hub acks each rating on the next poll
    reachable = True
    def __init__(self, *a, **kw):
        self.connected = False
        self.published = []
        self.todo = []
        self.on_message = None
    def set_last_will(self, *a, **kw): pass
    def connect(self, clean_session=True):
        if not Client.reachable: raise OSError("connect timed out")
        self.connected = True
    def subscribe(self, t, q=1): pass
    def publish(self, t, m, qos=0, retain=False):
        self.published.append(t.split("/")[-1])
        if t.endswith("/rating"): self.todo.append(int.from_bytes(m[4:8], "little"))
        return 1
    def poll(self, ms=0):
        todo, self.todo = self.todo, []
        if todo:
            self.on_message(APP.t_ack, json.dumps({"v": 1, "epoch": 1, "seqs": todo, "status": "stored"}))
    def close(self): self.connected = False
    def disconnect(self): self.connected = False

cfg = config.validate({"terminal_id": "t-0123456789ab", "office": "office-test", "epoch": 1,
                       "hub_key": "11" * 32, "district_key": "22" * 32, "broker_host": "hub",
                       "mqtt_password": "pw", "outbox_dir": "ob", "power_mode": "battery",
                       "lockout_s": 10, "reason_s": 0, "battery_awake_max_s": 20,
                       "battery_beat_wakes": 3, "battery_beat_s": 3600, "battery_retry_s": 600})
board = Board()
APP = None
out = []

def boot():
    # main.py on a wake: the application is built again; the power policy restores what survived
    global APP
    board.fb = []
    APP = App(cfg, board, client_factory=Client)
    pm = Power(cfg, board)
    pressed = pm.start(APP)
    fb_at_ms = board.t  # the wake's press has its feedback before anything touches the network
    turns = 0
    while not pm.step(APP):
        APP.step(20)
        board.advance(1)
        turns += 1
        assert turns < 5000
    out.append({"wake": pm.wake, "pressed": pressed, "fb": board.fb, "awake_ms": board.t,
                "fb_at_ms": fb_at_ms, "depth": APP.outbox.depth(), "timer": board.sleeps[-1],
                "wakes": pm.state.wakes})

PUBLISHED = []
_orig = Client.publish
def publish(self, t, m, qos=0, retain=False):
    PUBLISHED.append(t.split("/")[-1])
    return _orig(self, t, m, qos, retain)
Client.publish = publish

def wake(after_ms, wake):
    board.sleep_for(after_ms, wake)
    del PUBLISHED[:]
    boot()
    out[-1]["published"] = list(PUBLISHED)

boot()                                  # power-on: nothing pressed, first heartbeat is due
out[-1]["published"] = list(PUBLISHED)
wake(60000, ("button", [1]))            # a rating
wake(3000, ("button", [2]))             # 3 s later: within the 10 s lockout, across the sleep
wake(20000, ("button", [3]))            # 20 s later: a new rating; 3rd wake since the beat
Client.reachable = False
wake(60000, ("button", [1]))            # hub unreachable: bounded awake time, rating kept
wake(60000, ("button", [2]))            # still unreachable: this time the feedback says offline
Client.reachable = True
wake(600000, ("timer", []))             # the retry timer: the kept rating goes now
good = board.mem
bad = bytearray(good); bad[6] ^= 1
print(json.dumps({"wakes": out, "unpack_ok": State.unpack(good) is not None,
                  "unpack_corrupt": State.unpack(bytes(bad)), "unpack_empty": State.unpack(b"")}))
"""


def check(r: dict) -> None:
    w = r["wakes"]
    # power-on: nothing to send, a first heartbeat, then sleep (a timer for the next heartbeat)
    assert w[0]["wake"] == "other" and w[0]["pressed"] == [] and w[0]["published"] == ["status"]
    assert 3599000 < w[0]["timer"] <= 3600 * 1000
    # a press wakes it: counted with its feedback at once, sent, acknowledged, asleep again
    assert w[1]["pressed"] == [1] and w[1]["fb"] == ["saved"] and w[1]["fb_at_ms"] == 0
    assert w[1]["published"] == ["rating"] and w[1]["depth"] == 0  # no heartbeat: not due
    assert w[1]["awake_ms"] < 1000
    # 3 s later (ticks restarted at 0): still a repeat, thanks to the RTC
    assert w[2]["fb"] == ["repeat"] and w[2]["depth"] == 0
    # 20 s later: a new rating; third wake since the last heartbeat: one goes after the ack
    assert w[3]["fb"] == ["saved"] and w[3]["published"] == ["rating", "status"]
    # hub unreachable: awake at most battery_awake_max_s, the rating stays in flash, and a timer
    # (battery_retry_s) brings it back to send it. The press's feedback reflects the last wake:
    # "saved" after a wake that reached the hub, "saved_offline" after one that did not.
    assert w[4]["fb"] == ["saved"] and w[4]["depth"] == 1
    assert 20000 <= w[4]["awake_ms"] < 20100 and w[4]["timer"] == 600 * 1000
    assert w[5]["fb"] == ["saved_offline"] and w[5]["depth"] == 2
    assert w[6]["wake"] == "timer" and w[6]["pressed"] == [] and w[6]["depth"] == 0
    assert w[6]["published"][:2] == ["rating", "rating"]
    assert [x["wakes"] for x in w] == [1, 2, 3, 4, 5, 6, 7]
    assert r["unpack_ok"] and r["unpack_corrupt"] is None and r["unpack_empty"] is None


def test_power_policy_under_cpython(tmp_path: Path) -> None:
    check(json.loads(run_cpython(SCENARIO, tmp_path).strip().splitlines()[-1]))


@pytest.mark.integration
def test_power_policy_under_micropython(micropython) -> None:  # type: ignore[no-untyped-def]
    out = micropython.run(SCENARIO)
    check(json.loads(out.strip().splitlines()[-1]))
