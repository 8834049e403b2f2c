"""The battery-life calculator (hardware/power_budget.py) against hand-computed cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hardware.power_budget import Params, daily_mah, life_days, main, wake_mah

pytestmark = pytest.mark.unit

# 400 ms of boot at 50 mA, then 1.5 s of association + the work at 120 mA; 1,000 mAh all usable
P = Params(press_ms=100, beat_ms=300, boot_ms=400, boot_ma=50, assoc_ms=1500, radio_ma=120,
           beat_s=21600, beat_wakes=50, capacity_mah=1000, usable=1.0)  # fmt: skip


def test_one_wake() -> None:
    # press: 0.4 s x 50 mA + 1.6 s x 120 mA = 20 + 192 = 212 mA.s = 212 / 3600 mAh
    assert wake_mah(P, P.press_ms) == pytest.approx(212 / 3600)
    # heartbeat wake: 20 + 1.8 x 120 = 236 mA.s
    assert wake_mah(P, P.beat_ms) == pytest.approx(236 / 3600)


def test_a_bare_module_at_100_presses_a_day() -> None:
    d = daily_mah(P, sleep_ua=10, presses_per_day=100)
    assert d["sleep"] == pytest.approx(0.24)  # 10 µA x 24 h
    assert d["presses"] == pytest.approx(100 * 212 / 3600)  # 5.8889 mAh
    assert d["heartbeat_wakes"] == pytest.approx(4 * 236 / 3600)  # every 6 h: 0.2622 mAh
    assert d["heartbeats_on_presses"] == 0  # 100 / 50 = 2 a day, fewer than the timer's 4
    assert d["total"] == pytest.approx(6.39111, rel=1e-5)
    assert life_days(P, 10, 100) == pytest.approx(1000 / 6.39111, rel=1e-5)  # 156.5 days


def test_heartbeats_riding_on_presses() -> None:
    p = Params(**{**P.__dict__, "beat_wakes": 10})
    d = daily_mah(p, sleep_ua=10, presses_per_day=100)
    # 10 heartbeats a day from presses, 4 from the timer: 6 more, each 200 ms longer at 120 mA
    assert d["heartbeats_on_presses"] == pytest.approx(6 * 0.2 * 120 / 3600)  # 0.04 mAh
    assert d["total"] == pytest.approx(6.43111, rel=1e-5)


def test_a_devkit_board_is_dominated_by_its_sleep_current() -> None:
    d = daily_mah(P, sleep_ua=3800, presses_per_day=0)
    assert d["sleep"] == pytest.approx(91.2)  # 3.8 mA x 24 h
    assert life_days(P, 3800, 0) == pytest.approx(1000 / (91.2 + 4 * 236 / 3600), rel=1e-5)
    assert life_days(P, 3800, 0) < 11  # days, on one 1,000 mAh cell


def test_cli_reads_the_bench_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wake = {"press": {"wake_to_sleep_ms": {"p50": 100}},
            "press_with_heartbeat": {"wake_to_sleep_ms": {"p50": 300}}}  # fmt: skip
    f = tmp_path / "wake.json"
    f.write_text(json.dumps(wake))
    args = ["--wake-json", str(f), "--capacity-mah", "1000", "--usable", "1", "--presses", "100"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"]["press_ms"] == 100 and out["params"]["beat_ms"] == 300
    bare = [r for r in out["rows"] if r["board"].startswith("bare module")]
    # 10 + 1.6 + 18.5 µA asleep: 30.1 µA x 24 h = 0.7224 mAh
    assert bare[0]["life_days"] == pytest.approx(1000 / (6.15111 + 0.7224), abs=0.1)
    assert main(["--wake-json", str(tmp_path / "missing.json")]) == 2
