"""`sipas-provision simulate BUNDLE` lays a terminal's bundle out as a simulated flash; its
config.json carries the terminal's hub key, district key, MQTT password and Wi-Fi password, so it
must be as private as the record and the bundle it came from (mode 0600), not readable by every
user of the technician's PC."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from provisioning.simdevice import install

pytestmark = pytest.mark.unit

DEVICE = {
    "terminal_id": "t-0123456789ab", "office": "office-test", "epoch": 1, "hub_key": "11" * 32,
    "district_key": "22" * 32, "broker_host": "127.0.0.1", "mqtt_password": "secret-pw",
    "wifi_ssid": "office", "wifi_password": "wifi-secret",
}  # fmt: skip


def test_simulated_flash_keeps_the_terminal_secrets_private(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask: files readable by everyone unless told otherwise
    try:
        root = install(tmp_path / "sim-terminal", config=DEVICE)
        again = install(root, config=DEVICE)  # a second run over the same root
    finally:
        os.umask(old)
    cfg = again / "config.json"
    assert "wifi-secret" in cfg.read_text()
    assert stat.S_IMODE(cfg.stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE(root.stat().st_mode) & 0o077 == 0
