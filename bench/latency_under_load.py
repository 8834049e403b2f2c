"""Press-to-hub-ack latency of one terminal while other terminals keep the hub busy, and the hub's memory.

One simulated terminal (the real firmware application on CPython, as in press_latency.py) presses a
button every ``--interval`` seconds; one sample is the time until the hub's own ack has removed
the rating from its flash outbox. Meanwhile ``--load-terminals`` other registered terminals publish
``--load-rate`` signed ratings per second in total (a load-generator process, QoS 1, each waiting
for the hub's acks). The hub (HubService, API off) runs in its own process, as on the office's Pi:
its peak resident memory is its VmHWM. The office's records (desks, officials on duty, cases) are
filled in, so tagging does its real work.

Baseline, same broker, same load, same run: a bare paho-mqtt QoS 1 echo (two broker hops, no
SIPAS work), sampled at the same interval.

    .venv/bin/python bench/latency_under_load.py [--samples 400] [--load-rate 10]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    HubProcess,
    LoadGen,
    Office,
    proc_mb,
    raw_round_trip,
    say,
    split,
    summary,
)


def press_to_ack(
    device: dict[str, Any], workdir: Path, samples: int, interval: float
) -> list[float]:
    from provisioning.simulate import (
        SimTerminal,
    )  # after _common has put the repository on the path

    term = SimTerminal({**device, "lockout_s": 0}, workdir / "terminal")
    app = term.app
    deadline = time.monotonic() + 10
    while not app.online():
        app.step(5)
        if time.monotonic() > deadline:
            raise SystemExit("terminal did not connect")
    out = []
    try:
        for i in range(samples + 10):
            t0 = time.perf_counter()
            app.press(1 + i % 3)
            limit = time.monotonic() + 10
            while app.outbox.depth():
                app.step(5)
                if time.monotonic() > limit:
                    raise SystemExit(f"no hub ack within 10 s (sample {i})")
            if i >= 10:  # warm-up
                out.append((time.perf_counter() - t0) * 1000)
            # Keep the link serviced between presses (heartbeats, pings), as the main loop does.
            pause_until = time.monotonic() + interval
            while time.monotonic() < pause_until:
                app.step(min(5, max(0, int((pause_until - time.monotonic()) * 1000))))
    finally:
        term.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=400)
    ap.add_argument("--raw-samples", type=int, default=200)
    ap.add_argument("--interval", type=float, default=0.05, help="seconds between two presses")
    ap.add_argument("--load-rate", type=float, default=10, help="background ratings per second")
    ap.add_argument("--load-terminals", type=int, default=20)
    ap.add_argument(
        "--autosave-seconds",
        type=int,
        help="broker saves its database every S seconds instead of after every change",
    )
    args = ap.parse_args()
    k = args.load_terminals
    # Enough background ratings for the whole run (bounded by the generator's timeout).
    expected_s = (args.samples + args.raw_samples + 20) * (args.interval + 0.01) + 20
    background = max(k, int(args.load_rate * expected_s))
    counts = [1] + split(background, k)  # device 0 is the measured terminal
    with tempfile.TemporaryDirectory(prefix="sipas-bench-") as tmp:
        work = Path(tmp)
        say(f"registering {k + 1} terminals")
        office = Office(work, k + 1, counts=counts, autosave_seconds=args.autosave_seconds)
        with office:
            autosave = office.broker_autosave()
            hub = HubProcess(office.hub_settings())
            hub.start()
            assert hub.pid is not None
            idle_rss = proc_mb(hub.pid, "VmRSS")
            load = LoadGen(
                office,
                office.devices[1:],
                counts[1:],
                window=8,
                rate=args.load_rate,
                expect_acks=True,
                timeout=expected_s + 30,
            )
            load.connect()
            say(f"background: {args.load_rate:g} ratings/s from {k} terminals")
            load.go()
            t0 = time.monotonic()
            time.sleep(1.0)  # the load is running
            say(f"bare echo round trip: {args.raw_samples} samples")
            raw = raw_round_trip(office, args.raw_samples, args.interval)
            say(f"press to hub ack: {args.samples} samples")
            sipas = press_to_ack(office.devices[0], work, args.samples, args.interval)
            load_s = time.monotonic() - t0
            load.stop()
            g = load.report()
            hub_hwm = proc_mb(hub.pid, "VmHWM")
            hub_rss = proc_mb(hub.pid, "VmRSS")
            broker_hwm = proc_mb(office.broker.pid or 0, "VmHWM")
            final = hub.stop() or hub.last
    s_sum, r_sum = summary(sipas), summary(raw)
    result = {
        "bench": "latency_under_load",
        "samples": len(sipas),
        "interval_s": args.interval,
        "press_to_hub_ack_ms": s_sum,
        "raw_mqtt_round_trip_ms": r_sum,
        "ratio_p50": round(statistics.median(sipas) / statistics.median(raw), 2),
        "ratio_p99": round(s_sum["p99"] / r_sum["p99"], 2),
        "load": {
            "terminals": k,
            "rate_per_s": args.load_rate,
            "published": g["published"],
            "achieved_per_s": round(g["published"] / load_s, 1),
            "seqs_acked": g["seqs_acked"],
            "seqs_rejected": g["seqs_rejected"],
        },
        "hub_stored": final.get("stored"),
        "hub_quarantined": final.get("quarantined"),
        "hub_rss_idle_mb": idle_rss,
        "hub_rss_peak_mb": hub_hwm,
        "hub_rss_end_mb": hub_rss,
        "broker_rss_peak_mb": broker_hwm,
        "broker_autosave": autosave,
        "hub_process": "separate",
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
