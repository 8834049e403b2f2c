"""The desk's QR sticker (seed 000, "Hình thức 02"): A6 portrait (105 × 148 mm) at 300 dpi, PNG or
PDF at its real size, with the office, the desk's name, the QR code and short instructions in
Vietnamese (English with ``lang="en"``)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import qrcode
from PIL import Image, ImageDraw, ImageFont

DPI = 300
WIDTH_MM, HEIGHT_MM = 105, 148
_MM = DPI / 25.4
# Fonts with Vietnamese letters (Debian's fonts-dejavu-core, installed by scripts/setup.sh);
# SIPAS_HUB_FONT overrides.
FONT_DIRS = (
    "/usr/share/fonts/truetype/dejavu",
    "/usr/share/fonts/dejavu",
    "/usr/local/share/fonts",
)

WORDS: dict[str, dict[str, str]] = {
    "vi": {
        "title": "ĐÁNH GIÁ SỰ HÀI LÒNG",
        "office": "Đơn vị",
        "wifi": "Kết nối Wi-Fi “{}” trước khi quét.",
    },
    "en": {
        "title": "RATE OUR SERVICE",
        "office": "Office",
        "wifi": "Join the Wi-Fi “{}” before scanning.",
    },
}


STEPS = {
    "vi": [
        "1. Mở camera điện thoại hoặc Zalo, quét mã QR.",
        "2. Chọn mức độ hài lòng, bấm “Gửi đánh giá”.",
        "Số điện thoại không bắt buộc; chỉ để mỗi hồ sơ được đánh giá một lần.",
    ],
    "en": [
        "1. Open your phone's camera or Zalo and scan the code.",
        "2. Choose how satisfied you are, press “Send rating”.",
        "Your phone number is optional: it only keeps one rating per case.",
    ],
}


class StickerError(Exception):
    pass


def _font_file(bold: bool) -> str | None:
    env = os.environ.get("SIPAS_HUB_FONT")
    if env:
        return env
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    for d in FONT_DIRS:
        if (Path(d) / name).is_file():
            return str(Path(d) / name)
    return None


def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    path = _font_file(bold)
    if path is None:
        raise StickerError(
            "no font with Vietnamese letters found: install Debian's fonts-dejavu-core "
            "(scripts/setup.sh does) or set SIPAS_HUB_FONT=/path/to/font.ttf"
        )
    return ImageFont.truetype(path, size)


def _wrap(
    draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont, width: int
) -> list[str]:
    out: list[str] = []
    line = ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial, font=font) > width:
            out.append(line)
            line = word
        else:
            line = trial
    return [*out, line] if line else out


def render(
    *, url: str, desk_name: str, office: str, lang: str = "vi", wifi_name: str = ""
) -> Image.Image:
    if lang not in WORDS:
        raise StickerError(f"unknown language {lang!r}: vi or en")
    words = WORDS[lang]
    w, h = round(WIDTH_MM * _MM), round(HEIGHT_MM * _MM)
    img = Image.new("L", (w, h), 255)
    draw = ImageDraw.Draw(img)
    margin = round(7 * _MM)
    text_w = w - 2 * margin
    y = margin

    def centred(text: str, size: int, bold: bool = False, gap: float = 0.35) -> None:
        nonlocal y
        font = _font(size, bold)
        for line in _wrap(draw, text, font, text_w):
            draw.text(((w - draw.textlength(line, font=font)) / 2, y), line, font=font, fill=0)
            y += round(size * 1.2)
        y += round(size * gap)

    centred(words["title"], 70, bold=True)
    centred(desk_name, 82, bold=True)
    centred(f"{words['office']}: {office}", 40)

    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=4, box_size=1)
    qr.add_data(url)
    qr.make(fit=True)
    modules = qr.modules_count + 2 * qr.border
    box = max(1, round(78 * _MM) // modules)  # about 78 mm: readable from a chair
    qr_img = qr.make_image(fill_color="black", back_color="white").get_image().convert("L")
    qr_img = qr_img.resize((modules * box, modules * box), Image.Resampling.NEAREST)
    img.paste(qr_img, ((w - qr_img.width) // 2, y))
    y += qr_img.height + round(2 * _MM)

    steps = list(STEPS[lang])
    if wifi_name:
        steps.insert(0, words["wifi"].format(wifi_name))
    font = _font(38)
    for step in steps:
        for line in _wrap(draw, step, font, text_w):
            draw.text((margin, y), line, font=font, fill=0)
            y += 46
        y += 10
    small = _font(28)
    draw.text(((w - draw.textlength(url, font=small)) / 2, h - margin), url, font=small, fill=0)
    if y > h - margin - 40:
        raise StickerError("the desk's name is too long for the sticker: shorten it")
    return img


def encode(img: Image.Image, fmt: str, title: str = "SIPAS QR") -> bytes:
    """PNG, or a PDF whose page has the sticker's real size."""
    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, format="PNG", dpi=(DPI, DPI))
    elif fmt == "pdf":
        img.save(buf, format="PDF", resolution=DPI, title=title)
    else:
        raise StickerError(f"the sticker is written as png or pdf, not {fmt!r}")
    return buf.getvalue()


def write(img: Image.Image, out: Path) -> Path:
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in ("png", "pdf"):
        raise StickerError(f"{out}: the sticker is written as .png or .pdf")
    data = encode(img, fmt, title=f"SIPAS QR {out.stem}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return out
