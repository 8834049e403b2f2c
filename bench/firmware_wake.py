"""Wake-to-sleep time of a battery-mode terminal (the real firmware application on the host
simulator) against a real hub in its own process and its own Mosquitto, next to the bare link
work of one wake measured in the same run.

A battery terminal deep-sleeps; a button wakes it (ext1); the application boots again
(``App`` + ``power.Power`` built from the flash outbox and RTC memory, as ``main.py`` does), the
press that woke it is stored and gets its feedback, the terminal connects, publishes, waits for
the hub's ack (the hub validated and committed the rating), sends a heartbeat when one is due,
and sleeps again. Measured, per wake (``time.perf_counter()``):

- ``press``: one press, no heartbeat due (the usual wake): boot to feedback, boot to deep sleep;
- ``press_with_heartbeat``: the same wake with a heartbeat due (``battery_beat_wakes`` 1):
  it includes ``LINGER_MS`` (200 ms) left for the broker's PUBACK and the hub's answer;
- ``backlog_N``: a wake that finds N ratings already waiting in flash (earlier wakes could not
  reach the hub) plus the press that woke it.

Baseline, same run, same broker: the firmware's own MQTT client doing the bare network work of
a wake (TCP connect, CONNECT/CONNACK, one 48-byte QoS 1 publish and its PUBACK, DISCONNECT), no
flash, no hub. On the host there is no Wi-Fi association and no MicroPython boot: those come from
published figures in ``hardware/power_budget.py``, which reads this JSON (``--wake-json``).

    .venv/bin/python bench/firmware_wake.py [--n 20] [--backlog 10,100] > wake.json

Prints one JSON object; exits 1 if a wake did not end asleep with an empty outbox.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "firmware"))  # `import app.*` as on the device

from app import mqtt as fw_mqtt  # noqa: E402
from app.power import LINGER_MS  # noqa: E402

from bench.firmware_common import (  # noqa: E402
    HUB_USER,
    Office,
    new_terminal,
    office_with_hub,
    say,
    summary,
)
from provisioning.simulate import HostBoard, SimTerminal  # noqa: E402


def until_asleep(term: SimTerminal, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not term.asleep:
        term.step(0)
        if time.monotonic() > deadline:
            raise SystemExit(f"the terminal did not go back to sleep; events: {term.app.events}")


def one_wake(term: SimTerminal, level: int, timeout: float) -> dict[str, float]:
    board = term.board
    fb_before = len(board.feedbacks)
    t0 = time.perf_counter()
    fb_at: list[float] = []
    orig = board.on_feedback
    board.on_feedback = lambda kind, lvl: fb_at.append(time.perf_counter())
    try:
        term.button(level)  # ext1 wake: the application boots, the press is stored and shown
        until_asleep(term, timeout)
    finally:
        board.on_feedback = orig
    t_sleep = board.sleeps[-1]["at"]
    if len(board.feedbacks) == fb_before or term.depth():
        raise SystemExit(f"wake ended without feedback or with ratings left: {term.app.events}")
    return {
        "wake_to_feedback_ms": (fb_at[0] - t0) * 1000,
        "wake_to_sleep_ms": (t_sleep - t0) * 1000,
    }


def wakes(term: SimTerminal, n: int, timeout: float) -> dict[str, Any]:
    samples = [one_wake(term, 1 + i % 3, timeout) for i in range(n + 2)][2:]  # warm-up dropped
    return {
        "samples": n,
        "wake_to_feedback_ms": summary([s["wake_to_feedback_ms"] for s in samples]),
        "wake_to_sleep_ms": summary([s["wake_to_sleep_ms"] for s in samples]),
    }


def backlog_wake(term: SimTerminal, size: int, timeout: float) -> dict[str, Any]:
    # Ratings stored by earlier wakes that could not reach the hub: written to the same flash
    # outbox while the terminal sleeps, as those wakes left them.
    for i in range(size):
        if term.app.press(1 + i % 3) is None:
            raise SystemExit("the outbox refused a rating")
    w = one_wake(term, 2, timeout)
    return {
        "ratings": size + 1,
        "wake_to_sleep_ms": round(w["wake_to_sleep_ms"], 2),
        "ms_per_rating": round(w["wake_to_sleep_ms"] / (size + 1), 3),
    }


def bare_wake(office: Office, n: int) -> dict[str, float]:
    board = HostBoard()
    times = []
    for i in range(n + 2):
        t0 = time.perf_counter()
        c = fw_mqtt.MQTTClient(
            f"bench-wake-{i}",
            "127.0.0.1",
            office.port,
            user=HUB_USER,
            password=office.hub_password,
            keepalive=30,
            timeout=5,
            sock_factory=board.open_socket,
            ticks_ms=board.ticks_ms,
        )
        acked: list[int] = []
        c.on_puback = acked.append
        c.connect(clean_session=True)
        c.publish("sipas/v1/bench-wake/x", bytes(48), qos=1)
        while not acked:
            c.poll(20)
        c.disconnect()
        times.append((time.perf_counter() - t0) * 1000)
    return summary(times[2:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20, help="wakes measured per phase")
    ap.add_argument("--backlog", default="10,100", help="backlog sizes, comma-separated")
    ap.add_argument("--timeout", type=float, default=30, help="seconds allowed for one wake")
    args = ap.parse_args()
    sizes = [int(x) for x in args.backlog.split(",") if x]
    t_start = time.monotonic()
    cfg = {"power_mode": "battery", "lockout_s": 0, "reason_s": 0, "battery_awake_max_s": 20}
    with office_with_hub(terminals=2) as (office, _hub, _work):
        say(f"office with hub on 127.0.0.1:{office.port}")
        plain = new_terminal(office, 0, **cfg, battery_beat_wakes=100000, battery_beat_s=604800)
        beat = new_terminal(office, 1, **cfg, battery_beat_wakes=1)
        try:
            for t in (plain, beat):
                until_asleep(t, args.timeout)  # power-on wake: first heartbeat, then asleep
            say(f"{args.n} wakes, one press each")
            press = wakes(plain, args.n, args.timeout)
            say(f"{args.n} wakes with a heartbeat due")
            press_beat = wakes(beat, args.n, args.timeout)
            backlog = {}
            for size in sizes:
                say(f"a wake with {size} ratings waiting")
                backlog[f"backlog_{size}"] = backlog_wake(plain, size, args.timeout)
        finally:
            plain.stop()
            beat.stop()
        say("bare link work of a wake, firmware MQTT client")
        bare = bare_wake(office, args.n)
    result = {
        "bench": "firmware_wake",
        "press": press,
        "press_with_heartbeat": press_beat,
        **backlog,
        "linger_ms_after_heartbeat": LINGER_MS,
        "baseline_bare_wake_ms": bare,
        "ratio_to_bare": round(press["wake_to_sleep_ms"]["p50"] / bare["p50"], 2),
        "note": "host simulator: no Wi-Fi association and no MicroPython boot in these times",
        "seconds": round(time.monotonic() - t_start, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
