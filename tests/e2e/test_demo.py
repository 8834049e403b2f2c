"""The README's main job: `sipas-hub demo` runs a hub, its Mosquitto and simulated terminals."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_demo_stores_ratings_from_simulated_terminals(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hub.cli",
            "demo",
            "--terminals",
            "2",
            "--interval",
            "0.2",
            "--duration",
            "4",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"COLUMNS": "120", "PATH": "/usr/bin:/bin:/usr/sbin"},
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    out = proc.stdout
    assert "API: http://127.0.0.1:" in out and "API token:" in out
    stored = int(re.search(r"Đã lưu (\d+) đánh giá", out).group(1))  # type: ignore[union-attr]
    assert stored >= 5
    assert (tmp_path / "hub.sqlite3").exists()
