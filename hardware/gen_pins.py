"""Generate ``firmware/app/pins.py`` from ``hardware/pinout.toml``, after checking the ESP32 rules.

    python -m hardware.gen_pins            check the pinout, write firmware/app/pins.py
    python -m hardware.gen_pins --check    exit 1 if the committed pins.py is not the generated one

Exit codes: 0 done (or up to date), 1 a pin rule is broken or pins.py is out of date, 2 the pinout
cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from hardware.pinout import PINOUT, Pinout, PinoutError, check_pinout, errors, load_pinout

ROOT = Path(__file__).resolve().parents[1]
PINS_PY = ROOT / "firmware" / "app" / "pins.py"


def _rel(path: Path) -> str:
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def _ohm(value: int) -> str:
    return f"{value // 1000}k" if value % 1000 == 0 else f"{value}"


def render(p: Pinout, source: str = "hardware/pinout.toml") -> str:
    """The text of pins.py: plain assignments (MicroPython reads it; provisioning parses it)."""
    pull = p.buttons[0].pull_resistor_ohm
    pull_note = f"external {_ohm(pull)} pull-downs" if pull else "pull-downs"
    lines = [
        f"# GENERATED from {source} by hardware/gen_pins.py: do not edit. Edit the pinout,",
        "# then run `python -m hardware.gen_pins` (it checks the ESP32 pin rules before writing).",
        f"# Board: {p.chip.upper()}, {p.module}. Buttons are on RTC GPIOs, active-high with",
        f"# {pull_note}, so battery mode can wake on any of them through ext1.",
        "# Level 1 (most satisfied) is the leftmost button.",
        "BUTTON_PINS = (" + ", ".join(str(b.gpio) for b in p.buttons) + ")",
        "LED_PINS = (" + ", ".join(str(b.led_gpio) for b in p.buttons) + ")",
        f"BUZZER_PIN = {p.buzzer_gpio}",
    ]
    vs, us = p.vsupply, p.usb_sense
    if vs:
        lines.append(
            f"VSUPPLY_ADC_PIN = {vs.gpio}  # supply voltage through a "
            f"{_ohm(vs.top_ohm)}/{_ohm(vs.bottom_ohm)} divider (ADC1, {vs.attenuation_db:g} dB)"
        )
    else:
        lines.append("VSUPPLY_ADC_PIN = None  # no supply-voltage divider on this board")
    if us:
        lines.append(f"USB_SENSE_PIN = {us.gpio}  # high while USB/mains power is present")
    else:
        lines.append("USB_SENSE_PIN = None  # no USB/mains sense on this board")
    lines.append(f"VSUPPLY_DIVIDER = {round(vs.ratio, 4)!r}" if vs else "VSUPPLY_DIVIDER = None")
    return "\n".join(lines) + "\n"


def checked(pinout_path: Path, err: TextIO | None = None) -> tuple[Pinout | None, int]:
    """Load and check the pinout, printing every problem to ``err`` (stderr by default).
    Returns the pinout and 0, or None and the exit code: 2 unreadable, 1 a rule broken."""
    err = err or sys.stderr
    try:
        p = load_pinout(pinout_path)
    except PinoutError as e:
        print(f"{e.source}: the pinout cannot be read:", file=err)
        for problem in e.problems:
            print(f"  - {problem}", file=err)
        return None, 2
    found = check_pinout(p)
    for v in found:
        print(f"{_rel(pinout_path)}: {v}", file=err)
    if errors(found):
        n = len(errors(found))
        print(
            f"{n} pin rule(s) broken: fix {_rel(pinout_path)} (rules: hardware/README.md); "
            "nothing was written",
            file=err,
        )
        return None, 1
    return p, 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m hardware.gen_pins", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--pinout", type=Path, default=PINOUT, help="the pinout (default: %(default)s)")
    ap.add_argument(
        "--out", type=Path, default=PINS_PY, help="pins.py to write (default: %(default)s)"
    )
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 if out of date")
    args = ap.parse_args(argv)

    p, code = checked(args.pinout)
    if p is None:
        return code
    text = render(p, _rel(args.pinout))
    current = args.out.read_text(encoding="utf-8") if args.out.is_file() else None
    if args.check:
        if current != text:
            print(
                f"{_rel(args.out)} is not what {_rel(args.pinout)} generates: "
                "run `python -m hardware.gen_pins`",
                file=sys.stderr,
            )
            return 1
        print(f"{_rel(args.out)} is up to date", file=sys.stderr)
        return 0
    if current == text:
        print(f"{_rel(args.out)} is already up to date", file=sys.stderr)
        return 0
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {_rel(args.out)} ({len(p.buttons)} buttons)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
