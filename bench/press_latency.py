"""Press-to-hub-acknowledgement latency over loopback Mosquitto, next to the raw MQTT round trip.

A simulated terminal (the real firmware application on CPython) presses a button; the time until the
hub's own ack has removed the rating from the terminal's outbox is one sample (flash write, publish,
hub validation, SQLite commit with synchronous=FULL, hub ack). The baseline, measured on the same
broker in the same run, is a bare paho-mqtt echo: publish QoS 1, a second client republishes, the
first receives it: the same two broker hops without any of SIPAS's work.

    .venv/bin/python bench/press_latency.py [--samples 300]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import echo_round_trip, summary  # noqa: E402
from hub.broker import find_free_port  # noqa: E402
from hub.config import Settings  # noqa: E402
from hub.ingest import nodelay  # noqa: E402
from hub.service import HubService  # noqa: E402
from provisioning.simulate import SimTerminal  # noqa: E402


def press_to_ack(hub: HubService, workdir: Path, samples: int) -> list[float]:
    device = hub.add_terminal(desk="bench")
    device["lockout_s"] = 0
    term = SimTerminal(device, workdir / "terminal")
    app = term.app
    deadline = time.monotonic() + 10
    while not app.online():
        app.step(5)
        if time.monotonic() > deadline:
            raise SystemExit("terminal did not connect")
    out = []
    for i in range(samples + 10):
        t0 = time.perf_counter()
        app.press(1 + i % 3)
        while app.outbox.depth():
            app.step(5)
        if i >= 10:  # warm-up
            out.append((time.perf_counter() - t0) * 1000)
    term.stop()
    return out


def raw_round_trip(hub: HubService, samples: int) -> list[float]:
    st = hub.settings

    def make(name: str) -> mqtt.Client:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{name}")
        c.username_pw_set(st.mqtt_user, st.mqtt_password)
        c.on_socket_open = nodelay
        return c

    return echo_round_trip(make, st.mqtt_host, st.mqtt_port, samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sipas-bench-") as tmp:
        work = Path(tmp)
        settings = Settings(
            office="bench",
            data_dir=work / "hub",
            mqtt_port=find_free_port(),
            api_port=find_free_port(),
            api_token="bench-token-0123456789",
        )
        hub = HubService(settings)
        hub.start(api=False)
        try:
            raw = raw_round_trip(hub, args.samples)
            sipas = press_to_ack(hub, work, args.samples)
        finally:
            hub.stop()
    result = {
        "bench": "press_latency",
        "samples": args.samples,
        "press_to_hub_ack_ms": summary(sipas),
        "raw_mqtt_round_trip_ms": summary(raw),
        "ratio_p50": round(statistics.median(sipas) / statistics.median(raw), 2),
        "ratio_p99": round(summary(sipas)["p99"] / summary(raw)["p99"], 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
