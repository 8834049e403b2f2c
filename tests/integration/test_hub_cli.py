"""`sipas-hub run` as a technician starts it on the office's Pi."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def run_hub(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "SIPAS_HUB_DATA_DIR": str(tmp_path),
        "SIPAS_HUB_OFFICE": "office-test",
        "PYTHONPATH": str(ROOT),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", "run"],
        capture_output=True,
        text=True,
        timeout=60,
        env=full,
        cwd=tmp_path,
    )


def test_run_says_clearly_when_the_mqtt_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run_hub(tmp_path, SIPAS_HUB_MQTT_PORT=str(port), SIPAS_HUB_API_TOKEN="x" * 24)
    assert proc.returncode == 3
    assert f"port {port}" in proc.stderr and "already in use" in proc.stderr


def test_run_refuses_to_start_without_an_api_token(tmp_path: Path) -> None:
    proc = run_hub(tmp_path)
    assert proc.returncode == 2 and "SIPAS_HUB_API_TOKEN" in proc.stderr


def test_run_refuses_placeholder_secrets(tmp_path: Path) -> None:
    proc = run_hub(tmp_path, SIPAS_HUB_API_TOKEN="changeme")
    assert proc.returncode == 2 and "placeholder" in proc.stderr
