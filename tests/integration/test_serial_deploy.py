"""``sipas-provision deploy`` through the real mpremote and pyserial code, against the stand-in
ESP32 on a pseudo-terminal (tests/fixtures/fake_esp32.py): only changed files travel, each is
checked by sha256 on the board, stale /app files go, the board is reset, a damaged copy is caught."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import serial
from typer.testing import CliRunner

from provisioning.bundle import build_bundle
from provisioning.cli import app
from tests.fixtures.fake_esp32 import FakeESP32

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
