"""``flash-micropython``: erase an ESP32 and write MicroPython at 0x1000, through esptool's API.

The image is checked (provisioning/serial_image.py) before the port is even opened, and the chip
is checked before anything is erased: an ESP32-S3 on the bench is refused, not bricked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioning.serial_image import FLASH_OFFSET, ImageInfo, check_esp32_image

FAST_BAUD = 460800


class FlashError(Exception):
    """Flashing stopped; the message says what to do."""


def connect_hint(port: str, detail: str) -> str:
    return (
        f"no ESP32 answered on {port} ({detail}). Check that the cable carries data and that no "
        "other program holds the port; if the board does not enter its bootloader by itself, "
        "hold its BOOT button, press and release EN (or RST), release BOOT, and run the command "
        "again"
    )


@dataclass(frozen=True)
class FlashResult:
    image: ImageInfo
    chip: str
    mac: str


class FlashProgress:
    """Reports from esptool: ``stage`` names a step, ``bytes`` advances the current one."""

    def stage(self, name: str) -> None: ...

    def advance(self, done: int, total: int) -> None: ...

    def line(self, text: str) -> None: ...


def _logger(ui: FlashProgress) -> Any:
    from esptool.logger import TemplateLogger

    class RichBridge(TemplateLogger):
        """esptool's output, handed to our progress display instead of stdout."""

        def print(self, *args: Any, **kwargs: Any) -> None:
            text = " ".join(str(a) for a in args).strip()
            if text:
                ui.line(text)

        def note(self, message: str) -> None:
            ui.line(f"note: {message}")

        def warning(self, message: str) -> None:
            ui.line(f"warning: {message}")

        def error(self, message: str) -> None:
            ui.line(f"error: {message}")

        def stage(self, finish: bool = False) -> None:
            pass

        def progress_bar(
            self,
            cur_iter: int,
            total_iters: int,
            prefix: str = "",
            suffix: str = "",
            bar_length: int = 30,
        ) -> None:
            ui.advance(cur_iter, total_iters)

        def set_verbosity(self, verbosity: str) -> None:
            pass

    return RichBridge()


def flash_micropython(
    port: str,
    firmware: Path,
    *,
    progress: FlashProgress | None = None,
    erase: bool = True,
    baud: int = FAST_BAUD,
    connect_attempts: int = 3,
    check: Callable[[Path], ImageInfo] = check_esp32_image,
) -> FlashResult:
    """Check the image, connect, check the chip, erase, write at 0x1000, reset.

    Raises ImageError (wrong file: nothing was touched) or FlashError."""
    ui = progress or FlashProgress()
    info = check(firmware)  # before the port is opened
    data = firmware.read_bytes()

    from esp_pylib.errors import FatalError
    from esp_pylib.logger import EspLog
    from esptool.cmds import (
        attach_flash,
        detect_chip,
        erase_flash,
        reset_chip,
        run_stub,
        write_flash,
    )

    previous = EspLog.instance
    from esptool.logger import log

    log.set_logger(_logger(ui))
    try:
        ui.stage("connect")
        try:
            probe = detect_chip(port, connect_attempts=connect_attempts)
        except (FatalError, OSError) as e:
            raise FlashError(connect_hint(port, _first_line(e))) from e
        with probe as esp:
            if esp.CHIP_NAME != "ESP32":
                raise FlashError(
                    f"the board on {port} is an {esp.CHIP_NAME}, not an ESP32: the SIPAS "
                    "terminal is built on an ESP32 (DevKitC-class) board; nothing was written"
                )
            chip = str(esp.get_chip_description())
            mac = ":".join(f"{b:02x}" for b in esp.read_mac())
            try:
                esp = run_stub(esp)
                if baud != esp.ESP_ROM_BAUD:
                    esp.change_baud(baud)
                attach_flash(esp)
                if erase:
                    ui.stage("erase")
                    erase_flash(esp)
                ui.stage("write")
                write_flash(esp, [(FLASH_OFFSET, data)])
                reset_chip(esp, "hard-reset")
            except (FatalError, OSError) as e:
                raise FlashError(
                    f"flashing {port} failed ({_first_line(e)}): the board may be half-written. "
                    "Unplug it, plug it in again and run flash-micropython again; if it fails "
                    "again try --baud 115200 or another USB cable"
                ) from e
    finally:
        EspLog.instance = previous
    return FlashResult(info, chip, mac)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
