"""Replay and downgrade protection of the terminal's ``update`` command (firmware/app/ota.py,
docs/protocol.md "Replay and downgrade"), under real MicroPython (wasm) and CPython.

The commands are signed by the hub's own code (``hub.firmware.update_signature2``), so the hub and
the firmware are checked against each other. A scenario runs the real ``commands.handle`` and
``ota_boot`` over a flash directory, with the HTTP socket as the only seam (this port has no socket
module). It shows that:

- a newer version is accepted, and its command is spent: the same command again (a replay, byte for
  byte), or an older one never delivered, is refused with the reason, before anything is downloaded;
- the spent count survives a reboot, the update's swap, a confirmation and a rollback;
- a version that is not newer than the running one is refused unless the hub signed it as a
  downgrade; a downgrade flag or a count added by a replayer breaks the signature and spends
  nothing; a signed downgrade is taken, and a newer version after it;
- a power cut (tests/mpy/power_cut.py) before any single filesystem operation of an update leaves
  the count either the old one or the new one (never torn), never lets the update take effect
  without spending the count, and a replay is refused once the power is back.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from hub.firmware import update_signature2
from tests.fixtures.scripts import run_cpython, with_helpers

pytestmark = pytest.mark.unit

HUB_KEY = bytes.fromhex("11" * 32)
TID = "t-0123456789ab"
URL = "http://192.168.1.10:8080/fw/"
C1 = 1_795_000_000  # the hub's counts: Unix seconds when it signs, or above its last one
# The version order the terminal applies (docs/protocol.md): (a, b) -> (a newer than b, b than a)
ORDER = [
    (("0.2.0", "0.1.0"), (True, False)),
    (("0.10.0", "0.9.5"), (True, False)),  # numbers, not text
    (("1.0", "0.99.99"), (True, False)),
    (("0.2", "0.2.0"), (False, False)),  # the same version
    (("0.2.0", "0.2.0-rc2"), (True, False)),  # a release after its pre-releases
    (("0.2.0-rc10", "0.2.0-rc9"), (True, False)),
    (("0.9.0-e2e", "0.1.0"), (True, False)),
    (("0.1.0", "dev"), (True, False)),  # a version without numbers is older than any other
]


def bundle(version: str) -> tuple[dict[str, str], str]:
    """A small bundle's files (served path -> text) and its manifest."""
    app = {
        "app/start.py": f"# start of {version}\ndef run(root):\n    pass\n",
        "app/app.py": f'FW_VERSION = "{version}"\n',
    }
    manifest = json.dumps({"v": 1, "version": version, "app": [
        {"path": p, "sha256": hashlib.sha256(d.encode()).hexdigest(), "size": len(d)}
        for p, d in app.items()]})  # fmt: skip
    files = {f"{version}/{p}": d for p, d in app.items()}
    files[f"{version}/manifest.json"] = manifest
    return files, manifest


def command(version: str, count: int, downgrade: bool = False, **change: Any) -> dict[str, Any]:
    """The args the hub sends (sig2 by the hub's own function); ``change`` is a replayer's edit."""
    _, manifest = bundle(version)
    args: dict[str, Any] = {
        "version": version,
        "url": f"{URL}{version}/",
        "count": count,
        "sig2": update_signature2(HUB_KEY, TID, manifest.encode(), count, downgrade),
    }
    if downgrade:
        args["downgrade"] = True
    args.update(change)
    return args


def scenario_data() -> str:
    files: dict[str, str] = {}
    for v in ("0.3.0", "0.0.9", "0.2.0"):
        files.update(bundle(v)[0])
    cmds = {
        "up1": command("0.3.0", C1),
        "stale": command("0.3.0", C1 - 50),  # signed earlier, never delivered, captured
        "older": command("0.0.9", C1 + 1),
        "same": command("0.2.0", C1 + 2),
        "forged_flag": command("0.0.9", C1 + 1) | {"downgrade": True},  # added to a capture
        "forged_count": command("0.3.0", C1) | {"count": C1 + 1000},
        "down": command("0.0.9", C1 + 3, downgrade=True),
        "up2": command("0.3.0", C1 + 4),
        "legacy": {"version": "0.3.0", "url": f"{URL}0.3.0/", "sig": "00" * 32},
        "cut": command("0.3.0", C1 + 100),
    }
    return json.dumps({"files": files, "cmds": cmds, "c1": C1, "pairs": [p for p, _ in ORDER]})


SCENARIO = """
import json, os
import ota_boot
import power_cut
from app import commands, config, ota
from app.app import App, FW_VERSION

D = json.loads(DATA_JSON)
FILES, CMDS, C1 = D["files"], D["cmds"], D["c1"]
REQUESTS = []
real_open = open


class Sock:  # the socket seam: serves FILES under /fw/
    data = b""
    def settimeout(self, t):
        pass
    def sendall(self, b):
        path = b.split(b" ")[1].decode()[4:]
        REQUESTS.append(path)
        body = FILES.get(path)
        if body is None:
            self.data = b"HTTP/1.0 404 Not Found\\r\\nContent-Length: 0\\r\\n\\r\\n"
        else:
            body = body.encode()
            head = "HTTP/1.0 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(body)
            self.data = head.encode() + body
    def recv(self, n):
        out, self.data = self.data[:n], self.data[n:]
        return out
    def close(self):
        pass


class Board:
    t = 0
    def ticks_ms(self): return self.t
    def ticks_diff(self, a, b): return a - b
    def ticks_add(self, a, b): return a + b
    def feed_watchdog(self): pass
    def read_presses(self): return []
    def open_socket(self, host, port, timeout, idle=None):
        return Sock()


def make_root(r):
    os.mkdir(r)
    os.mkdir(r + "/app")
    with real_open(r + "/app/start.py", "w") as f:
        f.write("# the running version\\n")


def boot(r):
    # A reboot: the fixed boot code, then a fresh application reading the flash.
    ota_boot.boot(r)
    cfg = config.validate({"terminal_id": "t-0123456789ab", "office": "office-test", "epoch": 1,
                           "hub_key": "11" * 32, "district_key": "22" * 32, "broker_host": "hub",
                           "mqtt_password": "pw", "outbox_dir": r + "/outbox"})
    return App(cfg, Board(), config_path=r + "/config.json", root=r)


def settle(r):
    # Reboot into a staged update and let it confirm (as its first heartbeat would).
    app = boot(r)
    if app.ota == "trial":
        ota_boot.confirm(r, "x")
        app = boot(r)
    return app


N = [0]
def send(app, name, args=None):
    N[0] += 1
    msg = {"v": 1, "id": "u-%d" % N[0], "cmd": "update", "args": args or CMDS[name]}
    before = len(REQUESTS)
    reply = commands.handle(app, msg)
    reply["downloads"] = len(REQUESTS) - before
    reply["count_now"] = ota.last_count(app.root)
    return reply


out = {"fw": FW_VERSION}
out["order"] = [[ota.newer(a, b), ota.newer(b, a)] for a, b in D["pairs"]]
r = "/".join([os.getcwd().rstrip("/"), "life"])
make_root(r)
app = boot(r)
steps = out["life"] = []
steps.append(["up1", send(app, "up1")])
app = settle(r)  # reboot, swap, trial, confirmation, reboot
steps.append(["after reboot and swap", {"count_now": ota.last_count(r), "ota": app.ota}])
for name in ("up1", "stale", "older", "same", "forged_flag", "forged_count", "legacy"):
    steps.append([name, send(app, name)])
steps.append(["down", send(app, "down")])
app = settle(r)
steps.append(["up2", send(app, "up2")])
for _ in range(4):  # that version never confirms: three trial boots, then the rollback
    app = boot(r)
steps.append(["after rollback", {"count_now": ota.last_count(r), "ota": app.ota,
                                 "state": ota_boot.read_state(r)}])
steps.append(["up2 again", send(app, "up2")])

cuts = out["cuts"] = []
budget = 0
while budget < 100:
    r = "/".join([os.getcwd().rstrip("/"), "cut%d" % budget])
    make_root(r)
    ota.save_count(r, C1)
    app = boot(r)
    done, reply, _ = power_cut.run(budget, (ota, ota_boot), send, app, "cut")
    if done:
        out["cut_ops"] = budget
        out["uncut"] = reply
        break
    with real_open(r + "/ota_count") as f:
        raw = f.read()
    row = {"raw": raw, "files": sorted(os.listdir(r))}  # as the cut left the flash
    app = settle(r)  # the power is back
    row["again"] = send(app, "cut")  # the same command once more (the hub's, or a replay)
    app = settle(r)
    row["replay"] = send(app, "cut")
    cuts.append(row)
    budget += 1
print(json.dumps(out))
"""


def script() -> str:
    """The scenario with its data, and the power-cut flash (tests/mpy/power_cut.py) to import."""
    return with_helpers(SCENARIO.replace("DATA_JSON", repr(scenario_data())), "power_cut")


def check(r: dict[str, Any]) -> None:
    assert r["fw"] == "0.2.0"  # the version the scenario's terminal runs
    assert r["order"] == [list(expect) for _, expect in ORDER]
    steps = r["life"]
    up1 = steps[0][1]
    assert up1["ok"] is True and up1["staged"] == "0.3.0" and up1["count_now"] == C1
    assert up1["downloads"] == 3  # the manifest and two files
    assert steps[1] == ["after reboot and swap", {"count_now": C1, "ota": "ok"}]

    replies = {name: reply for name, reply in steps[2:9]}
    replay = f"replayed or outdated command: count {C1}, last accepted {C1}"
    assert replies["up1"]["ok"] is False and replies["up1"]["error"] == replay
    assert replies["stale"]["error"] == (
        f"replayed or outdated command: count {C1 - 50}, last accepted {C1}"
    )
    assert replies["older"]["error"] == (
        "0.0.9 is not newer than the running 0.2.0: a downgrade or reinstall must be signed as "
        "one (sipas-hub terminals update --allow-downgrade)"
    )
    assert replies["same"]["error"].startswith("0.2.0 is not newer than the running 0.2.0")
    assert replies["forged_flag"]["error"] == "bad signature on manifest.json"
    assert replies["forged_count"]["error"] == "bad signature on manifest.json"
    assert replies["legacy"]["error"].startswith("no signed count (count, sig2)")
    for name, reply in replies.items():
        assert reply["ok"] is False and reply["count_now"] == C1, name  # nothing was spent
        assert reply["last_count"] == C1, name  # the hub learns where to sign above
        assert "staged" not in reply, name
    # refused before any download, except where only the signature can tell
    assert {n: x["downloads"] for n, x in replies.items()} == {
        "up1": 0, "stale": 0, "older": 0, "same": 0, "forged_flag": 1, "forged_count": 1,
        "legacy": 0,
    }  # fmt: skip

    down = steps[9][1]
    assert (down["ok"], down.get("staged"), down["count_now"]) == (True, "0.0.9", C1 + 3)
    up2 = steps[10][1]
    assert (up2["ok"], up2.get("staged"), up2["count_now"]) == (True, "0.3.0", C1 + 4)
    after = steps[11][1]
    assert after["ota"] == "rolled_back" and after["count_now"] == C1 + 4
    assert after["state"]["state"] == "rolled_back"
    again = steps[12][1]
    assert again["ok"] is False and again["downloads"] == 0
    assert again["error"] == f"replayed or outdated command: count {C1 + 4}, last accepted {C1 + 4}"

    # power cuts before every filesystem operation of the update
    assert r["uncut"]["ok"] is True and r["uncut"]["count_now"] == C1 + 100
    assert r["cut_ops"] >= 9  # the count's 3, a directory, 2 files x 2, the state's 3
    assert len(r["cuts"]) == r["cut_ops"]
    new = str(C1 + 100)
    for n, row in enumerate(r["cuts"]):
        where = f"power cut before operation {n}: {row}"
        assert row["raw"] in (str(C1), new), where  # never torn, never lost
        if "app.new" in row["files"]:  # nothing is downloaded before the count is spent
            assert row["raw"] == new, where
        if row["raw"] == new:  # spent: the same command is refused from now on
            assert row["again"]["ok"] is False, where
            assert row["again"]["error"].startswith("replayed or outdated command"), where
        else:  # cut before it was spent: nothing was staged, the hub's command still works once
            assert row["again"]["ok"] is True and row["again"]["count_now"] == C1 + 100, where
        assert row["replay"]["ok"] is False, where
        assert row["replay"]["error"] == (
            f"replayed or outdated command: count {new}, last accepted {new}"
        ), where
    # the count's temporary file, its bytes, the rename: the old count until the rename
    assert [row["raw"] for row in r["cuts"]][:3] == [str(C1)] * 3
    assert all(row["raw"] == new for row in r["cuts"][3:])
    assert any("app.new" in row["files"] for row in r["cuts"])  # cuts in the download too


def test_replay_and_downgrade_under_cpython(tmp_path: Path) -> None:
    check(json.loads(run_cpython(script(), tmp_path).strip().splitlines()[-1]))


@pytest.mark.integration
def test_replay_and_downgrade_under_micropython(micropython) -> None:  # type: ignore[no-untyped-def]
    check(json.loads(micropython.run(script()).strip().splitlines()[-1]))
