"""firmware/app/hal.py (the ESP32 board) under real MicroPython (wasm), with stand-ins for the three
modules that exist only on the chip (machine, esp32, network) and for socket (absent from the wasm
port): the thinnest seam, below the board, so the board's own logic runs unchanged.

- A button still held when the terminal goes to deep sleep must not be armed for the ext1
  ANY_HIGH wake-up: the level would wake the chip at once and, on every wake, count as a new press.
- The debounce is timed from the button's rising edge, not from when the main loop gets to it: a
  quick tap that is still down when the loop reads it is a press, a glitch shorter than 30 ms is not.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration

STANDINS = r'''
import os, sys
MACHINE = """
import time
DEEPSLEEP_RESET = 4
EXT1_WAKE = 3
TIMER_WAKE = 4
LEVEL = {}  # pin id -> 0/1, or a function returning it
SLEEPS = []
mem32 = {}
def reset_cause(): return 1
def wake_reason(): return 0
def deepsleep(ms=0): SLEEPS.append(ms)
def reset(): raise SystemExit('reset')
class Pin:
    IN = 1; OUT = 3; PULL_DOWN = 2; IRQ_RISING = 1
    def __init__(self, id, mode=None, pull=None, value=None):
        self.id = id; self.handler = None
    def value(self, v=None):
        if v is not None:
            LEVEL[self.id] = v
            return None
        x = LEVEL.get(self.id, 0)
        return x() if callable(x) else x
    def irq(self, trigger=None, handler=None): self.handler = handler
    def init(self, *a, **kw): pass
class PWM:
    def __init__(self, pin, freq=0, duty=0): pass
    def freq(self, f): pass
    def duty(self, d): pass
    def deinit(self): pass
class ADC:
    ATTN_11DB = 3
    def __init__(self, pin): pass
    def atten(self, a): pass
    def read_uv(self): return 2050000
class WDT:
    def __init__(self, timeout=0): pass
    def feed(self): pass
class RTC:
    def memory(self, data=None): return b''
"""
ESP32 = """
WAKEUP_ANY_HIGH = True
WAKEUP_ALL_LOW = False
ARMED = []
def wake_on_ext1(pins=None, level=False):
    ARMED.append(([p.id for p in pins], level))
"""
NETWORK = """
STA_IF = 0
STAT_CONNECTING = 1
class WLAN:
    def __init__(self, i): pass
    def config(self, **kw): pass
    def active(self, on=None): pass
    def isconnected(self): return False
    def status(self, *a): return 0
"""
for name, text in (("machine", MACHINE), ("esp32", ESP32), ("network", NETWORK), ("socket", "")):
    with open(name + ".py", "w") as f:
        f.write(text)
sys.path.insert(0, os.getcwd())
import json, time
import esp32, machine
from app import hal
from app.pins import BUTTON_PINS
'''


def test_deep_sleep_leaves_a_held_button_out_of_the_ext1_wake(micropython) -> None:  # type: ignore[no-untyped-def]
    out = micropython.run(
        STANDINS
        + """
b = hal.Board(5)
b.deep_sleep(5000)                       # nothing held: every button wakes it
machine.LEVEL[BUTTON_PINS[0]] = 1        # button 1 stuck down (or leaned on)
b.deep_sleep(900000)
print(json.dumps({"armed": esp32.ARMED, "pins": list(BUTTON_PINS), "sleeps": machine.SLEEPS,
                  "held": b.buttons_held()}))
"""
    )
    r = json.loads(out.strip().splitlines()[-1])
    pins = r["pins"]
    assert r["armed"][0] == [pins, True]
    # With button 1 held, ext1 ANY_HIGH armed on it would wake the chip at once, and the wake
    # would read it from the ext1 latch as a new press: a phantom rating every wake.
    assert r["armed"][1] == [pins[1:], True]
    assert r["held"] is True
    assert r["sleeps"][0] == 5000 and 900000 in r["sleeps"]


def test_debounce_counts_from_the_edge_not_from_the_late_loop(micropython) -> None:  # type: ignore[no-untyped-def]
    out = micropython.run(
        STANDINS
        + """
b = hal.Board(3)
pin = b.buttons[1]

def press(down_ms):
    # rising edge now, released down_ms later (the pin reads high until then)
    at = time.ticks_ms()
    machine.LEVEL[pin.id] = lambda: 1 if time.ticks_diff(time.ticks_add(at, down_ms), time.ticks_ms()) > 0 else 0
    pin.handler(pin)

# a quick tap while the loop is busy (a beep, a flash write) for 45 ms: its edge came 45 ms before
# the loop reads it, and it is released 15 ms after that (the old code waited 30 ms from the read,
# then found the pin low and dropped the press); the release is tied to the read, not to the
# clock, so a slow machine cannot change the outcome
machine.LEVEL[pin.id] = lambda: 1 if released is None or time.ticks_diff(released, time.ticks_ms()) > 0 else 0
released = None
pin.handler(pin)
time.sleep_ms(45)
released = time.ticks_add(time.ticks_ms(), 15)
tap = b.read_presses()
time.sleep_ms(200)
press(10)               # a 10 ms glitch, read at once
glitch = b.read_presses()
time.sleep_ms(200)
press(500)              # an ordinary press, read at once
t0 = time.ticks_ms()
held = b.read_presses()
waited = time.ticks_diff(time.ticks_ms(), t0)
print(json.dumps({"tap": tap, "glitch": glitch, "held": held, "waited": waited}))
"""
    )
    r = json.loads(out.strip().splitlines()[-1])
    assert r["tap"] == [2]  # still down when the loop read it, 45 ms after its edge: a press
    assert r["glitch"] == []  # shorter than the 30 ms debounce: noise
    assert r["held"] == [2] and 25 <= r["waited"] <= 60  # judged 30 ms after the edge
