"""Ratings persisted per second with 200 terminals publishing over Mosquitto, next to a bare subscriber.

200 registered terminals (each its own MQTT account and keys) publish pre-signed 48-byte rating
records at QoS 1 on their own topics, from a load-generator process (raw sockets, each terminal
keeping ``--window`` publishes waiting for the broker's PUBACK): a backlog that the subscriber
drains as fast as it can, as after a hub restart. ``--closed-loop``: in the hub phase each
terminal keeps at most ``--window`` ratings waiting for the hub's ack, as the firmware does. The office's records are filled in as on a
working day (a desk per terminal with an official checked in, a case handed back before most
presses), so that tagging does its real work.

- baseline: a bare paho-mqtt subscriber (callback API 2, ``sipas/v1/{office}/+/rating`` QoS 1) that
  counts and discards; its rate is N / (first publish -> N-th message received);
- hub: ``HubService`` (API off) in its own process, as on the office's Pi (its own interpreter
  lock and its own memory, VmHWM); its rate is rows committed / (first publish -> last commit).
  The terminals subscribe to their ack topics and count the hub's acknowledgements: every
  sequence number must come back ``stored``, within ``--ack-wait`` seconds of the last commit.

Same broker (the hub's generated configuration; ``--autosave-seconds S`` replaces its save-after-
every-change by a save every S seconds, to compare), same records, same run: baseline first.

    .venv/bin/python bench/ingest_throughput.py [--ratings 20000] [--terminals 200]
    .venv/bin/python bench/ingest_throughput.py --profile /tmp/hub.pyspy   # needs py-spy

Prints one JSON object; exits 1 if a rating is missing, duplicated, quarantined or not acknowledged.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import (
    BareSubscriber,
    HubProcess,
    LoadGen,
    Office,
    cpu_s,
    proc_mb,
    py_spy,
    say,
    split,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratings", type=int, default=20000, help="ratings per run (N)")
    ap.add_argument("--terminals", type=int, default=200)
    ap.add_argument("--window", type=int, default=8, help="publishes per terminal awaiting PUBACK")
    ap.add_argument("--timeout", type=float, default=60, help="per phase, seconds")
    ap.add_argument(
        "--ack-wait", type=float, default=10, help="seconds after the last commit for the acks"
    )
    ap.add_argument(
        "--autosave-seconds",
        type=int,
        help="broker saves its database every S seconds instead of after every change",
    )
    ap.add_argument(
        "--closed-loop",
        action="store_true",
        help="hub phase: the window counts ratings awaiting the hub's ack (the firmware's rule)",
    )
    ap.add_argument(
        "--bare-office",
        action="store_true",
        help="no desks, officials or cases in the database (tagging finds nothing)",
    )
    ap.add_argument("--profile", type=Path, help="py-spy raw profile of the hub during its phase")
    args = ap.parse_args()
    n, k = args.ratings, args.terminals
    if not 1 <= k <= n or n // k > 65534:
        raise SystemExit("need 1 <= terminals <= ratings and at most 65534 ratings per terminal")
    counts = split(n, k)
    with tempfile.TemporaryDirectory(prefix="sipas-bench-") as tmp:
        say(f"registering {k} terminals")
        office = Office(
            Path(tmp),
            k,
            counts=None if args.bare_office else counts,
            autosave_seconds=args.autosave_seconds,
        )
        with office:
            bpid = office.broker.pid
            autosave = office.broker_autosave()

            # Baseline: the bare subscriber alone on the broker.
            say(f"baseline: bare subscriber, {n} ratings")
            bare = BareSubscriber(office, n)
            gen = LoadGen(office, office.devices, counts, window=args.window, expect_acks=False)
            gen.connect()
            cpu0, saves0 = cpu_s(bpid), office.broker_saves()
            gen.go()
            bare.done.wait(args.timeout)
            g_bare = gen.report()
            bare_broker = (cpu_s(bpid) or 0) - (cpu0 or 0), office.broker_saves() - saves0
            bare.close()
            if bare.t_last is None:
                raise SystemExit(f"bare subscriber got {bare.count} of {n} messages")
            bare_s = bare.t_last - g_bare["t_first_publish"]

            # The hub, same broker, same records.
            say(f"hub: {n} ratings")
            hub = HubProcess(office.hub_settings())
            hub.start()
            gen = LoadGen(
                office,
                office.devices,
                counts,
                window=args.window,
                expect_acks=True,
                hub_window=args.closed_loop,
                timeout=args.timeout + args.ack_wait,
            )
            gen.connect()
            cpu0, hub_cpu0, saves0 = cpu_s(bpid), cpu_s(hub.pid), office.broker_saves()
            with py_spy(hub.pid or 0, args.profile):
                gen.go()
                st = hub.wait_stored(n, args.timeout)
                hub_cpu = (cpu_s(hub.pid) or 0) - (hub_cpu0 or 0)
                # The acks get --ack-wait more seconds after the last commit.
                ack_deadline = (st["t_last_commit"] or time.monotonic()) + args.ack_wait
                if not gen.wait(ack_deadline - time.monotonic()):
                    gen.stop()
                g_hub = gen.report()
            hub_broker = (cpu_s(bpid) or 0) - (cpu0 or 0), office.broker_saves() - saves0
            broker_hwm = proc_mb(bpid or 0, "VmHWM")
            hub_hwm = hub.peak_rss_mb()
            final = hub.stop() or hub.last
            rows = office.count_ratings()
            links = office.link_statuses()
    if st["t_last_commit"] is None:
        raise SystemExit(f"the hub stored nothing: {st}")
    hub_s = st["t_last_commit"] - g_hub["t_first_publish"]
    hub_rate = st["stored"] / hub_s
    bare_rate = n / bare_s
    acks_done = g_hub["seqs_acked"] == n
    result = {
        "bench": "ingest_throughput",
        "n": n,
        "terminals": k,
        "window": args.window,
        "window_counts": "hub acks (closed loop)" if args.closed_loop else "broker PUBACKs",
        "hub_rate_per_s": round(hub_rate),
        "bare_rate_per_s": round(bare_rate),
        "ratio": round(hub_rate / bare_rate, 3),
        "hub_seconds": round(hub_s, 3),
        "bare_seconds": round(bare_s, 3),
        "rows_committed": rows,
        "hub_batches": final.get("batches"),
        "hub_mean_batch": round(final["messages"] / final["batches"], 1)
        if final.get("batches")
        else None,
        "duplicates": final.get("duplicates"),
        "quarantined": final.get("quarantined"),
        "acks_published": final.get("acks_published"),
        "acks_received": g_hub["hub_acks_received"],
        "seqs_acked": g_hub["seqs_acked"],
        "seqs_rejected": g_hub["seqs_rejected"],
        # first publish -> the terminals hold every ack (compare with hub_seconds)
        "acks_complete_s": round(g_hub["t_all_hub_acked"] - g_hub["t_first_publish"], 3)
        if acks_done and g_hub["t_all_hub_acked"]
        else None,
        "hub_cpu_s": round(hub_cpu, 2),
        "hub_rss_peak_mb": hub_hwm,
        "broker_cpu_s": {"bare": round(bare_broker[0], 2), "hub": round(hub_broker[0], 2)},
        "broker_db_saves": {"bare": bare_broker[1], "hub": hub_broker[1]},
        "broker_rss_peak_mb": broker_hwm,
        "broker_autosave": autosave,
        "link_status": links,
        "office_records": not args.bare_office,
        "hub_process": "separate",
    }
    print(json.dumps(result), flush=True)
    bad = [
        f"{key}={result[key]}"
        for key, ok in (
            ("rows_committed", rows == n),
            ("duplicates", result["duplicates"] == 0),
            ("quarantined", result["quarantined"] == 0),
            ("seqs_acked", acks_done),
            ("seqs_rejected", g_hub["seqs_rejected"] == 0),
        )
        if not ok
    ]
    if bad:
        raise SystemExit("incomplete run: " + ", ".join(bad))


if __name__ == "__main__":
    main()
