"""The fixed boot code (firmware/ota_boot.py) under real MicroPython (wasm): its filesystem is
writable, so the same swap, rollback and power-cut sweep as tests/unit/test_ota_boot.py runs there,
against MicroPython's own os (its errno values differ from CPython's: ENOENT is 44 in this port).
The power cuts come from tests/mpy/power_cut.py, shared with tests/unit/test_ota_replay.py."""

from __future__ import annotations

import json

import pytest

from tests.fixtures.scripts import with_helpers

pytestmark = pytest.mark.integration

SCENARIO = """
import json, os
import ota_boot
import power_cut

FILES = ("__init__.py", "app.py", "start.py")
real_open = open

def exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False

def write_app(d, v):
    os.mkdir(d)
    for n in FILES:
        with real_open(d + "/" + n, "w") as f:
            f.write("# " + v + " " + n + "\\n" + "x = 1\\n" * 20)

def version_of(d):
    if not exists(d):
        return None
    names = sorted(os.listdir(d))
    vs = []
    for n in names:
        with real_open(d + "/" + n) as f:
            t = f.read()
        vs.append(t.split()[1] if len(t) > 100 else "partial")
    if names != sorted(FILES) or len(set(vs)) != 1:
        return "mixed"
    return vs[0]

def layout(r):
    return [version_of(r + "/" + n) for n in ("app", "app.new", "app.old", "app.bad")]

def state(r):
    with real_open(r + "/ota.json") as f:
        return json.loads(f.read())

def staged(r):
    write_app(r + "/app", "v1")
    write_app(r + "/app.new", "v2")
    with real_open(r + "/ota.json", "w") as f:
        f.write('{"state": "staged", "version": "v2", "from": "v1"}')

def on_trial(r, tries):
    write_app(r + "/app", "v2")
    write_app(r + "/app.old", "v1")
    with real_open(r + "/ota.json", "w") as f:
        f.write(json.dumps({"state": "trial", "version": "v2", "from": "v1", "tries": tries}))

out = {"swap": [], "rollback": [], "lifecycle": [], "safe": []}
for kind, prepare in (("swap", staged), ("rollback", lambda r: on_trial(r, 3))):
    for budget in range(100):
        r = "/scratch/%s%d" % (kind, budget)
        os.mkdir(r)
        prepare(r)
        done, _, ops = power_cut.run(budget, (ota_boot,), ota_boot.boot, r)
        if done:
            out[kind + "_ops"] = ops
            break
        ota_boot.boot(r)
        out[kind].append([layout(r), state(r)])

r = "/scratch/life"
os.mkdir(r)
staged(r)
for _ in range(4):
    b = ota_boot.boot(r)
    out["lifecycle"].append([b["state"], b["tries"], layout(r)])
r = "/scratch/safe"
os.mkdir(r)
write_app(r + "/app", "v1")
out["safe"] = [ota_boot.boot(r)["safe_mode"] for _ in range(4)]
ota_boot.healthy(r)
out["safe"].append(ota_boot.boot(r)["safe_mode"])
print(json.dumps(out))
"""


def test_swap_rollback_and_power_cuts_under_micropython(micropython) -> None:
    r = json.loads(micropython.run(with_helpers(SCENARIO, "power_cut")).strip().splitlines()[-1])
    trial = {"state": "trial", "version": "v2", "from": "v1", "tries": 1}
    assert r["swap_ops"] >= 8 and len(r["swap"]) == r["swap_ops"]
    for n, (lay, st) in enumerate(r["swap"]):  # after a cut before operation n, and a new boot
        assert lay == ["v2", None, "v1", None] and st == trial, n
    rolled = {"state": "rolled_back", "version": "v2", "from": "v1"}
    assert r["rollback_ops"] >= 10 and len(r["rollback"]) == r["rollback_ops"]
    for n, (lay, st) in enumerate(r["rollback"]):
        assert lay == ["v1", None, None, None] and st == rolled, n
    assert r["lifecycle"] == [
        ["trial", 1, ["v2", None, "v1", None]],
        ["trial", 2, ["v2", None, "v1", None]],
        ["trial", 3, ["v2", None, "v1", None]],
        ["rolled_back", 0, ["v1", None, None, None]],
    ]
    assert r["safe"] == [False, False, False, True, False]


DOWNLOAD = """
import json
from app import config, ota
from app.app import App

FILES = json.loads(FILES_JSON)

class Sock:  # the socket seam: this port has no socket module
    def __init__(self, path):
        body = FILES.get(path)
        if body is None:
            self.data = b"HTTP/1.0 404 Not Found\\r\\nContent-Length: 0\\r\\n\\r\\n"
        else:
            body = body.encode()
            head = "HTTP/1.1 200 OK\\r\\nServer: x\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(body)
            self.data = head.encode() + body
        self.sent = b""
    def settimeout(self, t):
        pass
    def sendall(self, b):
        self.sent += b
        path = b.split(b" ")[1].decode()
        self.__init__(path[len("/fw/"):])
    def recv(self, n):
        out, self.data = self.data[:n], self.data[n:]
        return out
    def close(self):
        pass

class Board:
    t = 0
    fed = 0
    def ticks_ms(self): return self.t
    def ticks_diff(self, a, b): return a - b
    def ticks_add(self, a, b): return a + b
    def feed_watchdog(self): self.fed += 1
    def read_presses(self): return []
    def open_socket(self, host, port, timeout, idle=None):
        assert (host, port) == ("192.168.1.10", 8080)
        return Sock("")

cfg = config.validate({"terminal_id": "t-0123456789ab", "office": "office-test", "epoch": 1,
                       "hub_key": "11" * 32, "district_key": "22" * 32, "broker_host": "hub",
                       "mqtt_password": "pw", "outbox_dir": "ob"})
app = App(cfg, Board(), config_path="config.json", root=".")
url = "http://192.168.1.10:8080/fw/"
out = {}
out["bad_sig"] = ota.update(app, "u1", {"version": "0.3.0", "url": url, "count": 1,
                                         "sig2": "00" * 32})
good_start = FILES["app/start.py"]
FILES["app/start.py"] = good_start[:-1] + "#"  # same size, other bytes
out["bad_sha"] = ota.update(app, "u2", {"version": "0.3.0", "url": url, "count": 2,
                                         "sig2": SIGS[0]})
FILES["app/start.py"] = good_start
out["good"] = ota.update(app, "u3", {"version": "0.3.0", "url": url, "count": 3,
                                      "sig2": SIGS[1]})
import os
out["staged"] = sorted(os.listdir("app.new"))
out["state"] = json.loads(open("ota.json").read())
out["fed"] = app.board.fed
print(json.dumps(out))
"""


def test_update_download_and_checks_under_micropython(micropython) -> None:
    import hashlib
    import hmac

    files = {"app/start.py": "def run():\n    pass\n" * 40, "app/app.py": 'FW_VERSION = "0.3.0"\n'}
    manifest = {"v": 1, "version": "0.3.0", "app": [
        {"path": p, "sha256": hashlib.sha256(d.encode()).hexdigest(), "size": len(d)}
        for p, d in files.items()]}  # fmt: skip
    raw = json.dumps(manifest)
    sigs = [  # sig2 for counts 2 and 3: each command is accepted once (the bad sha256 spends 2)
        hmac.new(
            bytes.fromhex("11" * 32),
            b"SIPAS-U2t-0123456789ab\x00" + n.to_bytes(4, "little") + b"\x00" + raw.encode(),
            hashlib.sha256,
        ).hexdigest()
        for n in (2, 3)
    ]
    code = DOWNLOAD.replace("FILES_JSON", repr(json.dumps({**files, "manifest.json": raw})))
    r = json.loads(micropython.run(code.replace("SIGS", repr(sigs))).strip().splitlines()[-1])
    assert r["bad_sig"]["error"] == "bad signature on manifest.json"
    assert r["bad_sha"]["error"] == "app/start.py: sha256 mismatch"
    assert r["good"] == {"v": 1, "id": "u3", "ok": True, "staged": "0.3.0"}
    assert r["staged"] == ["app.py", "start.py"]
    assert r["state"] == {"state": "staged", "version": "0.3.0", "from": "0.2.0"}
    assert r["fed"] > 3
