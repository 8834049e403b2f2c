"""The house rules that tools can check: ruff (lint + format) over the tree, mypy on hub/ and
provisioning/, and no CPython-only imports in the firmware."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_ruff_lint() -> None:
    p = run("ruff", "check", ".")
    assert p.returncode == 0, p.stdout + p.stderr


def test_ruff_format() -> None:
    p = run("ruff", "format", "--check", ".")
    assert p.returncode == 0, "run `ruff format .`:\n" + p.stdout + p.stderr


def test_mypy() -> None:
    p = run("mypy")
    assert p.returncode == 0, p.stdout + p.stderr


CPYTHON_ONLY = re.compile(
    r"^\s*(from|import)\s+(typing|dataclasses|pathlib|logging|enum|abc|threading|subprocess|hmac)\b",
    re.M,
)


def test_firmware_imports_only_what_the_esp32_build_has() -> None:
    bad = []
    for f in sorted((ROOT / "firmware").rglob("*.py")):
        for m in CPYTHON_ONLY.finditer(f.read_text()):
            bad.append(f"{f.relative_to(ROOT)}: {m.group(0).strip()}")
    assert not bad, bad


def test_only_hal_touches_hardware() -> None:
    """The application reaches hardware only through app/hal.py; the fixed entry points boot.py
    and main.py also need machine (Timer, reset) because they must work when app/ is broken."""
    hw = re.compile(r"^\s*(from|import)\s+(machine|network|esp32)\b", re.M)
    users = sorted(
        str(f.relative_to(ROOT))
        for f in (ROOT / "firmware").rglob("*.py")
        if hw.search(f.read_text())
    )
    assert users == ["firmware/app/hal.py", "firmware/boot.py", "firmware/main.py"]
