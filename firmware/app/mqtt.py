# Small MQTT 3.1.1 client, the same code on MicroPython (ESP32) and CPython. Unlike umqtt.simple
# every socket call is bounded (socket timeout, select.poll before reads), so a dead broker shows
# up as OSError and the link layer reconnects. Packet encoders/decoders are module functions so
# the tests check them against byte vectors on both interpreters without a socket.
import errno
import select
import struct
import time

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_CONNECT = const(0x10)
_CONNACK = const(0x20)
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_SUBSCRIBE = const(0x82)
_SUBACK = const(0x90)
_PINGRESP = const(0xD0)
_CHUNK = const(256)  # bytes per read: what we receive (ack, cmd) is small JSON
_MAX_READS = const(16)  # reads per poll() before control goes back to the application
_NEVER = const(0x3FFFFFFF)
PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"
# CONNACK return codes 1-5, for the error message
_REFUSED = ("", "unacceptable protocol version", "identifier rejected", "server unavailable",
            "bad user name or password", "not authorised")  # fmt: skip

try:
    _ticks_ms = time.ticks_ms
    _ticks_diff = time.ticks_diff
except AttributeError:  # CPython

    def _ticks_ms():
        return int(time.monotonic() * 1000)

    def _ticks_diff(a, b):
        return a - b


class MQTTError(Exception):
    """Protocol error or refused connection; rc: the CONNACK/SUBACK return code, if any."""

    def __init__(self, msg, rc=None):
        super().__init__(msg)
        self.rc = rc


def encode_remaining_length(n):
    if not 0 <= n <= 268435455:
        raise ValueError("remaining length out of range")
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def decode_remaining_length(buf, pos=1):
    """(length, offset after the field), or None if buf ends inside the field."""
    n = shift = 0
    while pos < len(buf):
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, pos
        shift += 7
        if shift > 21:
            raise MQTTError("malformed remaining length")
    return None


def packet_bounds(buf):
    """(first byte, body start, end) of the packet at buf[0], or None while its fixed header is
    incomplete; the packet is complete when end <= len(buf)."""
    r = decode_remaining_length(buf, 1)
    return None if r is None else (buf[0], r[1], r[1] + r[0])


def _str(s):
    s = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(s)) + s


def _packet(first, body):
    return bytes((first,)) + encode_remaining_length(len(body)) + body


def encode_connect(client_id, user=None, password=None, keepalive=60, clean=True, will=None):
    """will: (topic, msg, retain, qos) or None. A password is sent only with a user name."""
    body = bytearray(b"\x00\x04MQTT\x04\x00\x00\x00")
    struct.pack_into("!H", body, 8, keepalive)
    flags = 0x02 if clean else 0
    body.extend(_str(client_id))
    if will:
        flags |= 0x04 | (will[3] << 3) | (0x20 if will[2] else 0)
        body.extend(_str(will[0]))
        body.extend(_str(will[1]))
    if user is not None:
        flags |= 0x80
        body.extend(_str(user))
        if password is not None:
            flags |= 0x40
            body.extend(_str(password))
    body[7] = flags
    return _packet(_CONNECT, body)


def encode_publish(topic, msg, qos=0, retain=False, pid=0, dup=False):
    if qos not in (0, 1) or (qos and not 0 < pid < 65536):
        raise ValueError("qos must be 0 or 1, with a packet id 1..65535 for 1")
    msg = msg.encode() if isinstance(msg, str) else msg
    t = _str(topic)
    pkt = bytearray((_PUBLISH | (qos << 1) | (8 if dup else 0) | (1 if retain else 0),))
    pkt.extend(encode_remaining_length(len(t) + len(msg) + (2 if qos else 0)))
    pkt.extend(t)
    if qos:
        pkt.extend(struct.pack("!H", pid))
    pkt.extend(msg)
    return bytes(pkt)


def encode_subscribe(pid, topic, qos=1):
    return _packet(_SUBSCRIBE, struct.pack("!H", pid) + _str(topic) + bytes((qos,)))


def encode_puback(pid):
    return struct.pack("!BBH", _PUBACK, 2, pid)


def parse_connack(pkt):
    """(session_present, return code) of a complete CONNACK."""
    start = packet_bounds(pkt)[1]
    return bool(pkt[start] & 1), pkt[start + 1]


def parse_publish(pkt):
    """(topic, payload, qos, pid, retain) of the complete PUBLISH at the start of pkt."""
    first, pos, end = packet_bounds(pkt)
    n = struct.unpack_from("!H", pkt, pos)[0]
    mv = memoryview(pkt)
    topic = bytes(mv[pos + 2 : pos + 2 + n]).decode()
    pos += 2 + n
    qos = (first >> 1) & 3
    pid = struct.unpack_from("!H", pkt, pos)[0] if qos else 0
    return topic, bytes(mv[pos + (2 if qos else 0) : end]), qos, pid, bool(first & 1)


class MQTTClient:
    on_message = None  # callback(topic: str, payload: bytes)
    on_puback = None  # callback(pid: int)
    max_packet = 16384  # a larger incoming packet is refused (the heap is ~100 KB)

    def __init__(self, client_id, host, port=1883, user=None, password=None, keepalive=60,
                 timeout=5, ssl_params=None, sock_factory=None, ticks_ms=None,
                 ticks_diff=None, idle=None):  # fmt: skip
        self.client_id, self.host, self.port = client_id, host, port
        self.user, self.password, self.ssl_params = user, password, ssl_params
        self.keepalive, self.timeout = keepalive, timeout
        self._factory = sock_factory or self._open
        self._ticks = ticks_ms or _ticks_ms
        self._diff = ticks_diff or _ticks_diff  # the board's, so its tick wrap is handled
        self.idle = idle  # called every few ms while connect() waits (buttons, watchdog)
        self.sock = self._poller = self._read = self._write = self._ping_at = self._will = None
        self._rbuf = bytearray()
        self._pid = self._last_tx = self._last_rx = 0
        self.connected = False

    def _open(self, host, port, timeout):
        import socket

        ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
        s = socket.socket(ai[0], ai[1], ai[2])
        try:
            s.settimeout(timeout)
            s.connect(ai[-1])
            if self.ssl_params is None:
                return s
            import ssl  # the office broker has its own CA: verification is required

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.verify_mode = ssl.CERT_REQUIRED  # MicroPython's default is CERT_NONE
            p = self.ssl_params  # {"cadata" or "cafile": CA, optional "server_hostname"}
            ctx.load_verify_locations(cafile=p.get("cafile"), cadata=p.get("cadata"))
            return ctx.wrap_socket(s, server_hostname=p.get("server_hostname", host))
        except Exception:
            s.close()
            raise

    def set_last_will(self, topic, msg, retain=False, qos=0):
        self._will = (topic, msg, retain, qos)

    def _next_pid(self):
        self._pid = self._pid % 65535 + 1
        return self._pid

    def connect(self, clean_session=True):
        self.close()
        s = self.sock = self._factory(self.host, self.port, self.timeout)
        if hasattr(s, "settimeout"):
            s.settimeout(self.timeout)
        # MicroPython before 1.23: a TLS socket has only the stream methods read()/write()
        self._read = getattr(s, "recv", None) or s.read
        self._write = getattr(s, "sendall", None) or s.write
        self._poller = select.poll()
        self._poller.register(s, select.POLLIN)
        ka, will = self.keepalive, self._will
        try:
            self._send(
                encode_connect(self.client_id, self.user, self.password, ka, clean_session, will)
            )
            start = self._ticks()
            while True:
                b = packet_bounds(self._rbuf)
                if b is not None and b[2] <= len(self._rbuf):
                    break
                # Wait in short slices: a broker that accepts the connection but never answers
                # must not hold the buttons (and the watchdog) for the whole timeout.
                left = int(self.timeout * 1000) - self._diff(self._ticks(), start)
                if left <= 0:
                    raise OSError(errno.ETIMEDOUT, "no CONNACK from broker")
                if self._readable(min(left, 20)):
                    self._recv_some()
                elif self.idle:
                    self.idle()
            if b[0] != _CONNACK:
                raise MQTTError("expected CONNACK, got 0x%02x" % b[0])
            present, rc = parse_connack(self._rbuf)
            if rc:
                why = _REFUSED[rc] if rc < len(_REFUSED) else "unknown reason"
                raise MQTTError("connection refused: %s (rc %d)" % (why, rc), rc)
        except Exception:
            self.close()
            raise
        self._rbuf[0 : b[2]] = b""
        self.connected = True
        return present

    def _send(self, data):
        if self.sock is None:
            raise OSError(errno.ENOTCONN, "not connected")
        try:
            self._write(data)  # blocking with a timeout: writes everything or raises
        except OSError:
            self.close()
            raise
        self._last_tx = self._ticks()

    def _readable(self, timeout_ms):
        pending = getattr(self.sock, "pending", None)
        if pending and pending():  # CPython TLS: decrypted bytes the fd poll cannot see
            return True
        return bool(self._poller.poll(timeout_ms))

    def _recv_some(self):
        data = self._read(_CHUNK)
        if data is None:  # MicroPython TLS: record not complete yet
            return
        if not data:
            raise OSError(errno.ECONNRESET, "connection closed by broker")
        self._rbuf.extend(data)
        self._last_rx = self._ticks()

    def publish(self, topic, msg, qos=0, retain=False):
        pid = self._next_pid() if qos else 0
        self._send(encode_publish(topic, msg, qos, retain, pid))
        return pid

    def subscribe(self, topic, qos=1):
        pid = self._next_pid()
        self._send(encode_subscribe(pid, topic, qos))
        return pid

    def _keepalive(self):
        """Send PINGREQ when due, raise if the last one went unanswered; returns the ms until
        the next keepalive action."""
        if not self.keepalive:
            return _NEVER
        now, ka = self._ticks(), self.keepalive * 1000
        if self._ping_at is not None:
            late = self._diff(now, self._ping_at)
            if late >= ka:
                raise OSError(errno.ETIMEDOUT, "no PINGRESP from broker")
            return ka - late
        # Ping when either direction is quiet: a client that only sends would otherwise never
        # notice a half-open connection.
        idle = max(self._diff(now, self._last_tx), self._diff(now, self._last_rx))
        if idle < ka // 2:
            return ka // 2 - idle
        self._send(PINGREQ)
        self._ping_at = now
        return ka

    def poll(self, timeout_ms=0):
        if self.sock is None:
            raise OSError(errno.ENOTCONN, "not connected")
        start = self._ticks()
        try:
            self._dispatch()  # packets that came in with the CONNACK
            while True:
                wait = self._keepalive()
                left = max(0, timeout_ms - self._diff(self._ticks(), start))
                if self._readable(min(left, wait)):
                    for _ in range(_MAX_READS):
                        self._recv_some()
                        self._dispatch()
                        if self.sock is None or not self._readable(0):
                            return
                    return
                if left <= wait:
                    return
        except OSError:
            self.close()
            raise

    def _dispatch(self):
        buf = self._rbuf
        while self.sock is not None:  # a callback may have closed the connection
            b = packet_bounds(buf)
            if b is None:
                return
            first, start, end = b
            if end - start > self.max_packet:
                self.close()
                raise MQTTError("incoming packet too large: %d bytes" % (end - start))
            if end > len(buf):
                return
            kind = first & 0xF0
            if kind == _PUBLISH:
                topic, msg, qos, pid, _ = parse_publish(buf)
                buf[0:end] = b""  # consumed before the callback, which may publish
                if self.on_message:
                    self.on_message(topic, msg)
                if qos and self.sock is not None:  # acked once handled: at-least-once
                    self._send(encode_puback(pid))
                continue
            pid = struct.unpack_from("!H", buf, start)[0] if end - start >= 2 else 0
            rc = buf[start + 2] if kind == _SUBACK and end - start > 2 else 0
            buf[0:end] = b""
            if kind == _PUBACK:
                if self.on_puback:
                    self.on_puback(pid)
            elif kind == _SUBACK:
                if rc == 0x80:
                    raise MQTTError("subscription refused (packet id %d)" % pid, rc)
            elif kind == _PINGRESP:
                self._ping_at = None
            else:
                self.close()
                raise MQTTError("unexpected packet 0x%02x" % first)

    def disconnect(self):
        try:
            self._send(DISCONNECT)
        except OSError:  # already gone
            pass
        self.close()

    def close(self):
        s, self.sock = self.sock, None
        self._poller = self._ping_at = None
        self.connected = False
        self._rbuf = bytearray()
        if s is not None:
            try:
                s.close()
            except OSError:
                pass
