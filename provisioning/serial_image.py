"""Is this file a MicroPython image for the original ESP32? Checked before anything is written.

An Espressif image starts with a 24-byte header: magic ``0xE9``, the number of segments, flash
mode, flash size/frequency, the entry point, then the extended header whose bytes 12-13 hold the
chip id (0 = ESP32, 2 = ESP32-S2, 5 = ESP32-C3, 9 = ESP32-S3, ...). Each segment is a load address
and a length followed by its bytes; a checksum byte ends the image on a 16-byte boundary.

MicroPython's ``ESP32_GENERIC`` download is a merged image written at 0x1000: it starts with the
second-stage bootloader, whose segments load into RAM. The application-only file (``.app-bin``,
written at 0x10000) maps segments into flash instead: written at 0x1000 it would not boot.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

DOWNLOAD_URL = "https://micropython.org/download/ESP32_GENERIC/"
ESP_IMAGE_MAGIC = 0xE9
ESP32_CHIP_ID = 0
FLASH_OFFSET = 0x1000  # where the merged ESP32 image goes
HEADER_LEN = 24
MAX_SEGMENTS = 16

CHIP_NAMES = {
    0: "ESP32",
    2: "ESP32-S2",
    5: "ESP32-C3",
    9: "ESP32-S3",
    12: "ESP32-C2",
    13: "ESP32-C6",
    16: "ESP32-H2",
    18: "ESP32-P4",
    20: "ESP32-C61",
    23: "ESP32-C5",
}

# Address ranges the ESP32 maps from flash (DROM, IROM): only an application image loads there.
_FLASH_MAPPED = ((0x3F400000, 0x3F800000), (0x400C2000, 0x40C00000))

WHICH_FILE = (
    f"download the ESP32_GENERIC firmware (.bin, not .app-bin) from {DOWNLOAD_URL} "
    "and pass that file to --firmware"
)


class ImageError(Exception):
    """Not an image this tool will write to an ESP32; the message says which file to use."""


@dataclass(frozen=True)
class ImageInfo:
    path: Path
    size: int
    chip: str
    segments: int
    entry: int
    flash_mode: int


def _flash_mapped(addr: int) -> bool:
    return any(lo <= addr < hi for lo, hi in _FLASH_MAPPED)


def check_esp32_image(path: Path) -> ImageInfo:
    """Parse the header and walk the segments; raise :class:`ImageError` unless it is an ESP32
    bootloader-first (merged) image with a correct checksum."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageError(f"cannot read {path}: {e.strerror or e}") from e
    name = path.name
    if len(data) < HEADER_LEN or data[0] != ESP_IMAGE_MAGIC:
        first = f"0x{data[0]:02x}" if data else "nothing (empty file)"
        raise ImageError(
            f"{name} is not an ESP32 firmware image (it starts with {first}, an image starts "
            f"with 0xe9): {WHICH_FILE}"
        )
    count, flash_mode, _size_freq, entry = struct.unpack_from("<BBBI", data, 1)
    chip_id = struct.unpack_from("<H", data, 12)[0]
    if chip_id != ESP32_CHIP_ID:
        chip = CHIP_NAMES.get(chip_id, f"an unknown chip (id {chip_id})")
        raise ImageError(
            f"{name} is a firmware image for {chip}, not for the original ESP32 that the "
            f"SIPAS terminal uses: {WHICH_FILE}"
        )
    if not 1 <= count <= MAX_SEGMENTS:
        raise ImageError(f"{name} has a damaged header ({count} segments): {WHICH_FILE}")
    pos, checksum = HEADER_LEN, 0xEF
    for i in range(count):
        if pos + 8 > len(data):
            raise ImageError(f"{name} is truncated (in segment {i + 1} of {count}): {WHICH_FILE}")
        addr, length = struct.unpack_from("<II", data, pos)
        pos += 8
        if pos + length > len(data):
            raise ImageError(f"{name} is truncated (segment {i + 1} of {count}): {WHICH_FILE}")
        if _flash_mapped(addr):
            raise ImageError(
                f"{name} is an application-only image (it loads into flash at 0x{addr:08x}); "
                f"written at 0x{FLASH_OFFSET:x} it would not boot: {WHICH_FILE}"
            )
        for b in data[pos : pos + length]:
            checksum ^= b
        pos += length
    pos = (pos + 16) & ~15  # the checksum is the last byte of the next 16-byte boundary
    if pos > len(data):
        raise ImageError(f"{name} is truncated (no checksum): {WHICH_FILE}")
    if data[pos - 1] != checksum:
        raise ImageError(
            f"{name} is damaged (checksum 0x{data[pos - 1]:02x}, computed 0x{checksum:02x}): "
            f"download it again. {WHICH_FILE}"
        )
    return ImageInfo(path, len(data), "ESP32", count, entry, flash_mode)
