"""`sipas-provision label`: the sticker's QR code reads back (zxing-cpp, a real decoder) as the
terminal's id, office and desk; the PDF has the sticker's real size; no secret is on it."""

from __future__ import annotations

import io
import re
import secrets
from pathlib import Path

import pytest
import zxingcpp
from PIL import Image
from typer.testing import CliRunner

from provisioning import label, records
from provisioning.cli import app

pytestmark = pytest.mark.integration


def _record(tmp_path: Path, source: str = records.DISTRICT_SERVER) -> Path:
    device = {
        "terminal_id": "t-a4cf12345678",
        "office": "ubnd-phuong-1",
        "epoch": 1,
        "hub_key": secrets.token_hex(32),
        "district_key": secrets.token_hex(32),
        "mqtt_password": secrets.token_urlsafe(18),
        "broker_host": "192.168.1.10",
        "broker_port": 1883,
    }
    rec = records.new_record(
        device=device,
        hub_url="http://192.168.1.10:8080/api/v1",
        chip_id="a4cf12345678",
        desk="quay-1",
        district_key_source=source,
    )
    path = tmp_path / "t-a4cf12345678.json"
    records.save(path, rec)
    return path


def _decode(img: Image.Image) -> list[str]:
    return [b.text for b in zxingcpp.read_barcodes(img)]


def test_png_sticker_qr_reads_back(tmp_path: Path) -> None:
    rec = _record(tmp_path)
    out = tmp_path / "sticker.png"
    res = CliRunner().invoke(app, ["label", "--record", str(rec), "--out", str(out)])
    assert res.exit_code == 0, res.output
    img = Image.open(out)
    assert img.size == (732, 402)  # 62 x 34 mm at 300 dpi
    assert _decode(img) == ["sipas:t-a4cf12345678;office=ubnd-phuong-1;desk=quay-1"]
    text = rec.read_text()
    for key in ("hub_key", "district_key", "mqtt_password"):
        secret = re.search(rf'"{key}": "([^"]+)"', text)
        assert secret and secret.group(1) not in _decode(img)[0]


def test_pdf_sticker_has_the_real_size_and_a_readable_qr(tmp_path: Path) -> None:
    out = tmp_path / "sticker.pdf"
    res = CliRunner().invoke(
        app, ["label", "--record", str(_record(tmp_path)), "--out", str(out), "--lang", "en"]
    )
    assert res.exit_code == 0, res.output
    pdf = out.read_bytes()
    assert pdf.startswith(b"%PDF-")
    box = re.search(rb"/MediaBox \[ ?0 0 ([\d.]+) ([\d.]+) ?\]", pdf)
    assert box, "no page size"
    w_mm, h_mm = (float(v) / 72 * 25.4 for v in box.groups())
    assert abs(w_mm - 62) < 0.5 and abs(h_mm - 34) < 0.5
    # The page's image, as a printer gets it: the QR code must still read.
    start = pdf.index(b"stream", pdf.index(b"/Subtype /Image")) + len(b"stream\n")
    img = Image.open(io.BytesIO(pdf[start : pdf.index(b"endstream", start)]))
    assert _decode(img) == ["sipas:t-a4cf12345678;office=ubnd-phuong-1;desk=quay-1"]


def test_pilot_terminal_sticker_says_so_and_bad_requests_are_explained(tmp_path: Path) -> None:
    rec = records.load(_record(tmp_path, records.HUB_INTERIM))
    assert [t for t, _, _ in label.lines(rec)] == [
        "Thiết bị đánh giá",
        "t-a4cf12345678",
        "Quầy: quay-1",
        "Đơn vị: ubnd-phuong-1",
        "THỬ NGHIỆM",  # its district key came from the hub
    ]
    assert label.lines(rec, "en")[-1][0] == "PILOT"
    assert label.has_vietnamese_font(), "install Debian's fonts-dejavu-core (scripts/setup.sh)"
    res = CliRunner().invoke(
        app,
        ["label", "--record", str(tmp_path / "t-a4cf12345678.json"), "--out", "x.svg"],
        env={"COLUMNS": "200"},
    )
    assert res.exit_code == 2 and ".png or .pdf" in res.stderr
    res = CliRunner().invoke(
        app,
        ["label", "--record", str(tmp_path / "no.json"), "--out", "a.png"],
        env={"COLUMNS": "200"},
    )
    assert res.exit_code == 2 and "register the terminal first" in res.stderr
