"""The terminal's sticker: terminal id, desk, office and a QR code, as PNG or PDF.

Sized for 62 mm continuous label tape (the common label-printer width) at 300 dpi; a PDF page has
the sticker's real size, so any printer prints it 1:1. Officials see the sticker, so its words are
Vietnamese by default (English with ``lang="en"``); the QR code carries the same facts for a phone or
a scanner, and no secret.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import qrcode
from PIL import Image, ImageDraw, ImageFont

from provisioning.records import HUB_INTERIM

DPI = 300
WIDTH_MM, HEIGHT_MM = 62, 34
_MM = DPI / 25.4

WORDS = {
    "vi": {
        "terminal": "Thiết bị đánh giá",
        "desk": "Quầy",
        "office": "Đơn vị",
        "pilot": "THỬ NGHIỆM",
    },
    "en": {"terminal": "Rating terminal", "desk": "Desk", "office": "Office", "pilot": "PILOT"},
}
# Fonts with Vietnamese letters (Debian's fonts-dejavu-core); SIPAS_PROVISION_FONT overrides.
FONT_DIRS = (
    "/usr/share/fonts/truetype/dejavu",
    "/usr/share/fonts/dejavu",
    "/usr/local/share/fonts",
    "/Library/Fonts",
    "C:/Windows/Fonts",
)


class LabelError(Exception):
    pass


def qr_text(record: dict[str, Any]) -> str:
    """What the QR code says: ``sipas:t-0123456789ab;office=...;desk=...`` (no secret)."""
    parts = [f"sipas:{record['terminal_id']}"]
    if record.get("office"):
        parts.append(f"office={record['office']}")
    if record.get("desk"):
        parts.append(f"desk={record['desk']}")
    return ";".join(parts)


def _font_file(bold: bool) -> str | None:
    env = os.environ.get("SIPAS_PROVISION_FONT")
    if env:
        return env
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    for d in FONT_DIRS:
        p = Path(d) / name
        if p.is_file():
            return str(p)
    return None


def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    path = _font_file(bold)
    if path:
        return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


def has_vietnamese_font() -> bool:
    return _font_file(False) is not None


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int, size: int, bold: bool = False) -> Any:
    """The largest font (up to ``size``) in which ``text`` fits ``width`` pixels."""
    while size > 10:
        font = _font(size, bold)
        if draw.textlength(text, font=font) <= width:
            return font
        size -= 2
    return _font(size, bold)


def lines(record: dict[str, Any], lang: str = "vi") -> list[tuple[str, int, bool]]:
    """The sticker's text: (line, font size in pixels, bold)."""
    words = WORDS[lang]
    out = [
        (words["terminal"], 30, False),
        (str(record["terminal_id"]), 52, True),
        (f"{words['desk']}: {record.get('desk') or '-'}", 40, True),
        (f"{words['office']}: {record.get('office') or '-'}", 30, False),
    ]
    if record.get("district_key_source") == HUB_INTERIM:
        out.append((words["pilot"], 30, True))
    return out


def render(record: dict[str, Any], lang: str = "vi") -> Image.Image:
    if lang not in WORDS:
        raise LabelError(f"unknown language {lang!r}: vi or en")
    if lang == "vi" and not has_vietnamese_font():
        raise LabelError(
            "no font with Vietnamese letters found: install Debian's fonts-dejavu-core "
            "(scripts/setup.sh does), set SIPAS_PROVISION_FONT=/path/to/font.ttf, or use --lang en"
        )
    w, h = round(WIDTH_MM * _MM), round(HEIGHT_MM * _MM)
    img = Image.new("L", (w, h), 255)
    margin = round(2 * _MM)
    qr = qrcode.QRCode(
        error_correction=qrcode.constants.ERROR_CORRECT_M, border=4, box_size=1, version=None
    )
    qr.add_data(qr_text(record))
    qr.make(fit=True)
    modules = qr.modules_count + 2 * qr.border
    box = max(1, (h - 2 * margin) // modules)
    qr_img = qr.make_image(fill_color="black", back_color="white").get_image().convert("L")
    qr_img = qr_img.resize((modules * box, modules * box), Image.Resampling.NEAREST)
    img.paste(qr_img, (margin, (h - qr_img.height) // 2))

    draw = ImageDraw.Draw(img)
    x = margin + qr_img.width + margin
    text_w = w - x - margin
    y = margin * 2
    for text, size, bold in lines(record, lang):
        font = _fit(draw, text, text_w, size, bold)
        draw.text((x, y), text, font=font, fill=0)
        bbox = draw.textbbox((x, y), text, font=font)
        y = round(bbox[3]) + round(size * 0.45)
    return img


def write(record: dict[str, Any], out: Path, lang: str = "vi") -> Path:
    """Write the sticker; PNG or PDF by the file's suffix."""
    suffix = out.suffix.lower()
    if suffix not in (".png", ".pdf"):
        raise LabelError(f"{out}: the sticker is written as .png or .pdf")
    img = render(record, lang)
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".png":
        img.save(out, format="PNG", dpi=(DPI, DPI))
    else:
        img.save(out, format="PDF", resolution=DPI, title=f"SIPAS {record['terminal_id']}")
    return out
