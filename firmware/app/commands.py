# Commands from the hub (docs/protocol.md): identify, prompt, time, config, reboot, update.
import json
import os

from app import config

# Identity and keys come only from provisioning, never from a remote command.
FIXED_KEYS = (
    "terminal_id",
    "office",
    "epoch",
    "hub_key",
    "district_key",
    "mqtt_password",
    "outbox_dir",
)


def count_boot(path, count=True):
    # Boot counter for the heartbeat (a terminal that keeps rebooting shows it). A wake from
    # battery mode's deep sleep is not a boot (count=False): no flash write on every press.
    n = 0
    try:
        with open(path) as f:
            n = int(f.read() or 0)
    except (OSError, ValueError):
        pass
    if not count:
        return n
    try:
        with open(path, "w") as f:
            f.write(str(n + 1))
    except OSError:
        pass
    return n + 1


def handle(app, msg):
    # Carry out one command; returns the reply to publish.
    cid = msg.get("id")
    cmd = msg.get("cmd")
    args = msg.get("args") or {}
    reply = {"v": 1, "id": cid, "ok": True}
    if cmd == "identify":
        app.board.feedback("identify", 0)
    elif cmd == "prompt" and app.safe_mode:
        reply = {"v": 1, "id": cid, "ok": False, "error": "safe mode: prompts are off"}
    elif cmd == "prompt":
        window = min(int(args.get("window", 600)), 3600) * 1000
        app.prompt_until = app.board.ticks_add(app.board.ticks_ms(), window)
        app.board.feedback("prompt", 0)
    elif cmd == "time" and isinstance(args.get("time"), int):
        app.board.set_time(args["time"])
    elif cmd == "config":
        error = reconfigure(app, args)
        if error:
            reply = {"v": 1, "id": cid, "ok": False, "error": error}
    elif cmd == "reboot":
        app.reboot_pending = True  # after the reply is out: see App.step()
    elif cmd == "update":
        from app import ota

        reply = ota.update(app, cid, args)  # stages, then reboots like "reboot"
    else:
        reply = {"v": 1, "id": cid, "ok": False, "error": "unknown command: %s" % cmd}
    return reply


def reconfigure(app, changes):
    # Validate the whole new configuration, write it to a temporary file and rename it over
    # the old one (atomic on littlefs), then apply it. Returns an error text, or None.
    if not isinstance(changes, dict) or not changes:
        return "config needs a non-empty object of settings"
    for k in changes:
        if k in FIXED_KEYS:
            return "%s cannot be changed remotely: re-provision the terminal" % k
    new = dict(app.cfg)
    new.update(changes)
    try:
        new = config.validate(new)
    except config.ConfigError as e:
        return "rejected: %s" % e
    tmp = app.config_path + ".tmp"
    try:
        with open(tmp, "w") as f:
            f.write(json.dumps(new))
        os.rename(tmp, app.config_path)
    except OSError as e:
        return "could not save the configuration: %s" % e
    app.cfg = new
    app.beat_now()  # report the change at once
    return None
