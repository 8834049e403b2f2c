# The terminal's application: press -> flash -> feedback -> publish; hub ack -> forget.
# Hardware, clock and sockets come from `board` (app/hal.py on the ESP32, a host board on CPython);
# nothing here touches hardware directly, so the same code runs in the simulator and the tests.
import json
from binascii import hexlify, unhexlify

from app import codec, commands, ota
from app.link import Link
from app.mqtt import MQTTClient, MQTTError
from app.outbox import Outbox, OutboxFull

FW_VERSION = "0.2.0"
OFFLINE = b'{"v":1,"state":"offline"}'

# Feedback patterns shown by board.feedback(kind, level); docs/firmware.md describes each.
FB_SAVED = "saved"
FB_SAVED_OFFLINE = "saved_offline"
FB_REPEAT = "repeat"
FB_NEARLY_FULL = "nearly_full"
FB_FULL = "full"
FB_ERROR = "error"
FB_ASK_REASON = "ask_reason"
FB_REASON = "reason"
FB_NOT_PROVISIONED = "not_provisioned"


class App:
    def __init__(
        self, cfg, board, outbox=None, client_factory=MQTTClient, config_path="/config.json",
        root=None, safe_mode=False,
    ):  # fmt: skip
        self.cfg = cfg
        self.config_path = config_path
        # The flash's root ("/" on the device, given by app/start.py): /ota.json, /app.new and
        # /bootfail live there. None (tests, the simple simulator): no update, no boot counting.
        self.root = root
        self.safe_mode = safe_mode  # docs/firmware.md "Safe mode": no reason step, no prompt
        self.ota = ota.state(self.root)  # None, "ok", "trial", "rolled_back" (for the heartbeat)
        self.healthy = False  # connected, or 5 minutes up: /bootfail is cleared (app/ota.py)
        self.board = board
        self.tid = cfg["terminal_id"]
        self.hub_key = unhexlify(cfg["hub_key"])
        self.district_key = unhexlify(cfg["district_key"])
        self.outbox = outbox or Outbox(cfg["outbox_dir"], cfg["epoch"], cfg["outbox_capacity"])
        base = "sipas/v1/%s/%s/" % (cfg["office"], self.tid)
        self.t_rating = base + "rating"
        self.t_status = base + "status"
        self.t_reply = base + "reply"
        self.t_ack = base + "ack"
        self.t_cmd = base + "cmd"
        self._client_factory = client_factory
        self.client = None
        self.inflight = {}  # seq -> ticks when published
        self.last_sent = 0
        self._last_rating_ms = None
        self._wait_from = None  # connect back-off: ticks of the last failure, and the delay
        self._wait_ms = 0
        self._backoff_ms = 500
        self._last_beat_ms = None
        self._beat_due = False
        self.prompt_until = None
        self.reboot_pending = False
        self._reason_from = None  # ticks of the negative press whose reason is being asked
        self._reason_level = 0
        woke = getattr(board, "wake_reason", None)
        slept = woke is not None and woke() in ("button", "timer")  # battery mode's deep sleep
        self.boots = commands.count_boot(cfg["outbox_dir"] + "/boots", not slept)
        self.link = Link(board, cfg["wifi_ssid"], cfg["wifi_password"])
        self.beats = True  # battery mode holds the heartbeat back until the backlog is sent
        self.beats_sent = 0
        self.status_extra = {}  # battery mode adds power_mode, wakes, awake_ms
        self.connect_timeout = 5  # s; battery mode shortens it to its remaining awake time
        self.online_hint = False  # battery mode: the last wake reached the hub (not yet connected)
        self._animating = False
        self.started_ms = board.ticks_ms()
        self.events = []  # (kind, detail) for the host simulator's display; bounded below

    # -- citizen side ------------------------------------------------------------------------
    def button(self, n):
        # A debounced press of button n (1 = leftmost). Right after a negative rating the buttons
        # mean the reasons printed under them, for reason_s seconds.
        b = self.board
        if self._reason_from is not None:
            since = b.ticks_diff(b.ticks_ms(), self._reason_from)
            if 0 <= since < self.cfg["reason_s"] * 1000 and n <= codec.REASON_MAX:
                level, self._reason_from = self._reason_level, None
                seq = self._store(level, n, codec.FLAG_FOLLOWUP)
                if seq is not None:
                    b.feedback(FB_REASON, n)
                return seq
            self._reason_from = None
        return self.press(n)

    def service_buttons(self):
        # Presses waiting on the board (the main loop also calls this between steps).
        for n in self.board.read_presses():
            self.button(n)

    def press(self, level, reason=0, test=False):
        # A rating. Returns the stored seq, or None if refused (outbox full).
        b = self.board
        now = b.ticks_ms()
        flags = codec.FLAG_TEST if test else 0
        lockout = self.cfg["lockout_s"] * 1000
        repeat = (
            self._last_rating_ms is not None
            and 0 <= b.ticks_diff(now, self._last_rating_ms) < lockout
        )
        if repeat:
            flags |= codec.FLAG_REPEAT
        else:
            self._last_rating_ms = now
        if self.prompt_until is not None:
            if b.ticks_diff(self.prompt_until, now) > 0:
                flags |= codec.FLAG_PROMPTED
            self.prompt_until = None
        seq = self._store(level, reason, flags)
        if seq is None:
            return None
        if repeat:
            kind = FB_REPEAT
        elif self.outbox.depth() * 10 >= self.outbox.capacity * 9:
            kind = FB_NEARLY_FULL
        else:
            kind = FB_SAVED if self.online() or self.online_hint else FB_SAVED_OFFLINE
        b.feedback(kind, level)
        if (
            not repeat
            and not test
            and self.cfg["reason_s"]
            and not self.safe_mode
            and codec.is_negative(level, self.cfg["scale"])
        ):
            self._reason_from, self._reason_level = now, level
            b.feedback(FB_ASK_REASON, level)
        return seq

    def _store(self, level, reason, flags):
        # Sign and write one record to flash; None (and the "full" pattern) if there is no room.
        b = self.board
        t = b.time()
        if t is None:
            flags |= codec.FLAG_CLOCK_UNKNOWN
            t = b.ticks_ms() // 1000
        seq = self.outbox.next_seq()
        cfg = self.cfg
        rec = codec.encode_rating(
            self.tid,
            self.hub_key,
            self.district_key,
            flags,
            cfg["epoch"],
            seq,
            t,
            level,
            reason,
            cfg["scale"],
        )
        try:
            self.outbox.append(rec)
        except OutboxFull:
            b.feedback(FB_FULL, level)
            self._event("full", level)
            return None
        self._event("press", seq)
        return seq

    # -- network side ------------------------------------------------------------------------
    def online(self):
        return self.client is not None and self.client.connected

    def step(self, timeout_ms=50):
        # One turn of the main loop: keep the link up, send the backlog, read acks and commands.
        b = self.board
        b.feed_watchdog()
        if not self.healthy:
            ota.check_health(self)
        if self.link.step():  # Wi-Fi is back: connect to the broker now, not after its back-off
            self._wait_from, self._backoff_ms = None, 500
        if self.client is not None and not self.link.up:
            # Wi-Fi lost: the open socket would only time out after up to 1.5 keepalives, and
            # presses meanwhile would be told "saved" (online) instead of "saved_offline".
            self._drop("Wi-Fi lost")
        self._expire(b.ticks_ms())
        self._animate()
        if not self.online():
            self._connect()
            if not self.online():
                b.sleep_ms(timeout_ms)
                return
        try:
            self._send_backlog()
            self._heartbeat()
            self.client.poll(timeout_ms)
        except (OSError, MQTTError) as e:
            self._drop("link lost: %s" % e)
        if self.reboot_pending:
            self.reboot_pending = False
            if self.client is not None:
                try:
                    self.client.disconnect()
                except Exception:
                    pass
            b.reset()  # ratings are safe in flash: nothing to lose

    def _expire(self, now):
        # Forget a finished lockout or prompt: ticks wrap on the device (every 2**30 ms, 12.4 days),
        # so an old stamp compared much later could look recent.
        b = self.board
        lockout = self.cfg["lockout_s"] * 1000
        if (
            self._last_rating_ms is not None
            and not 0 <= b.ticks_diff(now, self._last_rating_ms) < lockout
        ):
            self._last_rating_ms = None
        if self.prompt_until is not None and b.ticks_diff(self.prompt_until, now) <= 0:
            self.prompt_until = None
        if self._reason_from is not None and not (
            0 <= b.ticks_diff(now, self._reason_from) < self.cfg["reason_s"] * 1000
        ):
            self._reason_from = None

    def _connect(self):
        b = self.board
        now = b.ticks_ms()
        if self._wait_from is not None and 0 <= b.ticks_diff(now, self._wait_from) < self._wait_ms:
            return
        if not b.network_up():
            return  # the Wi-Fi link retries on its own back-off (app/link.py)
        cfg = self.cfg
        c = self._client_factory(
            self.tid,
            cfg["broker_host"],
            cfg["broker_port"],
            user=self.tid,
            password=cfg["mqtt_password"],
            keepalive=cfg["keepalive_s"],
            timeout=self.connect_timeout,
            sock_factory=lambda h, p, t: b.open_socket(h, p, t, self._idle),
            ticks_ms=b.ticks_ms,
            ticks_diff=b.ticks_diff,
            idle=self._idle,  # also while waiting for the CONNACK of a hung broker
        )
        c.on_message = self._on_message
        c.set_last_will(self.t_status, OFFLINE, retain=True, qos=1)
        try:
            c.connect(clean_session=True)
            c.subscribe(self.t_ack, 1)
            c.subscribe(self.t_cmd, 1)
        except Exception as e:  # OSError or MQTTError: both mean "try again later"
            try:
                c.close()
            except Exception:
                pass
            self._event("connect failed", str(e))
            self._retry_later()
            return
        self.client = c
        self._backoff_ms = 500
        self.inflight = {}
        self.last_sent = 0  # a new session: everything unacknowledged goes again, in order
        self._last_beat_ms = None
        self._event("online", cfg["broker_host"])

    def _retry_later(self):
        b = self.board
        self._wait_from = b.ticks_ms()
        self._wait_ms = self._backoff_ms
        self._backoff_ms = min(self._backoff_ms * 2, 30000)

    def _drop(self, why):
        if self.client is not None:
            try:
                self.client.close()
            except Exception:
                pass
        self.client = None
        self._event("offline", why)
        self._retry_later()

    def _send_backlog(self):
        b = self.board
        now = b.ticks_ms()
        limit = self.cfg["ack_timeout_s"] * 1000
        for seq in list(self.inflight):
            if not 0 <= b.ticks_diff(now, self.inflight[seq]) <= limit:
                # No ack in time: send it again (the hub treats a repeat as success).
                del self.inflight[seq]
                self.last_sent = min(self.last_sent, seq - 1)
        room = self.cfg["max_inflight"] - len(self.inflight)
        if room <= 0:
            return
        for seq, rec in self.outbox.pending(self.last_sent, room):
            if seq in self.inflight:
                continue
            self.client.publish(self.t_rating, rec, qos=1)
            self.inflight[seq] = now
            self.last_sent = max(self.last_sent, seq)

    def _heartbeat(self):
        # Every heartbeat_s, and soon after the outbox drains (so the hub and the district see the
        # final last_seq and an empty outbox), but never more often than heartbeat_min_s.
        b = self.board
        now = b.ticks_ms()
        if not self.beats:
            return
        if self._last_beat_ms is not None:
            since = b.ticks_diff(now, self._last_beat_ms)
            if 0 <= since < self.cfg["heartbeat_min_s"] * 1000:
                return
            if 0 <= since < self.cfg["heartbeat_s"] * 1000 and not self._beat_due:
                return
        self._last_beat_ms = now
        self._beat_due = False
        t = b.time()
        last = self.outbox.last_seq
        msg = codec.status_message(self.tid, self.cfg["epoch"], last, t or 0)
        st = {
            "v": 1,
            "state": "online",
            "fw": FW_VERSION,
            "epoch": self.cfg["epoch"],
            "last_seq": last,
            "outbox": self.outbox.depth(),
            "uptime": now // 1000,
            "boots": self.boots,
            "time": t or 0,
            "clock": t is not None,
            "tag": hexlify(codec.tag(self.hub_key, msg)).decode(),
            "dtag": hexlify(codec.tag(self.district_key, msg)).decode(),
        }
        if self.ota:
            st["ota"] = self.ota
        if self.safe_mode:
            st["safe_mode"] = True
        st.update(b.stats())
        st.update(self.status_extra)
        self.client.publish(self.t_status, json.dumps(st), qos=1, retain=True)
        self.beats_sent += 1
        ota.after_beat(self)  # the first heartbeat of a new version confirms it

    def _on_message(self, topic, payload):
        # A malformed message (even from the hub) is logged and dropped: it must never stop the loop.
        try:
            msg = json.loads(payload)
            if isinstance(msg, dict):
                self._dispatch(topic, msg)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            self._event("bad message", "%s: %s" % (topic, e))

    def _dispatch(self, topic, msg):
        if topic == self.t_ack:
            seqs = msg.get("seqs") or []
            n = self.outbox.ack(msg.get("epoch"), seqs)
            if n and not self.outbox.depth():
                self._beat_due = True
            for s in seqs:
                self.inflight.pop(s, None)
            self._event("ack", n)
            if msg.get("status") == "rejected":
                self.board.feedback(FB_ERROR, 0)
        elif topic == self.t_cmd:
            self._command(msg)

    def _command(self, msg):
        reply = commands.handle(self, msg)
        if self.online():
            self.client.publish(self.t_reply, json.dumps(reply), qos=1)

    def beat_now(self):
        self._last_beat_ms = None

    def idle(self):
        # Nothing left to do on this wake (battery mode): every rating acknowledged by the hub,
        # no reason being asked, no reboot waiting.
        return not self.outbox.depth() and self._reason_from is None and not self.reboot_pending

    def shutdown(self):
        # Before a deep sleep: leave the broker cleanly (no "offline" last will: it is asleep).
        if self.client is not None:
            try:
                self.client.disconnect()
            except Exception:
                pass
        self.client = None

    def _idle(self):
        # Between the 20 ms slices of a connect attempt: presses, and the prompt's breathing.
        self.service_buttons()
        self._animate()

    def _animate(self):
        # The breathing prompt LED, one frame per loop turn (board.animate never blocks); the
        # phase is the ms left in the prompt window.
        anim = getattr(self.board, "animate", None)
        if anim is None:
            return
        if self.prompt_until is not None:
            anim("prompt", self.board.ticks_diff(self.prompt_until, self.board.ticks_ms()))
            self._animating = True
        elif self._animating:
            anim(None, 0)
            self._animating = False

    def _event(self, kind, detail):
        self.events.append((kind, detail))
        if len(self.events) > 32:
            self.events.pop(0)
