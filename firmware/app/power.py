# Power modes. "mains": always connected, nothing to do here. "battery": the terminal deep-sleeps
# and any button wakes it (ext1); the press that woke it is counted with its feedback, the backlog
# is sent and acknowledged, a heartbeat goes out when one is due, and it sleeps again, never
# staying awake longer than battery_awake_max_s. Pure policy: what survives a deep sleep and when
# to sleep. The board does the hardware (app/hal.py on the ESP32, the host simulator's board):
#   board.wake_reason() -> "button" | "timer" | "other"    board.wake_buttons() -> [levels]
#   board.rtc_memory(data=None) -> bytes                     board.rtc_ms(): keeps counting in sleep
#   board.deep_sleep(timer_ms or None): never returns on the device; returns on the host.
# Tick counters restart at every wake, so times that must outlive a sleep (the last rating for the
# lockout, the prompt's end, the last heartbeat) are kept as RTC milliseconds in RTC memory.
import struct
from binascii import crc32

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


MAINS = "mains"
BATTERY = "battery"
WAKE_BUTTON = "button"
WAKE_TIMER = "timer"
WAKE_OTHER = "other"  # power-on or reset: RTC memory is not to be trusted
LINGER_MS = const(200)  # after a heartbeat: its PUBACK, and the hub's answer (e.g. the time)
MIN_TIMER_MS = const(1000)
_MAGIC = b"SPW1"
_FMT = "<4sIIqqqqIB"  # magic, wakes, since beat, beat, rating, prompt end, ntp (RTC ms), awake, ok
_NONE = const(-1)


class State:
    # What survives a deep sleep (RTC memory is lost on a power cut: then all is fresh).
    def __init__(self):
        self.wakes = 0
        self.since_beat = 0
        self.beat_rtc = _NONE
        self.rating_rtc = _NONE
        self.prompt_rtc = _NONE
        self.ntp_rtc = _NONE
        self.awake_ms = 0
        self.reached = 0  # the last wake reached the hub

    def pack(self):
        body = struct.pack(
            _FMT,
            _MAGIC,
            self.wakes,
            self.since_beat,
            self.beat_rtc,
            self.rating_rtc,
            self.prompt_rtc,
            self.ntp_rtc,
            self.awake_ms,
            self.reached,
        )
        return body + struct.pack("<I", crc32(body))

    @staticmethod
    def unpack(data):
        n = struct.calcsize(_FMT)
        if not data or len(data) != n + 4:
            return None
        data = bytes(data)
        if struct.unpack("<I", data[n:])[0] != crc32(data[:n]):
            return None
        f = struct.unpack(_FMT, data[:n])
        if f[0] != _MAGIC:
            return None
        s = State()
        s.wakes, s.since_beat, s.beat_rtc, s.rating_rtc, s.prompt_rtc, s.ntp_rtc = f[1:7]
        s.awake_ms, s.reached = f[7], f[8]
        return s


def since(now, then):
    # Milliseconds from `then` to `now` on the RTC, or None if unknown or the clock went back
    # (the RTC jumps when NTP or the hub sets the time).
    if then == _NONE or now < then:
        return None
    return now - then


class Power:
    def __init__(self, cfg, board):
        self.cfg = cfg
        self.board = board
        self.battery = cfg.get("power_mode") == BATTERY
        self.wake = WAKE_OTHER
        self.state = State()
        self.slept = False
        self.beat_wanted = False
        self._t0 = board.ticks_ms()
        self._beats0 = 0
        self._beat_done = False
        self._quiet_from = None
        self._reached = False
        if self.battery:
            self.wake = board.wake_reason()
            if self.wake != WAKE_OTHER:
                self.state = State.unpack(board.rtc_memory()) or State()
            self.state.wakes += 1
            self.state.since_beat += 1

    def beat_due(self, rtc_now):
        s, cfg = self.state, self.cfg
        age = since(rtc_now, s.beat_rtc)
        return (
            age is None
            or age >= cfg["battery_beat_s"] * 1000
            or s.since_beat >= cfg["battery_beat_wakes"]
        )

    def start(self, app):
        # Right after the App is built: restore what survived the sleep, then count the press that
        # woke the terminal (its feedback comes before anything touches the network). Returns the
        # levels pressed.
        if not self.battery:
            return []
        b, s, cfg = self.board, self.state, self.cfg
        now, rtc = b.ticks_ms(), b.rtc_ms()
        e = since(rtc, s.rating_rtc)
        if e is not None and e < cfg["lockout_s"] * 1000:
            app._last_rating_ms = b.ticks_add(now, -e)  # the lockout goes on across the sleep
        left = _NONE if s.prompt_rtc == _NONE else s.prompt_rtc - rtc
        if 0 < left <= 3600000:
            app.prompt_until = b.ticks_add(now, left)
        if s.ntp_rtc != _NONE and (since(rtc, s.ntp_rtc) or 0) < 21600000:
            app.link.ntp_skip = True
        # A new version on trial is confirmed by a heartbeat (app/ota.py): send one on this wake.
        self.beat_wanted = self.beat_due(rtc) or getattr(app, "ota", None) == "trial"
        self._beats0 = app.beats_sent
        app.beats = False  # the heartbeat goes after the backlog, so it carries the final last_seq
        # beat_s tells the hub how long a silence is normal for a sleeping terminal
        app.status_extra = {"power_mode": BATTERY, "wakes": s.wakes, "awake_ms": s.awake_ms,
                            "beat_s": self.cfg["battery_beat_s"]}  # fmt: skip
        # The press is stored before any connection: its feedback says "saved" (not "offline")
        # if the last wake reached the hub.
        app.online_hint = bool(s.reached)
        pressed = b.wake_buttons() if self.wake == WAKE_BUTTON else []
        for n in pressed:
            app.button(n)
        return pressed

    def awake_ms(self):
        return self.board.ticks_diff(self.board.ticks_ms(), self._t0)

    def step(self, app):
        # Call once per loop turn. True once the terminal went to sleep (only ever seen on the
        # host: on the device deep sleep does not return).
        if not self.battery or self.slept:
            return self.slept
        b = self.board
        if app.online():
            self._reached = True
        left = self.cfg["battery_awake_max_s"] * 1000 - self.awake_ms()
        if left <= 0:
            return self.sleep(app)  # unreachable hub: the ratings wait in flash for the next wake
        app.connect_timeout = max(1, min(5, left // 1000))  # a hanging connect ends in time
        held = getattr(b, "buttons_held", None)
        if not app.idle() or (held and held()):
            self._quiet_from = None
            return False
        linger = 0
        if self.beat_wanted and not self._beat_done:
            if app.beats_sent > self._beats0:
                self._beat_done = True
                app.beats = False
                self.state.beat_rtc = b.rtc_ms()
                self.state.since_beat = 0
            else:
                if app.online() and not app.beats:
                    app.beats = True
                    app.beat_now()
                return False
        if self._beat_done:
            linger = LINGER_MS
        now = b.ticks_ms()
        if self._quiet_from is None:
            self._quiet_from = now
        if b.ticks_diff(now, self._quiet_from) < linger:
            return False
        return self.sleep(app)

    def timer_ms(self, app, rtc_now):
        # When a timer should wake the terminal: to retry a backlog, and for the next heartbeat.
        cfg, s = self.cfg, self.state
        age = since(rtc_now, s.beat_rtc)
        beat = cfg["battery_beat_s"] * 1000
        t = beat - age if age is not None and age < beat else beat
        if app.outbox.depth():
            t = min(t, cfg["battery_retry_s"] * 1000)
        return max(t, MIN_TIMER_MS)

    def sleep(self, app):
        b, s = self.board, self.state
        now, rtc = b.ticks_ms(), b.rtc_ms()
        if app._last_rating_ms is not None:
            s.rating_rtc = rtc - b.ticks_diff(now, app._last_rating_ms)
        s.prompt_rtc = _NONE
        if app.prompt_until is not None:
            s.prompt_rtc = rtc + b.ticks_diff(app.prompt_until, now)
        if app.link.ntp_tries:
            s.ntp_rtc = rtc
        s.awake_ms = max(0, self.awake_ms())
        s.reached = 1 if self._reached else 0
        b.rtc_memory(s.pack())
        timer = self.timer_ms(app, rtc)
        held = getattr(b, "buttons_held", None)
        if held and held():
            # Still held after battery_awake_max_s (stuck, or leaned on): the board leaves it out
            # of the wake-up buttons (else it would wake at once, again and again), so come back
            # by timer to arm it once it is released.
            timer = min(timer, self.cfg["battery_retry_s"] * 1000)
        if getattr(app, "healthy", True) is False:
            # A wake that ends in a planned sleep is a healthy boot, even when the hub was out of
            # reach: without this, every wake would count as a failed boot (app/ota.py).
            from app import ota

            ota.mark_healthy(app)
        app.shutdown()
        self.slept = True
        b.deep_sleep(timer)
        return True
