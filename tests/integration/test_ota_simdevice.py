"""provisioning.simdevice: a device root installed from the firmware tree or from a bundle (a device
bundle's .mpy files are replaced by its sources for the simulator), booted in a child process that
runs the root's own code, rebooted after a reset or a power cut."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from provisioning.bundle import build_bundle
from provisioning.simdevice import SimDevice, SimDeviceError, install
from provisioning.simulate import FIRMWARE_DIR

pytestmark = pytest.mark.integration

DEVICE = {
    "terminal_id": "t-0123456789ab", "office": "office-test", "epoch": 1, "hub_key": "11" * 32,
    "district_key": "22" * 32, "broker_host": "127.0.0.1", "mqtt_password": "x",
}  # fmt: skip


def test_a_device_bundle_boots_from_its_sources_and_runs_the_roots_own_code(tmp_path: Path) -> None:
    fw = tmp_path / "firmware"
    shutil.copytree(FIRMWARE_DIR, fw, ignore=shutil.ignore_patterns("__pycache__"))
    app_py = fw / "app" / "app.py"
    app_py.write_text(app_py.read_text().replace('FW_VERSION = "0.2.0"', 'FW_VERSION = "7.7.7"'))
    bundle = tmp_path / "bundle"
    build_bundle(bundle, config=DEVICE, firmware_dir=fw, compiled=True)  # .mpy + sources
    root = install(tmp_path / "flash", bundle=bundle)
    assert sorted(p.name for p in root.iterdir()) == [
        "app", "boot.py", "config.json", "main.py", "ota_boot.py", "ota_count"
    ]  # fmt: skip
    assert all(p.suffix == ".py" for p in (root / "app").iterdir())
    cfg = json.loads((root / "config.json").read_text())
    assert cfg["outbox_dir"] == str(root.resolve() / "outbox")  # the outbox is in the root
    with SimDevice(root, network=False, crash_delay_s=0.1) as dev:
        assert dev.wait_ready()["fw"] == "7.7.7"  # the root's app/, not firmware/
        assert dev.press(2) == 1
        dev.power_cut()
        info = dev.wait_ready()
        assert info["depth"] == 1 and [b["bootfail"] for b in dev.boots] == [1, 2]
    assert [life.code for life in dev.lives] == [-9, 0]


def test_an_altered_bundle_is_not_installed(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    build_bundle(bundle, config=None, firmware_dir=FIRMWARE_DIR, compiled=False)
    with open(bundle / "app" / "codec.py", "a") as f:
        f.write("# changed\n")
    with pytest.raises(SimDeviceError, match="app/codec.py does not match the manifest"):
        install(tmp_path / "flash", bundle=bundle, config=DEVICE)
    with pytest.raises(SimDeviceError, match="no configuration"):
        install(tmp_path / "flash2", firmware_dir=FIRMWARE_DIR)


def test_an_install_raises_the_update_counter_and_never_lowers_it(tmp_path: Path) -> None:
    """As ``sipas-provision deploy`` does on a board: update commands signed before an install
    are refused (firmware/app/ota.py reads /ota_count), even on a root whose flash was wiped."""
    before = int(time.time())
    root = install(tmp_path / "flash", config=DEVICE)
    n = int((root / "ota_count").read_text())
    assert before - 1 <= n <= int(time.time()) - 1  # the clock, one second back
    assert not (root / "ota_count.tmp").exists()
    (root / "ota_count").write_text("4000000000")  # signed by a hub whose clock ran ahead
    install(root, config=DEVICE)
    assert (root / "ota_count").read_text() == "4000000000"  # kept: never lowered
    (root / "ota_count").write_text("1700000000")  # an older count
    install(root, config=DEVICE)
    assert int((root / "ota_count").read_text()) >= n  # raised to the clock


def test_a_reset_boots_it_again_and_a_crash_counts_as_a_failed_boot(tmp_path: Path) -> None:
    root = install(tmp_path / "flash", config=DEVICE)
    with open(root / "app" / "start.py", "a") as f:
        f.write('\nraise RuntimeError("broken on purpose")\n')
    with SimDevice(root, crash_delay_s=0.05) as dev:
        dev.wait_line("crash RuntimeError: broken on purpose")
        dev.wait_for(lambda: len(dev.boots) >= 4, 20, "four boots")
        assert [b["safe_mode"] for b in dev.boots[:4]] == [False, False, False, True]
    assert all(life.code == 75 for life in dev.lives[:3]), [life.code for life in dev.lives]
