"""Serial ports and the Espressif chip on each, through pyserial and esptool's Python API."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass

from serial.tools import list_ports

# USB-serial bridges found on ESP32 boards, by USB vendor:product id.
BRIDGES = {
    (0x10C4, 0xEA60): "CP210x (Silicon Labs)",
    (0x1A86, 0x7523): "CH340 (WCH)",
    (0x1A86, 0x55D4): "CH9102 (WCH)",
    (0x1A86, 0x55D3): "CH343 (WCH)",
    (0x0403, 0x6001): "FT232R (FTDI)",
    (0x0403, 0x6010): "FT2232 (FTDI)",
    (0x303A, 0x1001): "Espressif USB (S2/S3/C3: not the SIPAS board)",
}

NO_PORT_HINT = (
    "no serial port found. Plug the ESP32 board in with a data USB cable (some cables only "
    "charge), then run this again. If it still does not show: the board's USB chip needs a "
    "driver on Windows and macOS (CP210x from Silicon Labs, CH340/CH9102 from WCH); on Linux "
    "check `dmesg | tail` right after plugging in (brltty can grab CH340 boards: "
    "`sudo apt-get remove brltty`)"
)


@dataclass(frozen=True)
class Port:
    device: str
    description: str
    bridge: str | None  # the USB-serial chip, if known
    usb: str | None  # "vvvv:pppp", None for a built-in UART


@dataclass(frozen=True)
class Detected:
    chip: str | None  # "ESP32-D0WD-V3 (revision v3.1)", None if no chip answered
    mac: str | None  # "24:a1:60:0b:3c:1d"
    family: str | None = None  # esptool's chip name: "ESP32", "ESP32-S3", ...
    error: str | None = None


def serial_ports(include_builtin: bool = False) -> list[Port]:
    """USB serial ports (a board shows up as one); built-in UARTs (ttyS*) only on request."""
    out = []
    for p in sorted(list_ports.comports(), key=lambda p: p.device):
        usb = f"{p.vid:04x}:{p.pid:04x}" if p.vid is not None and p.pid is not None else None
        if usb is None and not include_builtin:
            continue
        bridge = BRIDGES.get((p.vid, p.pid)) if usb else None
        desc = p.description if p.description and p.description != "n/a" else ""
        out.append(Port(p.device, desc, bridge, usb))
    return out


@contextlib.contextmanager
def _quiet_esptool() -> Iterator[io.StringIO]:
    """esptool prints its progress to stdout; keep it off ours (it is read on failure only)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        yield buf


def detect(port: str, attempts: int = 2) -> Detected:
    """Ask the ROM bootloader which chip it is (this resets the board; main.py restarts)."""
    from esp_pylib.errors import FatalError
    from esptool.cmds import detect_chip, reset_chip

    try:
        with _quiet_esptool(), detect_chip(port, connect_attempts=attempts) as esp:
            chip = esp.get_chip_description()
            mac = ":".join(f"{b:02x}" for b in esp.read_mac())
            family = str(esp.CHIP_NAME)
            reset_chip(esp, "hard-reset")
    except (FatalError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return Detected(None, None, None, first)
    return Detected(chip, mac, family)
