"""Draw the wiring diagram (``hardware/wiring.svg``) from ``hardware/pinout.toml``.

    python -m hardware.wiring            check the pinout, write hardware/wiring.svg
    python -m hardware.wiring --check    exit 1 if the committed SVG is not the generated one

Plain SVG written with the standard library: no drawing tool needed. Labels are Vietnamese first,
then English. One row per pin: the DevKitC pin on the left, what is soldered to it on the right.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from xml.sax.saxutils import escape

from hardware.gen_pins import ROOT, _ohm, _rel, checked
from hardware.pinout import PINOUT, Pinout

SVG = ROOT / "hardware" / "wiring.svg"

W = 1180
ROW = 46
TOP = 120
BOARD_X, BOARD_W = 30, 210
PIN_X = BOARD_X + BOARD_W
CARD_X = 390
FONT = "DejaVu Sans, Arial, sans-serif"
WIRE = {"in": "#1f6feb", "out": "#cf222e", "adc": "#8250df", "power": "#444"}


class _Svg:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def add(self, s: str) -> None:
        self.parts.append(s)

    def text(
        self, x: float, y: float, s: str, size: int = 13, weight: str = "normal", **kw: str
    ) -> None:
        attrs = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in kw.items())
        self.add(
            f'<text x="{x:g}" y="{y:g}" font-size="{size}" font-weight="{weight}"{attrs}>'
            f"{escape(s)}</text>"
        )

    def line(
        self, x1: float, y1: float, x2: float, y2: float, colour: str = "#333", width: float = 2
    ) -> None:
        self.add(
            f'<line x1="{x1:g}" y1="{y1:g}" x2="{x2:g}" y2="{y2:g}" stroke="{colour}" '
            f'stroke-width="{width:g}"/>'
        )

    def face(self, cx: float, cy: float, r: float, smile: float, fill: str) -> None:
        """A smiley cap: the mouth bends up for a smile (1), is straight at 0, bends down at -1."""
        self.add(f'<circle cx="{cx:g}" cy="{cy:g}" r="{r:g}" fill="{fill}" stroke="#333"/>')
        e = r * 0.35
        self.add(f'<circle cx="{cx - e:g}" cy="{cy - e:g}" r="{r * 0.1:g}" fill="#333"/>')
        self.add(f'<circle cx="{cx + e:g}" cy="{cy - e:g}" r="{r * 0.1:g}" fill="#333"/>')
        my = cy + r * 0.35 - smile * r * 0.1
        bend = smile * r * 0.45
        self.add(
            f'<path d="M {cx - r * 0.5:g} {my:g} Q {cx:g} {my + bend:g} {cx + r * 0.5:g} {my:g}" '
            'fill="none" stroke="#333" stroke-width="2"/>'
        )


COLOUR_VI = {
    "yellow": "vàng",
    "green": "xanh lá",
    "red": "đỏ",
    "white": "trắng",
    "blue": "xanh dương",
    "orange": "cam",
}
CAP_FILL = {
    "dark green": "#2da44e",
    "green": "#2da44e",
    "light green": "#9be9a8",
    "yellow": "#f2cc60",
    "orange": "#fb8f44",
    "red": "#f85149",
}


def _rows(p: Pinout) -> list[tuple[str, str, str, str, str]]:
    """(pin label, direction, kind, Vietnamese text, English text), in drawing order."""
    scale = p.scales.get(len(p.buttons))
    rows = []
    pull = p.buttons[0].pull_resistor_ohm
    pull_txt = f"{_ohm(pull)}Ω xuống GND" if pull else "kéo xuống nội"
    pull_en = f"{_ohm(pull)}Ω to GND" if pull else "internal pull-down"
    for b in p.buttons:
        vi_label = scale.vi[b.position - 1] if scale else ""
        en_label = scale.en[b.position - 1] if scale else ""
        rows.append(
            (
                f"GPIO {b.gpio}",
                "in",
                "button",
                f"Nút {b.position}{' (trái cùng)' if b.position == 1 else ''} — {vi_label}: "
                f"bấm nối 3V3, {pull_txt}",
                f"Button {b.position}{' (leftmost)' if b.position == 1 else ''} — {en_label}: "
                f"press connects 3V3, {pull_en}",
            )
        )
    for b in p.buttons:
        rows.append(
            (
                f"GPIO {b.led_gpio}",
                "out",
                "led",
                f"Đèn LED {b.position} ({COLOUR_VI.get(p.led_colour, p.led_colour)}) qua {p.led_resistor_ohm}Ω xuống GND "
                f"(~{p.led_milliamps:.0f} mA)",
                f"LED {b.position} ({p.led_colour}) through {p.led_resistor_ohm}Ω to GND",
            )
        )
    rows.append(
        (
            f"GPIO {p.buzzer_gpio}",
            "out",
            "buzzer",
            "Còi thụ động: 1kΩ vào cực B của S8050 (E xuống GND); còi nối 3V3 và cực C; 1N4148 song song còi",
            "Passive buzzer: 1kΩ to the S8050's base (emitter to GND); buzzer from 3V3 to collector; 1N4148 across it",
        )
    )
    if p.vsupply:
        d = p.vsupply
        rows.append(
            (
                f"GPIO {d.gpio}",
                "adc",
                "divider",
                f"Đo điện áp pin: B+ — {_ohm(d.top_ohm)}Ω — chân — {_ohm(d.bottom_ohm)}Ω — GND "
                f"(chia {d.ratio:g}, ADC1)",
                f"Supply voltage: B+ — {_ohm(d.top_ohm)}Ω — pin — {_ohm(d.bottom_ohm)}Ω — GND "
                f"(÷{d.ratio:g}, ADC1)",
            )
        )
    if p.usb_sense:
        d = p.usb_sense
        rows.append(
            (
                f"GPIO {d.gpio}",
                "in",
                "divider",
                f"Báo có điện USB: 5V — {_ohm(d.top_ohm)}Ω — chân — {_ohm(d.bottom_ohm)}Ω — GND",
                f"USB power sense: 5V — {_ohm(d.top_ohm)}Ω — pin — {_ohm(d.bottom_ohm)}Ω — GND",
            )
        )
    rows.append(
        (
            "3V3",
            "power",
            "power",
            "3,3 V: chân chung của các nút và còi",
            "3.3 V: common side of the buttons and the buzzer",
        )
    )
    rows.append(
        (
            "5V",
            "power",
            "power",
            "5 V từ USB: đầu trên cầu chia báo điện USB",
            "5 V from USB: top of the USB-sense divider",
        )
    )
    rows.append(
        ("GND", "power", "power", "GND: chung cho mọi linh kiện", "GND: common to every part")
    )
    return rows


def _symbol(s: _Svg, kind: str, x: float, y: float, colour: str) -> None:
    """A small schematic-style glyph at the start of a card."""
    if kind == "button":
        s.add(
            f'<circle cx="{x + 6:g}" cy="{y:g}" r="3" fill="none" stroke="{colour}" stroke-width="2"/>'
        )
        s.add(
            f'<circle cx="{x + 30:g}" cy="{y:g}" r="3" fill="none" stroke="{colour}" stroke-width="2"/>'
        )
        s.line(x + 4, y - 9, x + 32, y - 9, colour)
        s.line(x + 18, y - 9, x + 18, y - 16, colour)
    elif kind == "led":
        s.add(
            f'<polygon points="{x + 6:g},{y - 8:g} {x + 6:g},{y + 8:g} {x + 22:g},{y:g}" '
            f'fill="none" stroke="{colour}" stroke-width="2"/>'
        )
        s.line(x + 22, y - 8, x + 22, y + 8, colour)
        s.line(x + 26, y - 10, x + 32, y - 16, colour, 1.5)
    elif kind == "buzzer":
        s.add(
            f'<path d="M {x + 4:g} {y + 8:g} A 14 14 0 0 1 {x + 32:g} {y + 8:g} Z" '
            f'fill="none" stroke="{colour}" stroke-width="2"/>'
        )
    elif kind == "divider":
        pts = " ".join(f"{x + 2 + i * 4:g},{y + (6 if i % 2 else -6):g}" for i in range(9))
        s.add(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"/>')
    else:
        s.line(x + 4, y, x + 32, y, colour, 3)


def render(p: Pinout) -> str:
    rows = _rows(p)
    h = TOP + ROW * len(rows) + 74
    scales = sorted(p.scales)
    table_y = h
    h += 40 + 58 * len(scales) + 30
    s = _Svg()
    s.add('<?xml version="1.0" encoding="UTF-8"?>')
    s.add(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" '
        f'viewBox="0 0 {W} {h}" font-family="{FONT}">'
    )
    s.add("<title>Sơ đồ đấu dây thiết bị đánh giá SIPAS / SIPAS terminal wiring diagram</title>")
    s.add(f'<rect width="{W}" height="{h}" fill="#ffffff"/>')
    s.text(30, 40, "Sơ đồ đấu dây — thiết bị đánh giá SIPAS", 22, "bold")
    s.text(30, 64, "Wiring diagram — SIPAS rating terminal", 16, fill="#555")
    s.text(
        30,
        88,
        f"Tạo từ / generated from hardware/pinout.toml · {p.module} ({p.chip.upper()}) · "
        "nút: mức cao khi bấm / buttons: active-high",
        12,
        fill="#555",
    )

    board_h = ROW * len(rows) + 48
    s.add(
        f'<rect x="{BOARD_X}" y="{TOP - 30}" width="{BOARD_W}" height="{board_h}" rx="10" '
        'fill="#24292f" stroke="#000"/>'
    )
    s.text(BOARD_X + 16, TOP - 8, "ESP32 DevKitC", 15, "bold", fill="#fff")
    s.text(BOARD_X + 16, TOP + 10, p.module, 11, fill="#ccc")

    for i, (pin, direction, kind, vi, en) in enumerate(rows):
        y = TOP + 40 + i * ROW
        colour = WIRE[direction]
        s.add(f'<rect x="{PIN_X - 70}" y="{y - 11}" width="66" height="22" rx="4" fill="#fff"/>')
        s.text(PIN_X - 37, y + 5, pin, 12, "bold", text_anchor="middle")
        s.line(PIN_X - 4, y, CARD_X, y, colour)
        s.add(f'<circle cx="{PIN_X - 4}" cy="{y}" r="3" fill="{colour}"/>')
        s.add(
            f'<rect x="{CARD_X}" y="{y - 19}" width="{W - CARD_X - 20}" height="38" rx="6" '
            f'fill="#f6f8fa" stroke="{colour}"/>'
        )
        _symbol(s, kind, CARD_X + 8, y, colour)
        s.text(CARD_X + 50, y - 3, vi, 13)
        s.text(CARD_X + 50, y + 13, en, 11, fill="#555")

    ly = TOP + ROW * len(rows) + 44
    for j, (label, direction) in enumerate(
        (("vào / input", "in"), ("ra / output", "out"), ("ADC1", "adc"), ("nguồn / power", "power"))
    ):
        x = 30 + j * 170
        s.line(x, ly, x + 30, ly, WIRE[direction], 3)
        s.text(x + 38, ly + 4, label, 12)

    s.text(
        30,
        table_y + 10,
        "Nắp nút theo thang đánh giá (trái → phải) / Button caps per scale (left → right)",
        14,
        "bold",
    )
    for k, n in enumerate(scales):
        sc = p.scales[n]
        y = table_y + 50 + k * 58
        s.text(30, y + 5, f"{n} mức / {n} levels", 13, "bold")
        for i in range(n):
            x = 190 + i * 195
            s.face(x, y, 16, sc.smile[i], CAP_FILL.get(sc.cap_colour[i], "#ddd"))
            s.text(x + 24, y - 2, sc.vi[i], 12)
            s.text(x + 24, y + 13, sc.en[i], 10, fill="#555")
    if p.reasons_vi:
        y = table_y + 50 + len(scales) * 58 - 10
        reasons = " · ".join(
            f"{i}. {vi} ({en})"
            for i, (vi, en) in enumerate(zip(p.reasons_vi, p.reasons_en, strict=False), 1)
        )
        s.text(
            30,
            y,
            f"Lý do (sau đánh giá không hài lòng) / Reasons (after a negative rating): {reasons}",
            11,
        )
    s.add("</svg>")
    return "\n".join(s.parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m hardware.wiring", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--pinout", type=Path, default=PINOUT, help="the pinout (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=SVG, help="SVG to write (default: %(default)s)")
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 if out of date")
    args = ap.parse_args(argv)
    p, code = checked(args.pinout)
    if p is None:
        return code
    text = render(p)
    current = args.out.read_text(encoding="utf-8") if args.out.is_file() else None
    if args.check:
        if current != text:
            print(
                f"{_rel(args.out)} is out of date: run `python -m hardware.wiring`", file=sys.stderr
            )
            return 1
        print(f"{_rel(args.out)} is up to date", file=sys.stderr)
        return 0
    if current != text:
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {_rel(args.out)}", file=sys.stderr)
    else:
        print(f"{_rel(args.out)} is already up to date", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
