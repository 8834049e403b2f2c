"""The pinout (hardware/pinout.toml): the ESP32 pin rules, and firmware/app/pins.py generated from it.

Each rule is proved to fire by feeding a deliberately broken pinout: the technician editing the file
must get the pin and the rule, at once, from `python -m hardware.gen_pins`.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hardware import gen_pins
from hardware.pinout import (
    PINOUT,
    PinoutError,
    check_pinout,
    errors,
    load_pinout,
    parse_pinout,
    read_toml,
)

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
PINS_PY = ROOT / "firmware" / "app" / "pins.py"


def good() -> dict[str, Any]:
    return copy.deepcopy(read_toml(PINOUT))


def violations(data: dict[str, Any]) -> list[tuple[str, int | None, str]]:
    return [(v.rule, v.gpio, v.severity) for v in check_pinout(parse_pinout(data))]


def test_the_committed_pinout_keeps_every_rule() -> None:
    assert check_pinout(load_pinout()) == []


def test_todays_assignment_is_reproduced() -> None:
    ns: dict[str, Any] = {}
    exec(gen_pins.render(load_pinout()), ns)
    assert ns["BUTTON_PINS"] == (32, 33, 25, 26, 27)
    assert ns["LED_PINS"] == (16, 17, 18, 19, 21)
    assert ns["BUZZER_PIN"] == 23
    assert ns["VSUPPLY_ADC_PIN"] == 34
    assert ns["USB_SENSE_PIN"] == 35
    assert ns["VSUPPLY_DIVIDER"] == 2.0


def test_committed_pins_py_is_the_generated_one() -> None:
    expected = gen_pins.render(load_pinout())
    assert PINS_PY.read_text(encoding="utf-8") == expected, "run `python -m hardware.gen_pins`"
    head = expected.splitlines()[0]
    assert "GENERATED" in head and "hardware/pinout.toml" in head
    p = subprocess.run(
        [sys.executable, "-m", "hardware.gen_pins", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr


def test_check_flags_a_hand_edited_pins_py(tmp_path: Path) -> None:
    out = tmp_path / "pins.py"
    out.write_text(PINS_PY.read_text().replace("BUZZER_PIN = 23", "BUZZER_PIN = 22"))
    assert gen_pins.main(["--check", "--out", str(out)]) == 1
    assert gen_pins.main(["--out", str(out)]) == 0
    assert out.read_text() == PINS_PY.read_text()
    assert gen_pins.main(["--check", "--out", str(out)]) == 0


def _button(d: dict[str, Any], position: int, **changes: Any) -> dict[str, Any]:
    d["button"][position - 1].update(changes)
    return d


BAD = {
    # rule name: (how to break the good pinout, the pin that must be named)
    "flash": (lambda d: _button(d, 1, gpio=6), 6),
    "serial-console": (lambda d: _button(d, 2, led_gpio=1), 1),
    "not-a-gpio": (lambda d: _button(d, 2, gpio=24), 24),
    "not-on-module": (lambda d: _button(d, 3, gpio=37), 37),
    "input-only": (lambda d: _button(d, 1, led_gpio=36), 36),
    "no-internal-pull": (lambda d: _button(d, 4, gpio=39, pull_resistor_ohm=0), 39),
    "strapping": (lambda d: _button(d, 1, gpio=12), 12),
    "ext1-wake": (lambda d: _button(d, 5, gpio=22), 22),
    "active-high": (lambda d: _button(d, 3, active="low", pull="up"), 25),
    "duplicate": (lambda d: _button(d, 2, led_gpio=16), 16),
    "adc2": (lambda d: d["vsupply"].update(gpio=4) or d, 4),
    "not-adc": (lambda d: d["vsupply"].update(gpio=22) or d, 22),
    "psram": (lambda d: d["board"].update(module="ESP32-WROVER-E") or d, 16),
    "overvoltage": (lambda d: d["vsupply"].update(divider_top_ohm=10000) or d, 34),
    "adc-range": (lambda d: d["vsupply"].update(divider_bottom_ohm=150000) or d, 34),
    "sense-level": (lambda d: d["usb_sense"].update(divider_top_ohm=100000) or d, 35),
}


@pytest.mark.parametrize("rule", sorted(BAD))
def test_each_rule_fires_with_the_pin(rule: str) -> None:
    breaker, gpio = BAD[rule]
    found = check_pinout(parse_pinout(breaker(good())))
    hits = [v for v in found if v.rule == rule]
    assert hits, f"rule {rule} did not fire: {[str(v) for v in found]}"
    assert hits[0].gpio == gpio and hits[0].severity == "error"
    assert f"GPIO {gpio} (" in str(hits[0]) and f"[{rule}]" in str(hits[0])


def test_a_strapping_pin_is_refused_for_a_button_even_when_it_is_an_rtc_gpio() -> None:
    for pin in (0, 2, 12, 15):
        assert ("strapping", pin, "error") in violations(_button(good(), 1, gpio=pin))
    # GPIO 5 is strapping and not RTC: both reasons are given
    rules = {r for r, g, _ in violations(_button(good(), 1, gpio=5)) if g == 5}
    assert rules == {"strapping", "ext1-wake"}


def test_input_only_pins_are_fine_for_buttons_with_an_external_pull_down() -> None:
    assert errors(check_pinout(parse_pinout(_button(good(), 4, gpio=39)))) == []


def test_whole_board_rules() -> None:
    d = good()
    d["board"]["chip"] = "esp32s3"
    assert ("chip", None, "error") in violations(d)
    d = good()
    d["leds"]["resistor_ohm"] = 47
    assert ("led-current", None, "error") in violations(d)


def test_outputs_on_strapping_or_noisy_pins_are_warnings_not_errors() -> None:
    found = check_pinout(parse_pinout(_button(good(), 1, led_gpio=15)))
    assert [(v.rule, v.gpio, v.severity) for v in found] == [("strapping-output", 15, "warning")]
    found = check_pinout(parse_pinout(_button(good(), 1, led_gpio=14)))
    assert [(v.rule, v.severity) for v in found] == [("boot-noise", "warning")]


@pytest.mark.parametrize(
    ("breaker", "words"),
    [
        (lambda d: d.update(button=d["button"][:2]), "2 buttons"),
        (lambda d: d.update(button=d["button"] * 2), "10 buttons"),
        (lambda d: d["button"].reverse(), "left to right"),
        (lambda d: d["button"][0].pop("gpio"), "missing 'gpio'"),
        (lambda d: d["button"][0].update(gpio=True), "'gpio' must be int"),
        (lambda d: d["scales"]["3"]["vi"].pop(), "need 3 entries"),
        (lambda d: d.pop("buzzer"), "missing [buzzer]"),
    ],
)
def test_an_unreadable_pinout_names_the_problem(breaker: Any, words: str) -> None:
    d = good()
    breaker(d)
    with pytest.raises(PinoutError) as e:
        parse_pinout(d)
    assert words in str(e.value)


def test_gen_pins_refuses_a_broken_pinout_and_writes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "pinout.toml"
    bad.write_text(PINOUT.read_text(encoding="utf-8").replace("gpio = 32", "gpio = 6"), "utf-8")
    out = tmp_path / "pins.py"
    p = subprocess.run(
        [sys.executable, "-m", "hardware.gen_pins", "--pinout", str(bad), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 1
    assert "GPIO 6 (button 1): [flash]" in p.stderr
    assert "nothing was written" in p.stderr
    assert not out.exists()
    bad.write_text("schema = 1\n[board\n", "utf-8")
    assert gen_pins.main(["--pinout", str(bad), "--out", str(out)]) == 2


def test_a_board_without_supply_sensing_generates_none(tmp_path: Path) -> None:
    d = good()
    del d["vsupply"], d["usb_sense"]
    d["button"] = d["button"][:3]
    ns: dict[str, Any] = {}
    exec(gen_pins.render(parse_pinout(d)), ns)
    assert ns["BUTTON_PINS"] == (32, 33, 25)
    assert ns["VSUPPLY_ADC_PIN"] is None and ns["USB_SENSE_PIN"] is None
    assert ns["VSUPPLY_DIVIDER"] is None


def test_the_guide_names_every_pin_and_rule() -> None:
    guide = (ROOT / "hardware" / "README.md").read_text(encoding="utf-8")
    table = guide.split("## 1.")[1].split("**Sửa chân")[0]
    for u in load_pinout().uses():
        assert re.search(rf"\b{u.gpio}\b", table), f"GPIO {u.gpio} ({u.role}) not in the pin table"
    for rule in BAD:
        assert f"`{rule}`" in guide, f"rule {rule} is not explained in hardware/README.md"
