# The ESP32 hardware layer: the only firmware module that imports machine/network.
# Everything else receives this Board (or the host simulator's) and never touches hardware.
import errno
import select
import socket
import time

import machine
import network

from app.pins import BUTTON_PINS, BUZZER_PIN, LED_PINS

DEBOUNCE_MS = 30
# Some MicroPython ports count time from 2000-01-01; the wire protocol uses Unix time.
EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0

_BEEPS = {
    "nearly_full": ((2000, 60), (0, 60), (600, 200)),
    "ask_reason": ((1500, 40), (0, 40), (1500, 40)),
    "reason": ((2500, 60),),
    "not_provisioned": ((300, 500),),
    "saved": ((2000, 60),),
    "saved_offline": ((2000, 60), (0, 60), (1500, 60)),
    "repeat": ((1200, 30),),
    "full": ((400, 400),),
    "error": ((400, 150), (0, 100), (400, 150)),
    "identify": ((2500, 100), (0, 100)) * 3,
    "prompt": (),
}


class Board:
    def __init__(self, levels=3):
        self.buttons = [
            machine.Pin(p, machine.Pin.IN, machine.Pin.PULL_DOWN) for p in BUTTON_PINS[:levels]
        ]
        self.leds = [machine.Pin(p, machine.Pin.OUT, value=0) for p in LED_PINS[:levels]]
        self.buzzer = machine.PWM(machine.Pin(BUZZER_PIN), freq=2000, duty=0)
        self._pressed = []
        self._since = [0] * levels
        for i, pin in enumerate(self.buttons):
            pin.irq(trigger=machine.Pin.IRQ_RISING, handler=self._irq(i))
        self.wlan = network.WLAN(network.STA_IF)
        self.wdt = None
        self._clock_ok = time.time() + EPOCH_OFFSET > 1700000000

    def _irq(self, i):
        def handler(pin):
            now = time.ticks_ms()
            d = time.ticks_diff(now, self._since[i])
            if d < 0 or d > DEBOUNCE_MS * 4:  # negative: the last press was days ago (ticks wrap)
                self._since[i] = now
                self._pressed.append(i)

        return handler

    def read_presses(self):
        # Debounced presses since the last call: a press shorter than DEBOUNCE_MS is noise.
        out = []
        while self._pressed:
            i = self._pressed.pop(0)
            time.sleep_ms(DEBOUNCE_MS)
            if self.buttons[i].value():
                out.append(i + 1)
        return out

    def start_watchdog(self, timeout_ms=30000):
        self.wdt = machine.WDT(timeout=timeout_ms)

    def feed_watchdog(self):
        if self.wdt:
            self.wdt.feed()

    ticks_ms = staticmethod(time.ticks_ms)
    ticks_diff = staticmethod(time.ticks_diff)
    ticks_add = staticmethod(time.ticks_add)
    sleep_ms = staticmethod(time.sleep_ms)

    def time(self):
        return int(time.time()) + EPOCH_OFFSET if self._clock_ok else None

    def set_time(self, t):
        tm = time.gmtime(t - EPOCH_OFFSET)
        machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6] + 1, tm[3], tm[4], tm[5], 0))
        self._clock_ok = True

    def sync_ntp(self):
        try:
            import ntptime

            ntptime.settime()
            self._clock_ok = True
        except Exception:
            pass

    def network_up(self):
        return self.wlan.isconnected()

    def connect_wifi(self, ssid, password):
        self.wlan.active(True)
        if not self.wlan.isconnected():
            self.wlan.connect(ssid, password)

    def open_socket(self, host, port, timeout, idle=None):
        # Non-blocking connect in 50 ms slices, calling idle() between them: while the hub is
        # unreachable a connect attempt takes seconds, and presses must still get their feedback.
        addr = socket.getaddrinfo(host, port)[0][-1]
        s = socket.socket()
        try:
            s.setblocking(False)
            try:
                s.connect(addr)
            except OSError as e:
                if e.errno not in (errno.EINPROGRESS, errno.EALREADY):
                    raise
            p = select.poll()
            p.register(s, select.POLLOUT)
            start = time.ticks_ms()
            while True:
                ev = p.poll(50)
                if ev:
                    if ev[0][1] & (select.POLLERR | select.POLLHUP):
                        raise OSError(errno.ECONNREFUSED)
                    break
                if idle:
                    idle()
                if time.ticks_diff(time.ticks_ms(), start) > timeout * 1000:
                    raise OSError(errno.ETIMEDOUT)
            s.setblocking(True)
            s.settimeout(timeout)
        except OSError:
            s.close()
            raise
        return s

    def feedback(self, kind, level):
        # LED under the pressed button and a short tone, before anything touches the network.
        if 1 <= level <= len(self.leds):
            self.leds[level - 1].value(1)
        for freq, ms in _BEEPS.get(kind, ()):
            if freq:
                self.buzzer.freq(freq)
                self.buzzer.duty(512)
            else:
                self.buzzer.duty(0)
            time.sleep_ms(ms)
        self.buzzer.duty(0)
        if 1 <= level <= len(self.leds):
            self.leds[level - 1].value(0)

    def reset(self):
        machine.reset()

    def stats(self):
        import gc

        try:
            rssi = self.wlan.status("rssi")
        except Exception:
            rssi = None
        return {"rssi": rssi, "mem_free": gc.mem_free(), "vsupply": None, "power": "mains"}
