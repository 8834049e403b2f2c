# Device configuration: a JSON file written by provisioning, validated on boot, defaults here.
import json

DEFAULTS = {
    "broker_port": 1883,
    "tls": False,
    "scale": 3,
    "lockout_s": 10,
    "reason_s": 8,
    "max_inflight": 8,
    "ack_timeout_s": 30,
    "heartbeat_s": 60,
    "heartbeat_min_s": 5,
    "keepalive_s": 30,
    "outbox_capacity": 10000,
    "outbox_dir": "/outbox",
    "wifi_ssid": "",
    "wifi_password": "",
    # Power (docs/firmware.md "Power modes"): "mains" stays connected; "battery" deep-sleeps and
    # wakes on any button, stays awake at most battery_awake_max_s, and sends a heartbeat when the
    # last is battery_beat_s old or battery_beat_wakes wakes ago (a timer wakes it for that too, and
    # every battery_retry_s while ratings wait in the outbox).
    "power_mode": "mains",
    "battery_awake_max_s": 20,
    "battery_beat_s": 21600,
    "battery_beat_wakes": 50,
    "battery_retry_s": 900,
}

POWER_MODES = ("mains", "battery")

REQUIRED = (
    "terminal_id",
    "office",
    "epoch",
    "hub_key",
    "district_key",
    "broker_host",
    "mqtt_password",
)

_HEX = "0123456789abcdef"


class ConfigError(Exception):
    pass


def _is_hex(s, n):
    return isinstance(s, str) and len(s) == n and all(c in _HEX for c in s)


def validate(raw):
    # Returns a complete config dict, or raises ConfigError naming the first bad key.
    if not isinstance(raw, dict):
        raise ConfigError("config must be a JSON object")
    cfg = dict(DEFAULTS)
    cfg.update(raw)
    for k in REQUIRED:
        if k not in raw:
            raise ConfigError("missing key: " + k)
    tid = cfg["terminal_id"]
    if not (isinstance(tid, str) and tid.startswith("t-") and _is_hex(tid[2:], 12)):
        raise ConfigError("terminal_id must look like t-0123456789ab")
    office = cfg["office"]
    if not (
        isinstance(office, str)
        and 1 <= len(office) <= 32
        and all(c in _HEX or "g" <= c <= "z" or c == "-" for c in office)
    ):
        raise ConfigError("office must be 1-32 characters of a-z, 0-9, -")
    for k in ("hub_key", "district_key"):
        if not _is_hex(cfg[k], 64):
            raise ConfigError(k + " must be 64 hex digits")
    if cfg["scale"] not in (3, 4, 5):
        raise ConfigError("scale must be 3, 4 or 5")
    checks = (
        ("epoch", 1, 0xFFFF),
        ("broker_port", 1, 65535),
        ("lockout_s", 0, 3600),
        ("reason_s", 0, 60),
        ("max_inflight", 1, 64),
        ("ack_timeout_s", 1, 3600),
        ("heartbeat_s", 5, 86400),
        ("heartbeat_min_s", 0, 3600),
        ("keepalive_s", 5, 3600),
        ("outbox_capacity", 1, 100000),
        ("battery_awake_max_s", 2, 300),
        ("battery_beat_s", 60, 604800),
        ("battery_beat_wakes", 1, 100000),
        ("battery_retry_s", 60, 86400),
    )
    for k, lo, hi in checks:
        v = cfg[k]
        if not (isinstance(v, int) and lo <= v <= hi):
            raise ConfigError("%s must be an integer in %d..%d" % (k, lo, hi))
    if cfg["power_mode"] not in POWER_MODES:
        raise ConfigError("power_mode must be mains or battery")
    if not isinstance(cfg["broker_host"], str) or not cfg["broker_host"]:
        raise ConfigError("broker_host must be a host name or address")
    return cfg


def load(path):
    try:
        with open(path) as f:
            raw = json.load(f)
    except OSError:
        raise ConfigError("no configuration at " + path + ": provision this terminal")
    except ValueError:
        raise ConfigError("configuration at " + path + " is not valid JSON")
    return validate(raw)
