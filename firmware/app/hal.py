# The ESP32 hardware layer: the only firmware module that imports machine/network/esp32.
# Everything else receives this Board (or the host simulator's) and never touches hardware.
import errno
import os
import select
import socket
import time

import esp32
import machine
import network
from app.pins import (
    BUTTON_PINS,
    BUZZER_PIN,
    LED_PINS,
    USB_SENSE_PIN,
    VSUPPLY_ADC_PIN,
    VSUPPLY_DIVIDER,
)
from micropython import const

DEBOUNCE_MS = 30
# Which pins woke the chip from deep sleep through ext1. Stock MicroPython does not expose
# esp_sleep_get_ext1_wakeup_status() (micropython/micropython issue 6981, open), and reading the
# button after the ~0.3 s boot misses a short press; the original ESP32 latches the answer in
# RTC_CNTL_EXT_WAKEUP1_STATUS_REG (RTC_CNTL base 0x3FF48000 + 0xD0; ESP32 Technical Reference
# Manual, "Low-Power Management"), one bit per RTC GPIO, kept until the next sleep is prepared.
_EXT1_STATUS_REG = const(0x3FF480D0)
_RTC_GPIO = {36: 0, 37: 1, 38: 2, 39: 3, 34: 4, 35: 5, 25: 6, 26: 7, 33: 8, 32: 9, 4: 10, 0: 11,
             2: 12, 15: 13, 13: 14, 12: 15, 14: 16, 27: 17}  # fmt: skip
BREATH_MS = const(3000)  # one breath of the prompt LED
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


def _original_esp32():
    try:  # e.g. "Generic ESP32 module with ESP32"; the S2/S3/C3 keep the status elsewhere
        return os.uname().machine.split()[-1] == "ESP32"
    except Exception:
        return False


def read_wake():
    # ("button", mask of RTC GPIOs), ("timer", 0) or ("other", 0): read first thing at boot.
    try:
        if machine.reset_cause() != machine.DEEPSLEEP_RESET:
            return "other", 0
        why = machine.wake_reason()
    except AttributeError:
        return "other", 0
    if why == machine.EXT1_WAKE:
        return "button", (machine.mem32[_EXT1_STATUS_REG] & 0x3FFFF) if _original_esp32() else 0
    if why == machine.TIMER_WAKE:
        return "timer", 0
    return "other", 0


def breath(phase_ms, top=1023):
    # Brightness of the breathing prompt LED: a triangle wave, squared (the eye sees brightness
    # roughly logarithmically, so a linear ramp looks like it jumps at the bottom).
    x = phase_ms % BREATH_MS
    half = BREATH_MS // 2
    x = x if x < half else BREATH_MS - x
    return top * x * x // (half * half)


class Board:
    def __init__(self, levels=3):
        self._wake = read_wake()
        self.levels = levels
        self.buttons = [
            machine.Pin(p, machine.Pin.IN, machine.Pin.PULL_DOWN) for p in BUTTON_PINS[:levels]
        ]
        self.leds = [machine.Pin(p, machine.Pin.OUT, value=0) for p in LED_PINS[:levels]]
        self.buzzer = machine.PWM(machine.Pin(BUZZER_PIN), freq=2000, duty=0)
        self._pressed = []
        self._since = [None] * levels  # ticks of each button's last accepted edge
        for i, pin in enumerate(self.buttons):
            pin.irq(trigger=machine.Pin.IRQ_RISING, handler=self._irq(i))
        self.wlan = network.WLAN(network.STA_IF)
        try:  # app/link.py is the one retry policy (back-off with jitter), not the driver's
            self.wlan.config(reconnects=0)
        except Exception:
            pass
        self.wdt = None
        self._clock_ok = time.time() + EPOCH_OFFSET > 1700000000
        self._pwm = None  # the LEDs' PWM while the prompt breathes
        self._adc = None
        self._usb = None
        try:  # 11 dB: the ADC reads up to ~3.1 V (3.3 V supply)
            self._adc = machine.ADC(machine.Pin(VSUPPLY_ADC_PIN))
            self._adc.atten(machine.ADC.ATTN_11DB)
        except Exception:  # no divider on this board (VSUPPLY_ADC_PIN None): reads as None
            self._adc = None
        try:
            self._usb = machine.Pin(USB_SENSE_PIN, machine.Pin.IN)
        except Exception:
            self._usb = None

    def _irq(self, i):
        def handler(pin):
            now = time.ticks_ms()
            last = self._since[i]
            d = 0 if last is None else time.ticks_diff(now, last)
            # none yet, or a new press (negative: the last one was days ago and ticks wrapped)
            if last is None or d < 0 or d > DEBOUNCE_MS * 4:
                self._since[i] = now
                self._pressed.append((i, now))

        return handler

    def read_presses(self):
        # Debounced presses since the last call: a button still down DEBOUNCE_MS after its rising
        # edge is a press; shorter is noise (or a release's bounce). Timed from the edge, not from
        # this call: the loop may come late (a beep, a flash write), and a quick tap that was
        # over by then + DEBOUNCE_MS would be lost without any feedback.
        out = []
        while self._pressed:
            i, at = self._pressed.pop(0)
            wait = DEBOUNCE_MS - time.ticks_diff(time.ticks_ms(), at)
            if wait > 0:
                time.sleep_ms(wait)
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
        # One NTP query (ntptime waits at most 1 s); app/link.py retries with back-off.
        try:
            import ntptime

            ntptime.settime()
            self._clock_ok = True
            return True
        except Exception:
            return False

    def network_up(self):
        return self.wlan.isconnected()

    def connect_wifi(self, ssid, password):
        # Starts an association and returns at once (the driver connects in the background).
        self.wlan.active(True)
        if self.wlan.isconnected() or self.wlan.status() == network.STAT_CONNECTING:
            return
        try:
            self.wlan.connect(ssid, password)
        except OSError:  # "sta is connecting" on some versions: drop it and start again
            self.wlan.disconnect()
            self.wlan.connect(ssid, password)

    # -- battery mode (app/power.py) -------------------------------------------------------
    def wake_reason(self):
        return self._wake[0]

    def wake_buttons(self):
        # The buttons (levels) whose press woke the chip, from the latched ext1 status; on a chip
        # without it, the buttons still held now (a short press may be over by then: lost).
        kind, mask = self._wake
        if kind != "button":
            return []
        out = [
            i + 1
            for i, p in enumerate(BUTTON_PINS[: self.levels])
            if p in _RTC_GPIO and (mask >> _RTC_GPIO[p]) & 1
        ]
        return out or [i + 1 for i, pin in enumerate(self.buttons) if pin.value()]

    def buttons_held(self):
        # ext1 wakes on a level: sleeping with a button held would wake at once.
        return any(pin.value() for pin in self.buttons)

    def rtc_ms(self):
        # The RTC keeps counting through deep sleep (ticks_ms restarts at every wake).
        try:
            return time.time_ns() // 1000000
        except AttributeError:
            return int(time.time()) * 1000

    def rtc_memory(self, data=None):
        rtc = machine.RTC()
        if data is None:
            return rtc.memory()
        rtc.memory(data)
        return data

    def deep_sleep(self, timer_ms=None):
        # Wake on any button (active-high, pull-downs: ext1 ANY_HIGH) or after timer_ms. The
        # internal pull-downs only hold in deep sleep if the RTC peripherals stay powered, so
        # the reference board has external ones (hardware/pinout).
        self._stop_breath()
        for led in self.leds:
            led.value(0)
        self.buzzer.duty(0)
        try:
            self.wlan.active(False)
        except Exception:
            pass
        for pin in self.buttons:
            pin.irq(handler=None)
        # ext1 ANY_HIGH wakes on a level: a button still held (stuck, or leaned on) would wake
        # the chip at once and count as a new press on every wake, never letting it sleep. Only
        # the released buttons wake it; app/power.py sets a timer that arms the others again.
        free = tuple(pin for pin in self.buttons if not pin.value())
        esp32.wake_on_ext1(pins=free, level=esp32.WAKEUP_ANY_HIGH)
        if timer_ms:
            machine.deepsleep(int(timer_ms))
        machine.deepsleep()

    def open_socket(self, host, port, timeout, idle=None):
        # Non-blocking connect in 20 ms slices, calling idle() between them: while the hub is
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
                ev = p.poll(20)
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

    def animate(self, kind, phase):
        # One frame of a background animation, called every loop turn (never blocks): "prompt"
        # breathes all the level LEDs; None switches them off.
        if kind != "prompt":
            self._stop_breath()
            return
        if self._pwm is None:
            self._pwm = [machine.PWM(led, freq=1000, duty=0) for led in self.leds]
        duty = breath(phase)
        for p in self._pwm:
            p.duty(duty)

    def _stop_breath(self):
        if self._pwm is not None:
            for p in self._pwm:
                p.deinit()
            self._pwm = None
            for led in self.leds:
                led.init(machine.Pin.OUT, value=0)

    def feedback(self, kind, level):
        # LED under the pressed button and a short tone, before anything touches the network.
        self._stop_breath()
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
        return {
            "rssi": rssi,
            "mem_free": gc.mem_free(),
            "vsupply": self.vsupply(),
            "power": self.power_source(),
        }

    def vsupply(self):
        # Supply voltage in volts (2 decimals) through the divider on VSUPPLY_ADC_PIN, or None
        # when the board has none: an ADC pin left floating reads noise, not a wrong voltage.
        if self._adc is None or not VSUPPLY_DIVIDER:
            return None
        try:
            uv = self._adc.read_uv()  # calibrated by the chip's eFuse values
        except AttributeError:
            uv = self._adc.read() * 3600000 // 4095  # older ports: raw, roughly 0-3.6 V at 11 dB
        v = uv * VSUPPLY_DIVIDER / 1000000
        return round(v, 2) if v >= 0.5 else None

    def power_source(self):
        # "mains" while USB/mains power is present (USB_SENSE_PIN high), else "battery"; None when
        # the board has no sense pin.
        if self._usb is None:
            return None
        return "mains" if self._usb.value() else "battery"
