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
from collections import deque
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
from app.power import Power  # noqa: E402


class HostClock:
    """The simulator's time: the host's clocks, which a test may speed up or jump forward.

    So an outage of days (and the tick counter's wrap every 12.4 days) takes seconds: ``advance``
    jumps (time that passed while the main loop kept turning), ``set_rate(r)`` makes each real
    second count as ``r`` seconds (a time-lapse: back-off, lockout and ack timers run ``r`` times
    faster). Sleeps, socket timeouts and the watchdog stay on real time. A board made without a
    clock gets its own, which follows the host's clocks exactly.
    """

    def __init__(self, rate: float = 1.0) -> None:
        self._lock = threading.Lock()
        self._real0 = time.monotonic()
        self._wall0 = time.time()
        self._sim0 = 0.0  # simulated seconds elapsed at _real0
        self._rate = rate

    def elapsed(self) -> float:
        """Simulated seconds since this clock was made."""
        with self._lock:
            return self._sim0 + (time.monotonic() - self._real0) * self._rate

    def time(self) -> float:
        """Simulated Unix time."""
        return self._wall0 + self.elapsed()

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._sim0 += seconds

    def set_rate(self, rate: float) -> None:
        with self._lock:
            now = time.monotonic()
            self._sim0 += (now - self._real0) * self._rate
            self._real0, self._rate = now, rate


class HostBoard:
    """The board interface of ``firmware/app/hal.py``, on a PC.

    Feedback is recorded (and optionally printed) instead of lighting LEDs; ``network``
    can be switched off to simulate a Wi-Fi outage (``network_up()`` says so; a connection already
    open is not cut, as on the device, where only the missing replies would tell);
    ``clock_known`` simulates an unset RTC; ``clock`` (a :class:`HostClock`) lets a test
    fast-forward time. Every watchdog feed is stamped with the host's real monotonic time.
    """

    def __init__(
        self,
        *,
        clock_known: bool = True,
        on_feedback: Callable[[str, int], None] | None = None,
        tick_offset: int = 0,
        clock: HostClock | None = None,
    ):
        self.clock = clock or HostClock()
        self._t0 = self.clock.elapsed()
        self.tick_offset = tick_offset  # start the tick counter here (e.g. just before it wraps)
        self.clock_known = clock_known
        self.clock_offset = 0.0
        self.network = True
        self.feedbacks: list[tuple[str, int]] = []
        self.on_feedback = on_feedback
        self.watchdog_fed = 0
        self.watchdog_feeds: deque[float] = deque(maxlen=100_000)  # time.monotonic() of each feed
        self._pressed: list[int] = []
        self.unreachable_s = 0.0
        self.resets = 0
        # Wi-Fi (app/link.py): ``network`` is the access point being there. With ``wifi_manual``
        # the station comes back after an outage only through connect_wifi(), as on the device
        # (app/hal.py turns the driver's own reconnects off); otherwise it follows ``network``.
        self.wifi_manual = False
        self.wifi_attempts: list[int] = []  # ticks_ms() of each connect_wifi()
        self._associated = True
        self.ntp_available = False  # no NTP server in the simulation unless a test says so
        self.ntp_tries = 0
        # The breathing prompt LED: the last frames given to animate(kind, phase).
        self.animations: deque[tuple[str | None, int]] = deque(maxlen=10_000)
        self.vsupply: float | None = 5.0  # what stats() reports (supply voltage, power source)
        self.power = "mains"
        # Battery mode (app/power.py): deep sleep ends the "boot"; a queued press or the timer
        # wakes it (SimTerminal boots the application again); RTC memory survives the sleep.
        self.asleep = False
        self.sleeps: list[dict[str, Any]] = []
        self.woke_at: float | None = None  # time.perf_counter() of the last wake
        self._rtc_memory = b""
        self._wake: tuple[str, list[int]] = ("other", [])
        self._timer_at: float | None = None

    # MicroPython's tick arithmetic: ticks wrap every 2**30 ms (12.4 days) and differences are
    # signed, so the simulator meets the same wrap-around as a terminal left on for weeks.
    TICKS_PERIOD = 1 << 30
    # hal.open_socket serves the buttons between slices of this length while a connect hangs.
    CONNECT_SLICE_MS = 20

    def ticks_ms(self) -> int:
        ms = int((self.clock.elapsed() - self._t0) * 1000) + self.tick_offset
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
        return int(self.clock.time() + self.clock_offset) if self.clock_known else None

    def set_time(self, t: int) -> None:
        self.clock_offset = t - self.clock.time()
        self.clock_known = True

    def network_up(self) -> bool:
        if not self.network:
            self._associated = False
            return False
        return self._associated or not self.wifi_manual

    def connect_wifi(self, ssid: str, password: str) -> None:
        """Start an association (returns at once, as on the device); it succeeds if the access
        point is there."""
        self.wifi_attempts.append(self.ticks_ms())
        self._associated = self.network

    def sync_ntp(self) -> bool:
        self.ntp_tries += 1
        if self.ntp_available:
            self.set_time(int(self.clock.time()))
        return self.ntp_available

    def animate(self, kind: str | None, phase: int) -> None:
        self.animations.append((kind, phase))

    # -- battery mode: the hal.Board calls of app/power.py -----------------------------------
    def wake_reason(self) -> str:
        return self._wake[0]

    def wake_buttons(self) -> list[int]:
        return list(self._wake[1])

    def buttons_held(self) -> bool:
        return False

    def rtc_ms(self) -> int:
        """The RTC: keeps counting through deep sleep, jumps when the time is set."""
        return int((self.clock.time() + self.clock_offset) * 1000)

    def rtc_memory(self, data: bytes | None = None) -> bytes:
        if data is not None:
            self._rtc_memory = bytes(data)
        return self._rtc_memory

    def deep_sleep(self, timer_ms: int | None = None) -> None:
        """machine.deepsleep(): recorded; the "boot" ends (SimTerminal stops running the
        application) until :meth:`wake_if_due` finds a queued press or the timer due."""
        self.asleep = True
        self._associated = False  # the radio is off in deep sleep
        self._timer_at = self.clock.elapsed() + timer_ms / 1000 if timer_ms else None
        self.sleeps.append(
            {"at": time.perf_counter(), "timer_ms": timer_ms, "awake_ms": self.ticks_ms()}
        )

    def wake_if_due(self) -> bool:
        """End a deep sleep if a button was pressed (ext1) or the timer ran out: the tick
        counter restarts from 0, RTC memory is kept."""
        if not self.asleep:
            return False
        if self._pressed:
            self._wake = ("button", [self._pressed.pop(0)])
        elif self._timer_at is not None and self.clock.elapsed() >= self._timer_at:
            self._wake = ("timer", [])
        else:
            return False
        self.asleep = False
        self._t0 = self.clock.elapsed()
        self.tick_offset = 0
        self.woke_at = time.perf_counter()
        return True

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
                time.sleep(self.CONNECT_SLICE_MS / 1000)
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
        self.watchdog_feeds.append(time.monotonic())

    def longest_watchdog_gap(self, since: float, until: float | None = None) -> float:
        """The longest time (real seconds) the watchdog went unfed between ``since`` and ``until``
        (``time.monotonic()`` values; ``until`` defaults to now)."""
        end = time.monotonic() if until is None else until
        stamps = [since] + [t for t in list(self.watchdog_feeds) if since < t < end] + [end]
        return max(b - a for a, b in zip(stamps, stamps[1:], strict=False))

    def feedback(self, kind: str, level: int) -> None:
        self.feedbacks.append((kind, level))
        if self.on_feedback:
            self.on_feedback(kind, level)

    def stats(self) -> dict[str, Any]:
        return {"rssi": -50, "mem_free": None, "vsupply": self.vsupply, "power": self.power}


class SimTerminal:
    """A simulated terminal: firmware ``App`` + :class:`HostBoard` + an outbox on disk."""

    def __init__(self, cfg: dict[str, Any], workdir: Path, **board_kw: Any):
        cfg = dict(cfg)
        workdir.mkdir(parents=True, exist_ok=True)
        cfg["outbox_dir"] = str(workdir / "outbox")
        self.cfg = fw_config.validate(cfg)
        self.board = HostBoard(**board_kw)
        self._config_path = str(workdir / "config.json")
        self.app = App(self.cfg, self.board, config_path=self._config_path)
        self.power = Power(self.cfg, self.board)  # battery mode: deep sleep between presses
        self.power.start(self.app)
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
        """A physical button press (after a negative rating, it may choose the reason). A sleeping
        battery-mode terminal wakes on it (ext1) and counts it as the press that woke it."""
        with self._lock:
            if self.board.asleep:
                self.board.queue_press(n)
                self.board.wake_if_due()
                before = self.app.outbox.last_seq
                self._boot()
                woke: int | None = self.app.outbox.last_seq
                return woke if woke != before else None
            seq: int | None = self.app.button(n)
            return seq

    def step(self, timeout_ms: int = 20) -> None:
        with self._lock:
            if self.board.asleep:
                if self.board.wake_if_due():
                    self._boot()
            else:
                if self.power.battery:
                    self.app.service_buttons()
                self.app.step(0)
                self.power.step(self.app)
        if timeout_ms:
            time.sleep(timeout_ms / 1000)

    def _boot(self) -> None:
        """A wake from deep sleep boots the application again (as main.py does on the device);
        the outbox, the configuration and RTC memory are what survived."""
        self.app = App(self.cfg, self.board, config_path=self._config_path)
        self.power = Power(self.cfg, self.board)
        self.power.start(self.app)

    @property
    def asleep(self) -> bool:
        return self.board.asleep

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
