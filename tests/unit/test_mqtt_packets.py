"""The firmware's MQTT client (firmware/app/mqtt.py) without a broker: packet bytes checked
against the MQTT 3.1.1 specification, and the client driven through a fake socket at the I/O
seam (split packets, several packets per read, keepalive with an injected clock).

VECTORS is shared with tests/contract/test_mqtt_packets_micropython.py, which evaluates the same
expressions under real MicroPython: both interpreters must produce the same bytes.
"""

from __future__ import annotations

import errno
import socket
import sys
from pathlib import Path

import pytest

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
if str(FIRMWARE) not in sys.path:
    sys.path.insert(0, str(FIRMWARE))
from app import mqtt  # noqa: E402

pytestmark = pytest.mark.unit

# (expression over the module's pure functions, expected bytes as hex). Sources: MQTT 3.1.1
# (OASIS, 2014) table 2.4 (remaining length), figure 3.5/3.6 (CONNECT variable header,
# flags 0xCE), figure 3.11 (PUBLISH variable header "a/b", packet id 10), sections 3.4, 3.8,
# 3.12, 3.14.
VECTORS = [
    ("encode_remaining_length(0)", "00"),
    ("encode_remaining_length(127)", "7f"),
    ("encode_remaining_length(128)", "80 01"),
    ("encode_remaining_length(16383)", "ff 7f"),
    ("encode_remaining_length(16384)", "80 80 01"),
    ("encode_remaining_length(2097151)", "ff ff 7f"),
    ("encode_remaining_length(2097152)", "80 80 80 01"),
    ("encode_remaining_length(268435455)", "ff ff ff 7f"),
    # Clean session, no will, no credentials, keepalive 60, client id "c".
    ("encode_connect('c', keepalive=60)", "10 0d 0004 4d515454 04 02 003c 0001 63"),
    # Figure 3.6: user, password, will QoS 1, will, clean session = 0xCE; keepalive 10. The
    # payload order is client id, will topic, will message, user name, password (3.1.3).
    (
        "encode_connect('c', 'u', 'p', 10, True, ('w', b'x', False, 1))",
        "10 19 0004 4d515454 04 ce 000a 0001 63 0001 77 0001 78 0001 75 0001 70",
    ),
    # Retained will QoS 0 (0x24), persistent session, user name without password (0x80).
    (
        "encode_connect('c', 'u', None, 0, False, ('w', 'off', True, 0))",
        "10 18 0004 4d515454 04 a4 0000 0001 63 0001 77 0003 6f6666 0001 75",
    ),
    # Figure 3.11: topic "a/b", packet id 10, QoS 1 (0x32), then the payload.
    ("encode_publish('a/b', b'hi', 1, False, 10)", "32 09 0003 612f62 000a 6869"),
    ("encode_publish('a/b', 'hi')", "30 07 0003 612f62 6869"),
    ("encode_publish(b'a/b', b'', 0, True)", "31 05 0003 612f62"),
    ("encode_publish('a/b', b'', 1, False, 65535, True)", "3a 07 0003 612f62 ffff"),
    # 3.8: fixed header 0x82, packet id, topic filter, requested QoS.
    ("encode_subscribe(1, 'a/+', 1)", "82 08 0001 0003 612f2b 01"),
    ("encode_puback(258)", "40 02 0102"),
    ("PINGREQ", "c0 00"),
    ("DISCONNECT", "e0 00"),
]


def hexed(v: str) -> str:
    return v.replace(" ", "")


@pytest.mark.parametrize(("expr", "expected"), VECTORS, ids=[v[0] for v in VECTORS])
def test_encoders_match_the_spec(expr: str, expected: str) -> None:
    assert bytes(eval(expr, vars(mqtt))).hex() == hexed(expected)


@pytest.mark.parametrize(
    ("n", "field"),
    [
        (0, "00"),
        (127, "7f"),
        (128, "8001"),
        (16383, "ff7f"),
        (16384, "808001"),
        (2097152, "80808001"),
        (268435455, "ffffff7f"),
    ],
)
def test_remaining_length_round_trip(n: int, field: str) -> None:
    raw = b"\x30" + bytes.fromhex(field)
    assert mqtt.decode_remaining_length(raw) == (n, len(raw))
    # Every prefix that ends inside the field is "incomplete", not an error.
    for cut in range(1, len(raw)):
        assert mqtt.decode_remaining_length(raw[:cut]) is None


def test_remaining_length_limits() -> None:
    with pytest.raises(mqtt.MQTTError, match="malformed"):
        mqtt.decode_remaining_length(b"\x30\xff\xff\xff\xff\x01")
    for bad in (-1, 268435456):
        with pytest.raises(ValueError):
            mqtt.encode_remaining_length(bad)


def test_publish_validation() -> None:
    with pytest.raises(ValueError):
        mqtt.encode_publish("a", b"", qos=2, pid=1)
    with pytest.raises(ValueError):
        mqtt.encode_publish("a", b"", qos=1, pid=0)
    with pytest.raises(ValueError):
        mqtt.encode_publish("a", b"", qos=1, pid=65536)


def test_parse_publish_and_connack() -> None:
    pkt = mqtt.encode_publish("sipas/v1/o/t-0123456789ab/ack", b'{"v":1}', 1, True, 77)
    assert mqtt.parse_publish(pkt) == ("sipas/v1/o/t-0123456789ab/ack", b'{"v":1}', 1, 77, True)
    assert mqtt.parse_publish(bytearray(mqtt.encode_publish("é/x", "ü"))) == (
        "é/x",
        "ü".encode(),
        0,
        0,
        False,
    )
    # A payload of 200 bytes needs a two-byte remaining length.
    big = mqtt.encode_publish("t", bytes(200), 1, False, 1)
    assert big[1:3] == b"\xcd\x01" and mqtt.parse_publish(big)[1] == bytes(200)
    assert mqtt.parse_connack(b"\x20\x02\x01\x00") == (True, 0)
    assert mqtt.parse_connack(b"\x20\x02\x00\x05") == (False, 5)
    assert mqtt.packet_bounds(b"\x90") is None
    assert mqtt.packet_bounds(b"\x90\x03\x00") == (0x90, 2, 5)


# -- the client over a fake socket ----------------------------------------------------------


class FakeSocket:
    """The broker's side of the I/O seam. recv() returns the scripted chunks one at a time;
    a real socket pair carries one byte per pending chunk so select.poll sees exactly when
    data is waiting. An empty chunk means the broker closed the connection."""

    def __init__(self, *chunks: bytes) -> None:
        self.sent = bytearray()
        self.chunks: list[bytes] = []
        self._fd, self._peer = socket.socketpair()
        for c in chunks:
            self.feed(c)

    def feed(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self._peer.send(b"!")

    def fileno(self) -> int:
        return self._fd.fileno()

    def settimeout(self, timeout: float) -> None:
        self.timeout = timeout

    def recv(self, n: int) -> bytes:
        self._fd.recv(1)
        chunk = self.chunks.pop(0)
        assert len(chunk) <= n, "the client reads in bounded chunks"
        return chunk

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def close(self) -> None:
        self._fd.close()
        self._peer.close()


CONNACK = b"\x20\x02\x00\x00"


class Clock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def client_on(sock: FakeSocket, **kwargs) -> tuple[mqtt.MQTTClient, list, list]:
    c = mqtt.MQTTClient("t-0123456789ab", "broker", sock_factory=lambda h, p, t: sock, **kwargs)
    messages: list = []
    acks: list = []
    c.on_message = lambda topic, payload: messages.append((topic, payload))
    c.on_puback = acks.append
    return c, messages, acks


def test_connect_sends_connect_with_will_and_reads_a_split_connack() -> None:
    sock = FakeSocket(b"\x20", b"\x02\x01", b"\x00")
    c, _, _ = client_on(sock, user="t-0123456789ab", password="pw", keepalive=30, timeout=2)
    c.set_last_will("sipas/v1/o/t-0123456789ab/status", '{"v":1,"state":"offline"}', True, 1)
    assert c.connect(clean_session=False) is True
    assert c.connected and sock.timeout == 2
    expected = mqtt.encode_connect(
        "t-0123456789ab",
        "t-0123456789ab",
        "pw",
        30,
        False,
        ("sipas/v1/o/t-0123456789ab/status", '{"v":1,"state":"offline"}', True, 1),
    )
    assert bytes(sock.sent) == expected
    assert expected[9] == 0xEC  # user, password, will retain, will QoS 1, will; no clean
    c.disconnect()
    assert bytes(sock.sent).endswith(b"\xe0\x00") and not c.connected


def test_split_packets_and_several_packets_per_read_are_all_dispatched() -> None:
    sock = FakeSocket(CONNACK)
    c, messages, acks = client_on(sock)
    c.connect()
    one = mqtt.encode_publish("sipas/v1/o/t-0123456789ab/ack", b'{"seqs":[1]}', 1, False, 9)
    two = mqtt.encode_publish("sipas/v1/o/t-0123456789ab/cmd", b"x" * 300, 0)
    sent_before = len(sock.sent)
    # A PUBLISH split after its first byte and inside its topic...
    sock.feed(one[:1])
    c.poll(0)
    sock.feed(one[1:12])
    c.poll(0)
    assert messages == []
    # ... its tail in one read with a PUBACK, a SUBACK and the first two bytes of a 300-byte
    # PUBLISH, whose remaining length (two bytes) is thus split too ...
    sock.feed(one[12:] + mqtt.encode_puback(3) + b"\x90\x03\x00\x04\x01" + two[:2])
    c.poll(0)
    assert messages == [("sipas/v1/o/t-0123456789ab/ack", b'{"seqs":[1]}')]
    assert acks == [3]
    # The incoming QoS 1 PUBLISH was acknowledged with its own packet id.
    assert bytes(sock.sent[sent_before:]) == mqtt.encode_puback(9)
    # ... and the rest of the big one over two reads, the second also holding a PINGRESP and
    # the first byte of a PUBACK.
    sock.feed(two[2:200])
    sock.feed(two[200:] + b"\xd0\x00\x40")
    c.poll(0)
    assert messages[1:] == [("sipas/v1/o/t-0123456789ab/cmd", b"x" * 300)]
    sock.feed(b"\x02\x00\x05")
    c.poll(0)
    assert acks == [3, 5]
    c.close()


def test_packets_read_with_the_connack_are_dispatched_by_the_next_poll() -> None:
    queued = mqtt.encode_publish("sipas/v1/o/t-0123456789ab/ack", b"{}", 1, False, 2)
    sock = FakeSocket(CONNACK + queued)
    c, messages, _ = client_on(sock)
    c.connect(clean_session=False)
    c.poll(0)  # nothing more arrives on the socket
    assert messages == [("sipas/v1/o/t-0123456789ab/ack", b"{}")]
    assert sock.sent.endswith(mqtt.encode_puback(2))
    c.close()


def test_publish_returns_packet_ids_that_wrap() -> None:
    sock = FakeSocket(CONNACK)
    c, _, _ = client_on(sock)
    c.connect()
    assert c.publish("a", b"", qos=0) == 0
    pids = [c.publish("a", b"", qos=1) for _ in range(65536)]
    assert pids[0] == 1 and pids[65534] == 65535 and pids[65535] == 1
    assert 0 not in pids
    c.close()


def test_refused_connection_has_a_readable_reason() -> None:
    sock = FakeSocket(b"\x20\x02\x00\x05")
    c, _, _ = client_on(sock)
    with pytest.raises(mqtt.MQTTError, match="not authorised") as exc:
        c.connect()
    assert exc.value.rc == 5 and not c.connected
    sock = FakeSocket(b"\x20\x02\x00\x04")
    c, _, _ = client_on(sock)
    with pytest.raises(mqtt.MQTTError, match="bad user name or password"):
        c.connect()


def test_refused_subscription_raises() -> None:
    sock = FakeSocket(CONNACK)
    c, _, _ = client_on(sock)
    c.connect()
    assert c.subscribe("sipas/v1/o/t-0123456789ab/cmd", 1) == 1
    assert sock.sent.endswith(mqtt.encode_subscribe(1, "sipas/v1/o/t-0123456789ab/cmd", 1))
    sock.feed(b"\x90\x03\x00\x01\x80")
    with pytest.raises(mqtt.MQTTError, match="subscription refused"):
        c.poll(0)
    c.close()


def test_peer_close_raises_oserror_and_closes() -> None:
    sock = FakeSocket(CONNACK)
    c, _, _ = client_on(sock)
    c.connect()
    sock.feed(b"")
    with pytest.raises(OSError) as exc:
        c.poll(0)
    assert exc.value.errno == errno.ECONNRESET and not c.connected
    with pytest.raises(OSError):
        c.publish("a", b"x", qos=1)


def test_no_connack_times_out() -> None:
    sock = FakeSocket()
    c, _, _ = client_on(sock, timeout=0.05)
    with pytest.raises(OSError, match="CONNACK"):
        c.connect()
    assert not c.connected


def test_oversized_packet_is_refused() -> None:
    sock = FakeSocket(CONNACK)
    c, _, _ = client_on(sock)
    c.connect()
    sock.feed(b"\x30" + mqtt.encode_remaining_length(c.max_packet + 1))
    with pytest.raises(mqtt.MQTTError, match="too large"):
        c.poll(0)
    assert not c.connected


def test_keepalive_pings_and_gives_up_without_pingresp() -> None:
    clock = Clock()
    sock = FakeSocket(CONNACK)
    c, _, _ = client_on(sock, keepalive=10, ticks_ms=clock)
    c.connect()
    start = len(sock.sent)
    clock.now = 4999
    c.poll(0)
    assert len(sock.sent) == start  # nothing due yet
    clock.now = 5000
    c.poll(0)
    assert bytes(sock.sent[start:]) == b"\xc0\x00"
    sock.feed(b"\xd0\x00")
    clock.now = 6000
    c.poll(0)  # PINGRESP answered the ping
    clock.now = 11000
    c.poll(0)
    assert bytes(sock.sent[start:]) == b"\xc0\x00\xc0\x00"
    clock.now = 20999
    c.poll(0)
    clock.now = 21000  # a keepalive period without PINGRESP
    with pytest.raises(OSError, match="PINGRESP") as exc:
        c.poll(0)
    assert exc.value.errno == errno.ETIMEDOUT and not c.connected


def test_callback_may_publish_and_close() -> None:
    sock = FakeSocket(CONNACK)
    c, _, _ = client_on(sock)
    c.connect()

    def reply(topic: str, payload: bytes) -> None:
        c.publish("sipas/v1/o/t-0123456789ab/reply", b"ok", qos=1)
        c.close()

    c.on_message = reply
    cmd = mqtt.encode_publish("sipas/v1/o/t-0123456789ab/cmd", b"{}", 1, False, 4)
    sock.feed(cmd + cmd)
    c.poll(0)
    assert not c.connected
    assert sock.sent.endswith(
        mqtt.encode_publish("sipas/v1/o/t-0123456789ab/reply", b"ok", 1, False, 1)
    )
