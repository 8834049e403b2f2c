"""Run the real firmware application on CPython with a host hardware layer.

The terminal code under ``firmware/app`` is imported unchanged; only the board (pins, clock,
sockets, watchdog) is replaced by :class:`HostBoard`. The demo, the end-to-end tests and the
benchmarks drive terminals through this module.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

FIRMWARE_DIR = Path(__file__).resolve().parent.parent / "firmware"


def firmware_path(root: Path = FIRMWARE_DIR) -> None:
    """Make ``import app.*`` resolve to the firmware tree (as it does on the device)."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))


firmware_path()

from app import config as fw_config  # noqa: E402
from app.app import App  # noqa: E402


class HostBoard:
    """The board interface of ``firmware/app/hal.py``, on a PC.

    Feedback is recorded (and optionally printed) instead of lighting LEDs; ``network``
    can be switched off to simulate a Wi-Fi outage; ``clock_known`` simulates an unset RTC.
    """

    def __init__(
        self,
        *,
        clock_known: bool = True,
        on_feedback: Callable[[str, int], None] | None = None,
        tick_offset: int = 0,
    ):
        self._t0 = time.monotonic()
        self.tick_offset = tick_offset  # start the tick counter here (e.g. just before it wraps)
        self.clock_known = clock_known
        self.clock_offset = 0.0
        self.network = True
        self.feedbacks: list[tuple[str, int]] = []
        self.on_feedback = on_feedback
        self.watchdog_fed = 0
        self._pressed: list[int] = []
        self.unreachable_s = 0.0
        self.resets = 0

    # MicroPython's tick arithmetic: ticks wrap every 2**30 ms (12.4 days) and differences are
    # signed, so the simulator meets the same wrap-around as a terminal left on for weeks.
    TICKS_PERIOD = 1 << 30

    def ticks_ms(self) -> int:
        ms = int((time.monotonic() - self._t0) * 1000) + self.tick_offset
        return ms & (self.TICKS_PERIOD - 1)

    @classmethod
    def ticks_diff(cls, a: int, b: int) -> int:
        half = cls.TICKS_PERIOD // 2
        return ((a - b + half) & (cls.TICKS_PERIOD - 1)) - half

    @classmethod
    def ticks_add(cls, a: int, b: int) -> int:
        return (a + b) & (cls.TICKS_PERIOD - 1)

    @staticmethod
    def sleep_ms(ms: int) -> None:
        time.sleep(ms / 1000)

    def time(self) -> int | None:
        return int(time.time() + self.clock_offset) if self.clock_known else None

    def set_time(self, t: int) -> None:
        self.clock_offset = t - time.time()
        self.clock_known = True

    def network_up(self) -> bool:
        return self.network

    def read_presses(self) -> list[int]:
        """Buttons pressed since the last call (``queue_press`` stands in for the IRQ handler)."""
        out, self._pressed = self._pressed, []
        return out

    def queue_press(self, n: int) -> None:
        self._pressed.append(n)

    def open_socket(
        self, host: str, port: int, timeout: float, idle: Callable[[], None] | None = None
    ) -> socket.socket:
        if not self.network:
            raise OSError("network down (simulated)")
        if self.unreachable_s:  # a hub that is switched off: the connect attempt times out
            end = time.monotonic() + min(self.unreachable_s, timeout)
            while time.monotonic() < end:
                time.sleep(0.05)
                if idle:
                    idle()
            raise OSError("connect timed out (simulated unreachable hub)")
        s = socket.create_connection((host, port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def reset(self) -> None:
        """machine.reset() on the device: here, count it (the simulator keeps running)."""
        self.resets += 1

    def feed_watchdog(self) -> None:
        self.watchdog_fed += 1

    def feedback(self, kind: str, level: int) -> None:
        self.feedbacks.append((kind, level))
        if self.on_feedback:
            self.on_feedback(kind, level)

    def stats(self) -> dict[str, Any]:
        return {"rssi": -50, "mem_free": None, "vsupply": 5.0, "power": "mains"}


class SimTerminal:
    """A simulated terminal: firmware ``App`` + :class:`HostBoard` + an outbox on disk."""

    def __init__(self, cfg: dict[str, Any], workdir: Path, **board_kw: Any):
        cfg = dict(cfg)
        workdir.mkdir(parents=True, exist_ok=True)
        cfg["outbox_dir"] = str(workdir / "outbox")
        self.cfg = fw_config.validate(cfg)
        self.board = HostBoard(**board_kw)
        self.app = App(self.cfg, self.board, config_path=str(workdir / "config.json"))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def terminal_id(self) -> str:
        return str(self.cfg["terminal_id"])

    def press(self, level: int, reason: int = 0, test: bool = False) -> int | None:
        """A rating, as the hub's tests need it (a level, directly)."""
        with self._lock:
            seq: int | None = self.app.press(level, reason, test)
            return seq

    def button(self, n: int) -> int | None:
        """A physical button press (after a negative rating, it may choose the reason)."""
        with self._lock:
            seq: int | None = self.app.button(n)
            return seq

    def step(self, timeout_ms: int = 20) -> None:
        with self._lock:
            self.app.step(0)
        if timeout_ms:
            time.sleep(timeout_ms / 1000)

    def depth(self) -> int:
        with self._lock:
            d: int = self.app.outbox.depth()
            return d

    def start(self) -> None:
        """Run the main loop in a background thread (for the demo and load tests)."""

        def loop() -> None:
            while not self._stop.is_set():
                self.step(10)

        self._thread = threading.Thread(target=loop, name=f"sim-{self.terminal_id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        with self._lock:
            if self.app.client is not None:
                self.app.client.disconnect()
                self.app.client = None


def load_config(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data
