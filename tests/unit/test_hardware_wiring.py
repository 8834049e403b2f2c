"""The wiring diagram (hardware/wiring.svg) is drawn from the pinout and names every pin."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from hardware import wiring
from hardware.pinout import load_pinout

pytestmark = pytest.mark.unit
SVG = Path(__file__).resolve().parents[2] / "hardware" / "wiring.svg"
NS = "{http://www.w3.org/2000/svg}"


def texts(svg: str) -> list[str]:
    root = ET.fromstring(svg.encode("utf-8"))  # raises on a malformed file
    assert root.tag == f"{NS}svg"
    return ["".join(t.itertext()) for t in root.iter(f"{NS}text")]


def test_the_svg_is_well_formed_and_names_every_pin() -> None:
    p = load_pinout()
    labels = texts(SVG.read_text(encoding="utf-8"))
    pins = {t for t in labels if re.fullmatch(r"GPIO \d+", t)}
    assert pins == {f"GPIO {u.gpio}" for u in p.uses()}
    for name in ("3V3", "5V", "GND"):
        assert name in labels
    joined = "\n".join(labels)
    for b in p.buttons:  # each pin's row says what it is, in Vietnamese and in English
        assert f"Nút {b.position}" in joined and f"Button {b.position}" in joined
        assert f"Đèn LED {b.position}" in joined and f"LED {b.position} (" in joined
    assert "Sơ đồ đấu dây" in joined and "Wiring diagram" in joined
    for scale in p.scales.values():
        for vi, en in zip(scale.vi, scale.en, strict=True):
            assert vi in labels and en in labels


def test_the_committed_svg_is_the_generated_one() -> None:
    assert SVG.read_text(encoding="utf-8") == wiring.render(load_pinout()), (
        "run `python -m hardware.wiring`"
    )
    assert wiring.main(["--check"]) == 0


def test_a_changed_pin_shows_in_the_drawing(tmp_path: Path) -> None:
    src = Path(wiring.PINOUT).read_text(encoding="utf-8").replace("led_gpio = 21", "led_gpio = 22")
    pinout = tmp_path / "pinout.toml"
    pinout.write_text(src, encoding="utf-8")
    out = tmp_path / "wiring.svg"
    assert wiring.main(["--pinout", str(pinout), "--out", str(out)]) == 0
    labels = texts(out.read_text(encoding="utf-8"))
    assert "GPIO 22" in labels and "GPIO 21" not in labels
