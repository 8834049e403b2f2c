"""``flash-micropython`` checks the firmware file before anything is written, on images built
here with the real structure (checked by the real ``esptool image-info``), and gets as far as
talking to a chip through the real esptool; ``ports`` says what to do when no board is plugged in."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from provisioning.cli import app
from provisioning.serial_image import DOWNLOAD_URL, ImageError, check_esp32_image

pytestmark = pytest.mark.integration

# A second-stage bootloader's segments load into RAM (DRAM 0x3FFxxxxx, IRAM 0x4007xxxx-0x4009xxxx);
# an application's first segments are mapped from flash (DROM 0x3F400000...).
BOOTLOADER_SEGMENTS = ((0x3FFF0030, 0x400), (0x40078000, 0x1800), (0x40080400, 0x600))
APP_SEGMENTS = ((0x3F400020, 0x800), (0x3FFB0000, 0x200), (0x400D0020, 0x1000))


def esp_image(segments: Any = BOOTLOADER_SEGMENTS, chip_id: int = 0, pad_to: int = 0) -> bytes:
    """An Espressif image: header (magic 0xE9, segment count, DIO, 4 MB/40 MHz, entry), extended
    header (chip id), segments, checksum on a 16-byte boundary, then padding (a merged image)."""
    entry = 0x40080400 + 0x100
    out = bytearray(struct.pack("<BBBBI", 0xE9, len(segments), 2, 0x20, entry))
    # extended header: wp pin, drive settings, chip id, min rev, min/max rev full, reserved, hash
    out += struct.pack("<B3sHBHH4sB", 0xEE, b"\0\0\0", chip_id, 0, 0, 0xFFFF, b"\0" * 4, 0)
    checksum = 0xEF
    for i, (addr, length) in enumerate(segments):
        body = bytes((i * 37 + n * 11) & 0xFF for n in range(length))
        out += struct.pack("<II", addr, length) + body
        for b in body:
            checksum ^= b
    while len(out) % 16 != 15:
        out.append(0)
    out.append(checksum)
    if pad_to > len(out):
        out += b"\xff" * (pad_to - len(out))
    return bytes(out)


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200", "NO_COLOR": "1"})


@pytest.fixture
def silent_port() -> Iterator[tuple[str, int]]:
    """A serial port with a board that does not answer esptool (not in its bootloader)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    yield os.ttyname(slave), master
    os.close(master)
    os.close(slave)


def _drain(master: int) -> bytes:
    try:
        return os.read(master, 65536)
    except BlockingIOError:
        return b""


def test_esptool_reads_the_built_image_as_an_esp32_image(tmp_path: Path) -> None:
    f = tmp_path / "ESP32_GENERIC-v1.27.0.bin"
    f.write_bytes(esp_image(pad_to=0x8000))
    p = subprocess.run(
        [sys.executable, "-m", "esptool", "image-info", str(f)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Detected image type: ESP32\n" in p.stdout
    assert "Chip ID: 0 (ESP32)" in p.stdout and "Segments: 3" in p.stdout, p.stdout
    assert "(valid)" in p.stdout  # esptool's own checksum verdict
    info = check_esp32_image(f)
    assert (info.chip, info.segments, info.entry) == ("ESP32", 3, 0x40080500)


def test_esptool_sees_an_s3_image_as_s3_and_the_tool_refuses_it(tmp_path: Path) -> None:
    f = tmp_path / "ESP32_GENERIC_S3-v1.27.0.bin"
    f.write_bytes(esp_image(chip_id=9))
    p = subprocess.run(
        [sys.executable, "-m", "esptool", "image-info", str(f)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "ESP32-S3" in p.stdout + p.stderr
    with pytest.raises(ImageError) as e:
        check_esp32_image(f)
    assert "for ESP32-S3, not for the original ESP32" in str(e.value)
    assert DOWNLOAD_URL in str(e.value)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (esp_image(chip_id=5), "firmware image for ESP32-C3"),
        (b"PK\x03\x04 a zip file, not firmware" * 40, "it starts with 0x50"),
        (b"", "nothing (empty file)"),
        (esp_image(APP_SEGMENTS), "application-only image"),
        (esp_image()[:-1] + b"\x00", "is damaged (checksum"),
        (esp_image()[:100], "is truncated"),
    ],
)
def test_wrong_files_are_refused_with_the_file_to_download(
    tmp_path: Path, image: bytes, expected: str
) -> None:
    f = tmp_path / "firmware.bin"
    f.write_bytes(image)
    with pytest.raises(ImageError) as e:
        check_esp32_image(f)
    assert expected in str(e.value)
    assert DOWNLOAD_URL in str(e.value)


def test_flash_refuses_an_s3_image_without_touching_the_port(
    tmp_path: Path, silent_port: tuple[str, int]
) -> None:
    port, master = silent_port
    f = tmp_path / "ESP32_GENERIC_S3.bin"
    f.write_bytes(esp_image(chip_id=9))
    r = cli("flash-micropython", "--port", port, "--firmware", str(f))
    assert r.exit_code == 2
    assert "ESP32-S3" in r.stderr and "ESP32_GENERIC" in r.stderr
    assert _drain(master) == b""  # not a byte was sent to the board


def test_flash_accepts_an_esp32_image_and_goes_on_to_the_chip(
    tmp_path: Path, silent_port: tuple[str, int]
) -> None:
    port, master = silent_port
    f = tmp_path / "ESP32_GENERIC.bin"
    f.write_bytes(esp_image(pad_to=0x10000))
    r = cli("flash-micropython", "--port", port, "--firmware", str(f))
    assert r.exit_code == 5, r.output
    assert f"no ESP32 answered on {port}" in r.stderr
    assert "hold its BOOT button" in r.stderr
    sent = _drain(master)
    assert b"\xc0\x00\x08" in sent  # esptool's SLIP-framed SYNC command reached the port


def test_ports_without_a_board_says_how_to_connect_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from serial.tools import list_ports, list_ports_common

    # The machine's own UART (ttyS0) is listed by the OS but is not where a board appears.
    uart = list_ports_common.ListPortInfo("/dev/ttyS0")
    monkeypatch.setattr(list_ports, "comports", lambda *a, **k: [uart])
    r = cli("ports")
    assert r.exit_code == 5
    assert "no serial port found" in r.stderr
    assert "CP210x" in r.stderr and "CH340" in r.stderr and "data USB cable" in r.stderr
    listed = cli("ports", "--all", "--no-detect")
    assert listed.exit_code == 0, listed.output
    assert "/dev/ttyS0" in listed.stdout and "built-in UART" in listed.stdout


def test_ports_on_this_machine_lists_no_usb_board() -> None:
    # No ESP32 is plugged into the machines this suite runs on: the real enumeration says so.
    r = cli("ports")
    assert r.exit_code == 5 and "no serial port found" in r.stderr


def test_ports_shows_a_port_whose_board_does_not_answer(
    monkeypatch: pytest.MonkeyPatch, silent_port: tuple[str, int]
) -> None:
    from serial.tools import list_ports, list_ports_common

    port, _ = silent_port
    usb = list_ports_common.ListPortInfo(port)
    usb.vid, usb.pid, usb.description = 0x10C4, 0xEA60, "CP2102 USB to UART Bridge Controller"
    monkeypatch.setattr(list_ports, "comports", lambda *a, **k: [usb])
    r = cli("ports")
    assert r.exit_code == 0, r.output
    assert port in r.stdout and "CP210x (Silicon Labs)" in r.stdout
    assert "no chip answered" in r.stdout
