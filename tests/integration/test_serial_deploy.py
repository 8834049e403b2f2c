"""``sipas-provision deploy`` through the real mpremote and pyserial code, against the stand-in
ESP32 on a pseudo-terminal (tests/fixtures/fake_esp32.py): only changed files travel, each is
checked by sha256 on the board, stale /app files go, the board is reset, a damaged copy is caught.

The update counter ``/ota_count`` is raised to the PC's clock (never lowered), so an update
command signed before the deploy (and captured) is refused by the firmware deployed, even on a
board whose flash was erased; the hub's next command is above it. The board-side code is also run
under real MicroPython (wasm)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
import serial
from sqlmodel import Session
from typer.testing import CliRunner

from hub.db import make_engine
from hub.firmware import next_update_count, update_signature2
from provisioning import otacount
from provisioning.bundle import build_bundle
from provisioning.cli import app
from tests.fixtures.fake_esp32 import FakeESP32
from tests.fixtures.scripts import run_cpython

pytestmark = pytest.mark.integration

CONFIG: dict[str, Any] = {
    "terminal_id": "t-24a1600b3c1d",
    "office": "office-test",
    "epoch": 1,
    "hub_key": "11" * 32,
    "district_key": "22" * 32,
    "broker_host": "127.0.0.1",
    "mqtt_password": "pw",
    "wifi_ssid": "office",
    "wifi_password": "wifi-pw",
}


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200", "NO_COLOR": "1"})


def bundle_files(bundle: Path) -> dict[str, bytes]:
    """What the board must hold: device path -> bytes, from the manifest."""
    m = json.loads((bundle / "manifest.json").read_text())
    entries = [*m["app"], *m["root"], *([m["config"]] if m.get("config") else [])]
    return {"/" + e["path"]: (bundle / e["path"]).read_bytes() for e in entries}


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    out = tmp_path / "bundle"
    build_bundle(out, config=CONFIG, compiled=False)
    return out


def test_pyserial_opens_the_stand_in_like_a_usb_port(fake_esp32: FakeESP32) -> None:
    with serial.Serial(fake_esp32.port, 115200, timeout=2) as port:
        port.write(b"\x02")  # Ctrl-B: the friendly REPL's banner
        seen = port.read_until(b">>> ")
    assert b"MicroPython v1.27.0" in seen and seen.endswith(b">>> ")


def test_first_deploy_copies_everything_and_cleans_up(fake_esp32: FakeESP32, bundle: Path) -> None:
    dev = fake_esp32
    (dev.root / "app").mkdir()
    (dev.root / "app" / "stale.py").write_text("print('old version')\n")
    (dev.root / "app.new").mkdir()  # a half-downloaded over-the-air update
    (dev.root / "app.new" / "app.py").write_text("x = 1\n")
    (dev.root / "ota.json").write_text('{"state": "staged", "version": "9.9.9"}')
    (dev.root / "outbox").mkdir()
    (dev.root / "outbox" / "state").write_bytes(b"keep me")  # ratings: never touched

    r = cli("deploy", str(bundle), "--port", dev.port)

    assert r.exit_code == 0, r.output
    wanted = bundle_files(bundle)
    files = dev.files()
    for path, body in wanted.items():
        assert files[path] == body, path
    assert sorted(r.stdout.split()) == sorted(wanted)  # every file copied, listed on stdout
    assert "/app/stale.py" not in files
    assert not (dev.root / "app.new").exists() and "/ota.json" not in files
    assert files["/outbox/state"] == b"keep me"
    assert not [p for p in files if p.endswith(".sipas-new")]
    assert "1 removed" in r.stderr and "over-the-air update in progress was cancelled" in r.stderr
    assert dev.wait_for_resets(1) == 1  # machine.reset(): the board restarted
    # sha256 was computed on the board for every file copied (the check after the copy)
    hashed = [c for c in dev.executed if "hashlib.sha256()" in c]
    assert len(hashed) >= len(wanted) + 1


def test_second_deploy_copies_nothing_and_a_changed_file_alone_travels(
    fake_esp32: FakeESP32, bundle: Path, tmp_path: Path
) -> None:
    dev = fake_esp32
    assert cli("deploy", str(bundle), "--port", dev.port).exit_code == 0
    writes_before = sum("f=open(" in c and "'wb'" in c for c in dev.executed)

    again = cli("deploy", str(bundle), "--port", dev.port)
    assert again.exit_code == 0, again.output
    assert again.stdout.strip() == ""
    assert "0 copied" in again.stderr
    assert sum("f=open(" in c and "'wb'" in c for c in dev.executed) == writes_before
    assert dev.wait_for_resets(2) == 2

    other = tmp_path / "bundle2"
    build_bundle(other, config={**CONFIG, "wifi_ssid": "office-5g"}, compiled=False)
    changed = cli("deploy", str(other), "--port", dev.port)
    assert changed.exit_code == 0, changed.output
    assert changed.stdout.split() == ["/config.json"]
    assert json.loads(dev.files()["/config.json"])["wifi_ssid"] == "office-5g"


def test_a_damaged_copy_is_detected_and_the_old_file_kept(
    fake_esp32: FakeESP32, bundle: Path, tmp_path: Path
) -> None:
    dev = fake_esp32
    assert cli("deploy", str(bundle), "--port", dev.port).exit_code == 0
    before = dev.files()["/config.json"]
    other = tmp_path / "bundle2"
    build_bundle(other, config={**CONFIG, "epoch": 2}, compiled=False)
    dev.corrupt_next_write("/config.json.sipas-new")  # one bit flips on the way to flash

    r = cli("deploy", str(other), "--port", dev.port)

    assert r.exit_code == 5
    assert "/config.json arrived damaged on the board" in r.stderr
    assert "change the USB cable" in r.stderr
    files = dev.files()
    assert files["/config.json"] == before  # the good old copy is still there
    assert "/config.json.sipas-new" not in files
    assert dev.wait_for_resets(2, timeout=0.5) == 1  # no reset after a failed deploy
    # and the next attempt (a good cable) completes
    ok = cli("deploy", str(other), "--port", dev.port)
    assert ok.exit_code == 0, ok.output
    sha = hashlib.sha256(dev.files()["/config.json"]).hexdigest()
    assert sha == json.loads((other / "manifest.json").read_text())["config"]["sha256"]


def test_deploy_refuses_an_altered_bundle_before_touching_the_board(
    fake_esp32: FakeESP32, bundle: Path
) -> None:
    (bundle / "app" / "app.py").write_text("# edited by hand\n")
    r = cli("deploy", str(bundle), "--port", fake_esp32.port)
    assert r.exit_code == 5
    assert "app/app.py does not match the manifest" in r.stderr
    assert "Build the bundle again" in r.stderr
    assert fake_esp32.executed == []


def test_deploy_to_a_port_without_micropython_says_what_to_do(tmp_path: Path, bundle: Path) -> None:
    import os
    import tty

    master, slave = os.openpty()  # a port where nothing answers (a board without MicroPython)
    tty.setraw(slave)
    try:
        r = cli("deploy", str(bundle), "--port", os.ttyname(slave))
    finally:
        os.close(master)
        os.close(slave)
    assert r.exit_code == 5
    assert "no MicroPython prompt" in r.stderr and "flash-micropython" in r.stderr


# -- the update counter (/ota_count) -----------------------------------------------------------
# The firmware's own update logic (firmware/app/ota.py through commands.handle) on a flash root:
# the counter it holds, and its reply to each command of COMMANDS. The board's network is down, so
# a command that passes every check before the download ends with "cannot reach".
FIRMWARE_CHECK = """
import json
from app import commands, config, ota
import app.app as app_module
from app.app import App

class Board:
    t = 0
    def ticks_ms(self): return self.t
    def ticks_diff(self, a, b): return a - b
    def ticks_add(self, a, b): return a + b
    def feed_watchdog(self): pass
    def read_presses(self): return []
    def open_socket(self, host, port, timeout, idle=None):
        raise OSError("no network here")

cfg = json.loads(CONFIG_JSON)
cfg["outbox_dir"] = "outbox"
terminal = App(config.validate(cfg), Board(), config_path="config.json", root=ROOT)
fw_file = getattr(app_module, "__file__", "")
out = {"fw_file": fw_file, "last": ota.last_count(ROOT), "replies": {}}
for name, args in json.loads(COMMANDS_JSON).items():
    reply = commands.handle(terminal, {"v": 1, "id": "u-" + name, "cmd": "update", "args": args})
    out["replies"][name] = [reply.get("ok"), reply.get("error"), ota.last_count(ROOT)]
print(json.dumps(out))
"""


def firmware_check(root: str, commands: dict[str, Any]) -> str:
    return (
        FIRMWARE_CHECK.replace("CONFIG_JSON", repr(json.dumps(CONFIG)))
        .replace("COMMANDS_JSON", repr(json.dumps(commands)))
        .replace("ROOT", repr(root))
    )


def update_args(count: int, version: str = "9.0.0") -> dict[str, Any]:
    """An update command's args as the hub signs them (its own function) for CONFIG's terminal."""
    manifest = json.dumps({"v": 1, "version": version, "app": []}).encode()
    key = bytes.fromhex(CONFIG["hub_key"])
    return {
        "version": version,
        "url": "http://192.168.1.10:8080/api/v1/firmware/9.0.0/",
        "count": count,
        "sig2": update_signature2(key, CONFIG["terminal_id"], manifest, count, False),
    }


def hub_next_count(tmp_path: Path) -> int:
    """The count a hub that never updated this terminal signs its first command with."""
    engine = make_engine(f"sqlite:///{tmp_path / 'hub.db'}")
    with Session(engine) as s:
        return next_update_count(s, CONFIG["terminal_id"])


def test_deploy_writes_the_update_counter_and_an_update_signed_before_is_refused(
    fake_esp32: FakeESP32, bundle: Path, tmp_path: Path
) -> None:
    dev = fake_esp32  # a board whose flash was just erased: no /ota_count
    # signed for this terminal an hour before it was provisioned, captured, never delivered
    captured = update_args(int(time.time()) - 3600)
    before = int(time.time())
    r = cli("deploy", str(bundle), "--port", dev.port, "--no-reset")
    after = int(time.time())

    assert r.exit_code == 0, r.output
    files = dev.files()
    n = int(files["/ota_count"])  # decimal text, as firmware/app/ota.py reads it
    assert before - 1 <= n <= after - 1  # the clock, one second back (the hub's own second)
    assert "/ota_count.tmp" not in files  # written aside, then renamed over
    assert f"/ota_count {n}" in r.stderr
    assert sorted(r.stdout.split()) == sorted(bundle_files(bundle))  # not a bundle file

    # The firmware deployed on the board, run over its flash: the captured command is refused
    # before anything is downloaded; the hub's first real command passes the count check.
    check_dir = tmp_path / "check"
    check_dir.mkdir()
    root = str(dev.root)
    cmds = {"captured": captured, "hub": update_args(hub_next_count(tmp_path))}
    code = f"import sys\nsys.path.insert(0, {root!r})\n" + firmware_check(root, cmds)
    got = json.loads(run_cpython(code, check_dir).strip().splitlines()[-1])
    assert got["fw_file"].startswith(root)  # the board's copy, not the checkout's firmware/
    assert got["last"] == n
    replies = got["replies"]
    assert replies["captured"] == [
        False,
        f"replayed or outdated command: count {captured['count']}, last accepted {n}",
        n,
    ]
    assert replies["hub"][0] is False and replies["hub"][2] == n
    assert replies["hub"][1].startswith("cannot reach 192.168.1.10:8080")

    # Without the counter (a board erased and loaded by hand), the captured command would go on
    # to the download: what the deploy's counter prevents.
    (dev.root / "ota_count").unlink()
    got = json.loads(run_cpython(code, check_dir).strip().splitlines()[-1])
    assert got["last"] == 0
    assert got["replies"]["captured"][1].startswith("cannot reach 192.168.1.10:8080")


@pytest.mark.parametrize(
    ("held", "kept"),
    [
        ("4000000000", True),  # signed by a hub whose clock ran ahead: never lowered
        ("1700000000", False),  # an older count: raised to the clock
        ("garbage", False),  # unreadable (the firmware reads it as 0): written
    ],
)
def test_deploy_keeps_a_higher_update_counter_and_raises_a_lower_one(
    fake_esp32: FakeESP32, bundle: Path, held: str, kept: bool
) -> None:
    dev = fake_esp32
    (dev.root / "ota_count").write_text(held)
    before = int(time.time())
    r = cli("deploy", str(bundle), "--port", dev.port, "--no-reset")
    assert r.exit_code == 0, r.output
    now = dev.files()["/ota_count"].decode()
    if kept:
        assert now == held
        assert (
            f"/ota_count kept at {held} (the board's, not below this computer's clock)" in r.stderr
        )
    else:
        assert before - 1 <= int(now) <= int(time.time()) - 1
        assert f"removed; /ota_count {now}" in r.stderr
    # a second deploy never lowers what the first left
    again = cli("deploy", str(bundle), "--port", dev.port, "--no-reset")
    assert again.exit_code == 0, again.output
    assert int(dev.files()["/ota_count"]) >= int(now)


def test_the_board_side_counter_code_under_micropython(micropython) -> None:  # type: ignore[no-untyped-def]
    """The code deploy sends to the board, on real MicroPython, then the firmware's own check."""
    n = otacount.count_now()
    seed = otacount.seed_code("ota_count", n)
    script = (
        seed  # a fresh flash: written
        + f"print(json.dumps(_sipas_seed('ota_count', {n - 100})))\n"  # lower: kept
        + seed  # the same again: nothing to do
        + firmware_check(".", {"captured": update_args(n - 3600), "same": update_args(n)})
    )
    lines = micropython.run(script).strip().splitlines()
    assert [json.loads(x) for x in lines[:3]] == [[n, True], [n, False], [n, False]]
    got = json.loads(lines[-1])
    assert got["last"] == n
    assert got["replies"]["captured"] == [
        False, f"replayed or outdated command: count {n - 3600}, last accepted {n}", n
    ]  # fmt: skip
    assert (
        got["replies"]["same"][1] == f"replayed or outdated command: count {n}, last accepted {n}"
    )


def test_deploy_refuses_to_take_the_counter_from_a_clock_that_is_wrong(
    fake_esp32: FakeESP32, bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(time, "time", lambda: 86400.0 * 365)  # a PC that thinks it is 1971
    r = cli("deploy", str(bundle), "--port", fake_esp32.port)
    assert r.exit_code == 5
    assert "this computer's clock says 01/01/1971" in r.stderr and "set it" in r.stderr
    assert fake_esp32.executed == []  # nothing was written to the board
