"""Backlog drain rate of a terminal (the real firmware application on the host simulator), next to
the raw publish rate of the same firmware MQTT client on the same broker.

A terminal that was offline has ``--n`` ratings in its flash outbox; the link comes back and the
main loop runs as in ``firmware/main.py`` (``service_buttons(); step(20)``) until the outbox is
empty, i.e. until the hub's own acks have named every rating (each one validated and committed
by the hub, in its own process as on the office's Pi). The rate is ratings per second from the
first rating published to the outbox being empty (``ratings_per_s``); ``ratings_per_s_from_link_up``
also counts the connection. At most ``max_inflight`` ratings wait for the hub's ack at a time
(the terminal's configuration; ``--max-inflight`` to compare); ``max_inflight_used`` is the most
seen after a loop turn.

Baseline, same run, same broker: ``firmware/app/mqtt.MQTTClient`` (the same client, the same
socket options) publishing ``--n`` QoS 1 messages of 48 bytes and counting the broker's PUBACKs,
(a) with at most ``max_inflight`` PUBACKs outstanding, like the terminal's window, and (b) all at
once. No hub work, no flash: the ceiling of the link.

    .venv/bin/python bench/firmware_drain.py [--n 1000] [--max-inflight 8]

Prints one JSON object; exits 1 if the outbox did not empty or the hub did not store every rating.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import struct
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "firmware"))  # `import app.*` as on the device

from app import mqtt as fw_mqtt  # noqa: E402

from bench.firmware_common import (  # noqa: E402
    HUB_USER,
    Office,
    fs_type,
    go_offline,
    go_online,
    new_terminal,
    office_with_hub,
    say,
    wait_online,
)
from provisioning.simulate import HostBoard, SimTerminal  # noqa: E402


def drain(term: SimTerminal, n: int, timeout: float) -> dict[str, Any]:
    app = term.app
    go_offline(term)
    for i in range(n):
        if app.press(1 + i % 3) is None:
            raise SystemExit("the outbox refused a rating (full?)")
    if app.outbox.depth() != n:
        raise SystemExit(f"expected {n} ratings in the outbox, found {app.outbox.depth()}")

    publishes: list[float] = []
    seqs_published: set[int] = set()
    acks = {"messages": 0, "seqs": 0}
    max_used = 0
    orig_publish = fw_mqtt.MQTTClient.publish

    def publish(client: Any, topic: str, msg: bytes, qos: int = 0, retain: bool = False) -> int:
        if topic.endswith("/rating"):
            publishes.append(time.perf_counter())
            seqs_published.add(struct.unpack_from("<I", msg, 4)[0])
        pid: int = orig_publish(client, topic, msg, qos, retain)
        return pid

    orig_on_message = app._on_message

    def on_message(topic: str, payload: bytes) -> None:
        if topic == app.t_ack:
            acks["messages"] += 1
            with contextlib.suppress(ValueError, AttributeError):
                acks["seqs"] += len(json.loads(payload).get("seqs") or [])
        orig_on_message(topic, payload)

    fw_mqtt.MQTTClient.publish = publish
    app._on_message = on_message
    turns = 0
    try:
        go_online(term)
        t_up = time.perf_counter()
        deadline = time.monotonic() + timeout
        while app.outbox.depth() and time.monotonic() < deadline:
            app.service_buttons()
            app.step(20)
            turns += 1
            max_used = max(max_used, len(app.inflight))
        t_empty = time.perf_counter()
    finally:
        fw_mqtt.MQTTClient.publish = orig_publish
        app._on_message = orig_on_message
    left = app.outbox.depth()
    if left or not publishes:
        return {"ok": False, "left_in_outbox": left, "published": len(publishes)}
    busy = t_empty - publishes[0]
    return {
        "ok": True,
        "ratings": n,
        "seconds": round(busy, 3),
        "ratings_per_s": round(n / busy, 1),
        "ratings_per_s_from_link_up": round(n / (t_empty - t_up), 1),
        "connect_ms": round((publishes[0] - t_up) * 1000, 2),
        "max_inflight": app.cfg["max_inflight"],
        "max_inflight_used": max_used,
        "publishes": len(publishes),
        "republished": len(publishes) - len(seqs_published),
        "ack_messages": acks["messages"],
        "seqs_per_ack": round(acks["seqs"] / max(1, acks["messages"]), 2),
        "loop_turns": turns,
        "left_in_outbox": 0,
    }


def raw_publish(office: Office, n: int, window: int, timeout: float) -> dict[str, Any]:
    """The firmware MQTT client alone: n QoS 1 publishes of 48 bytes, at most ``window``
    PUBACKs outstanding; PUBACKs counted."""
    board = HostBoard()
    c = fw_mqtt.MQTTClient(
        f"bench-raw-{window}",
        "127.0.0.1",
        office.port,
        user=HUB_USER,
        password=office.hub_password,
        keepalive=30,
        timeout=5,
        sock_factory=board.open_socket,
        ticks_ms=board.ticks_ms,
    )
    acked = [0]
    c.on_puback = lambda _pid: acked.__setitem__(0, acked[0] + 1)
    c.connect(clean_session=True)
    payload = bytes(range(48))
    topic = "sipas/v1/bench-raw/drain"
    sent = 0
    deadline = time.monotonic() + timeout
    t0 = time.perf_counter()
    try:
        while acked[0] < n and time.monotonic() < deadline:
            while sent < n and sent - acked[0] < window:
                c.publish(topic, payload, qos=1)
                sent += 1
            c.poll(20)
        dt = time.perf_counter() - t0
    finally:
        c.disconnect()
    return {
        "window": window,
        "messages": n,
        "pubacks": acked[0],
        "seconds": round(dt, 3),
        "msgs_per_s": round(acked[0] / dt, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="ratings in the backlog")
    ap.add_argument("--max-inflight", type=int, default=None, help="override the terminal's")
    ap.add_argument("--timeout", type=float, default=40, help="seconds allowed for each phase")
    args = ap.parse_args()
    t_start = time.monotonic()
    with office_with_hub() as (office, hub, work):
        say(f"office with hub on 127.0.0.1:{office.port}")
        cfg: dict[str, Any] = {"lockout_s": 0, "reason_s": 0}
        if args.max_inflight is not None:
            cfg["max_inflight"] = args.max_inflight
        term = new_terminal(office, 0, **cfg)
        window = int(term.cfg["max_inflight"])
        try:
            wait_online(term)
            say(f"draining a backlog of {args.n}")
            sim = drain(term, args.n, args.timeout)
        finally:
            term.stop()
        st = hub.wait_stored(args.n, 10)
        say("raw publishes, firmware MQTT client")
        raw_window = raw_publish(office, args.n, window, args.timeout)
        raw_all = raw_publish(office, args.n, args.n, args.timeout)
        outbox_fs = fs_type(work)
    keys = ("stored", "duplicates", "quarantined", "acks_published", "batches", "max_batch")
    stored = {k: st.get(k) for k in keys}
    result = {
        "bench": "firmware_drain",
        "n": args.n,
        "drain": sim,
        "hub": stored,
        "raw_publish_same_window": raw_window,
        "raw_publish_unbounded": raw_all,
        "ratio_to_raw_same_window": (
            round(sim["ratings_per_s"] / raw_window["msgs_per_s"], 3) if sim["ok"] else None
        ),
        "ratio_to_raw_unbounded": (
            round(sim["ratings_per_s"] / raw_all["msgs_per_s"], 3) if sim["ok"] else None
        ),
        "outbox_fs": outbox_fs,
        "seconds": round(time.monotonic() - t_start, 1),
    }
    print(json.dumps(result))
    ok = sim["ok"] and (st.get("stored") or 0) + (st.get("duplicates") or 0) >= args.n
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
