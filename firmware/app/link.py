# The Wi-Fi station and the clock. While the station is down a new association is started with
# exponential back-off and jitter (never a reconnect storm; the board's connect only starts the
# association, so the buttons are never blocked), and NTP is retried until it succeeds, then
# repeated now and then because the RTC drifts (far more in deep sleep, on the 150 kHz RC clock).
try:
    from micropython import const
except ImportError:

    def const(x):
        return x


try:
    from random import getrandbits
except ImportError:  # a port without random: no jitter, the back-off still holds

    def getrandbits(n):
        return 0


WIFI_FIRST_MS = const(4000)  # an association with DHCP takes 1-3 s: do not restart it sooner
WIFI_MAX_MS = const(60000)
NTP_FIRST_MS = const(10000)
NTP_MAX_MS = const(600000)
NTP_EVERY_MS = const(21600000)  # 6 h


def jittered(delay, rand):
    # delay .. 1.25 x delay, for rand in 0..4095: terminals that lost the same access point do not
    # all come back in the same second.
    return delay + delay * rand // 16384


class Link:
    def __init__(self, board, ssid="", password="", rand=None):
        self.board = board
        self.ssid, self.password = ssid, password
        self._rand = rand or (lambda: getrandbits(12))
        self._connect = getattr(board, "connect_wifi", None)
        self._sync = getattr(board, "sync_ntp", None)
        self.up = False
        self.attempts = 0  # associations started (for tests and the status)
        self._next = None  # ticks of the next association attempt; None: at once
        self._delay = WIFI_FIRST_MS
        self.ntp_skip = False  # battery mode: synced recently, before the last deep sleep
        self.ntp_tries = 0
        self.ntp_ok = 0
        self._ntp_next = None
        self._ntp_delay = NTP_FIRST_MS

    def step(self):
        # One loop turn. Returns True on the turn the station comes up (the caller reconnects the
        # broker at once instead of waiting out its own back-off).
        b = self.board
        now = b.ticks_ms()
        if b.network_up():
            came = not self.up
            self.up = True
            self._next, self._delay = None, WIFI_FIRST_MS
            self._ntp(now)
            return came
        self.up = False
        if self._connect is None:
            return False
        if self._next is not None and b.ticks_diff(self._next, now) > 0:
            return False
        self.attempts += 1
        try:
            self._connect(self.ssid, self.password)
        except OSError:  # the driver refused (busy): counts as an attempt, retried later
            pass
        self._next = b.ticks_add(now, jittered(self._delay, self._rand()))
        self._delay = min(self._delay * 2, WIFI_MAX_MS)
        return False

    def _ntp(self, now):
        b = self.board
        if self._sync is None or (self.ntp_skip and b.time() is not None):
            return
        if self._ntp_next is not None and b.ticks_diff(self._ntp_next, now) > 0:
            return
        self.ntp_tries += 1
        if self._sync():
            self.ntp_ok += 1
            self._ntp_delay = NTP_FIRST_MS
            self._ntp_next = b.ticks_add(now, NTP_EVERY_MS)
        else:
            self._ntp_next = b.ticks_add(now, jittered(self._ntp_delay, self._rand()))
            self._ntp_delay = min(self._ntp_delay * 2, NTP_MAX_MS)
