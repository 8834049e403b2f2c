"""The bill of materials (hardware/bom.csv): it parses, its totals add up, and every part the pinout
connects is in it, with the resistor values the pinout states."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

import pytest

from hardware.pinout import load_pinout

pytestmark = pytest.mark.unit
BOM = Path(__file__).resolve().parents[2] / "hardware" / "bom.csv"
COLUMNS = [
    "item", "part", "part_number", "value", "qty", "unit_vnd", "unit_usd",
    "total_vnd", "total_usd", "variant", "pinout", "notes",
]  # fmt: skip
RATE_VND_PER_USD = 26000


def rows() -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    with open(BOM, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        all_rows = list(reader)
    parts = [r for r in all_rows if r["item"] != "TOTAL"]
    totals = [r for r in all_rows if r["item"] == "TOTAL"]
    return parts, totals


def ohms(value: str) -> int:
    mult = {"k": 1000, "M": 1000000}.get(value[-1], 1)
    return int(Decimal(value.rstrip("kM")) * mult)


def test_lines_and_totals_add_up() -> None:
    parts, totals = rows()
    assert parts and {r["variant"] for r in parts} == {"core", "battery"}
    for r in parts:
        qty = int(r["qty"])
        assert qty > 0, r["item"]
        assert int(r["total_vnd"]) == qty * int(r["unit_vnd"]), r["item"]
        assert Decimal(r["total_usd"]) == qty * Decimal(r["unit_usd"]), r["item"]
        # the two prices say the same thing at the stated rate (within a cent of rounding)
        assert abs(Decimal(r["unit_vnd"]) / RATE_VND_PER_USD - Decimal(r["unit_usd"])) <= Decimal(
            "0.005"
        ), r["item"]
        assert r["part"] and r["part_number"], r["item"]
    by_variant = {t["variant"]: t for t in totals}
    for variant in ("core", "battery"):
        mine = [r for r in parts if r["variant"] == variant]
        assert int(by_variant[variant]["total_vnd"]) == sum(int(r["total_vnd"]) for r in mine)
        assert Decimal(by_variant[variant]["total_usd"]) == sum(
            Decimal(r["total_usd"]) for r in mine
        )
    both = by_variant["core+battery"]
    assert int(both["total_vnd"]) == sum(int(r["total_vnd"]) for r in parts)
    assert Decimal(both["total_usd"]) == sum(Decimal(r["total_usd"]) for r in parts)
    assert all("November 2026" in t["notes"] and "26,000 VND" in t["notes"] for t in totals)


def test_every_pinout_component_is_in_the_bom() -> None:
    p = load_pinout()
    parts, _ = rows()
    tags = {r["pinout"]: r for r in parts}
    n = len(p.buttons)
    wanted: dict[str, tuple[int, int | None]] = {  # tag: (quantity, resistance in ohms or None)
        "board.module": (1, None),
        "button": (n, None),
        "led": (n, None),
        "led.resistor": (n, p.led_resistor_ohm),
        "buzzer": (1, None),
    }
    if p.buttons[0].pull_resistor_ohm:
        wanted["button.pull_resistor"] = (n, p.buttons[0].pull_resistor_ohm)
    if p.buzzer_driver == "npn":
        wanted |= {"buzzer.driver": (1, None), "buzzer.base_resistor": (1, 1000)}
    for name, d in (("vsupply", p.vsupply), ("usb_sense", p.usb_sense)):
        if d:
            wanted[f"{name}.divider_top"] = (1, d.top_ohm)
            wanted[f"{name}.divider_bottom"] = (1, d.bottom_ohm)
    for tag, (qty, resistance) in wanted.items():
        assert tag in tags, f"{tag} (in the pinout) is missing from bom.csv"
        assert int(tags[tag]["qty"]) == qty, tag
        if resistance is not None:
            assert ohms(tags[tag]["value"]) == resistance, tag
    assert p.module in tags["board.module"]["part_number"]
    # the notes say which ESP32 variants work
    notes = tags["board.module"]["notes"]
    assert "ext1" in notes and "WROVER" in notes and "S3" in notes and "C3" in notes


def test_battery_option_has_cell_charger_and_regulator() -> None:
    parts, _ = rows()
    battery = {r["pinout"] for r in parts if r["variant"] == "battery"}
    assert {"power.battery", "power.charger", "power.regulator", "power.switch"} <= battery
    assert any("TP4056" in r["part_number"] for r in parts)
