"""The firmware's MQTT client (firmware/app/mqtt.py) on CPython against a real Mosquitto,
configured by the hub's own code (password file, pattern ACLs), with paho-mqtt as the hub.

Failure detection is measured here and printed (run with -s to see it); the assertions only
bound it by the configured timeouts, so a hang fails the test instead of stalling the suite.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hub.broker import TlsFiles, find_free_port, new_password
from tests.fixtures.mosquitto import HUB_USER, OFFICE, TestMosquitto

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
if str(FIRMWARE) not in sys.path:
    sys.path.insert(0, str(FIRMWARE))
from app.mqtt import MQTTClient, MQTTError  # noqa: E402

pytestmark = pytest.mark.integration
TID = "t-0123456789ab"
OFFLINE = b'{"v":1,"state":"offline"}'


class Recording:
    """A real socket that keeps a copy of what the client sends."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sent = bytearray()

    def sendall(self, data: bytes) -> None:
        self.sent += data
        self.sock.sendall(data)

    def __getattr__(self, name: str):
        return getattr(self.sock, name)


def terminal(broker: TestMosquitto, password: str, **kwargs) -> MQTTClient:
    return MQTTClient(TID, broker.host, broker.port, user=TID, password=password, **kwargs)


def poll_for(client: MQTTClient, seconds: float, until=lambda: False) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not until():
        client.poll(50)


def test_publish_qos0_and_qos1_reach_the_hub(mosquitto: TestMosquitto) -> None:
    password = mosquitto.add_terminal(TID)
    hub = mosquitto.hub_client()
    hub.subscribe(f"sipas/v1/{OFFICE}/+/rating", qos=1)
    c = terminal(mosquitto, password)
    acks: list[int] = []
    c.on_puback = acks.append
    assert c.connect() is False and c.connected
    topic = mosquitto.topic(TID, "rating")
    assert c.publish(topic, b"\x01" * 48, qos=0) == 0
    pid = c.publish(topic, bytes(range(48)), qos=1)
    assert pid == 1
    poll_for(c, 5, lambda: acks)
    assert acks == [pid]
    first, second = hub.receive(), hub.receive()
    assert (first.topic, first.payload, first.qos) == (topic, b"\x01" * 48, 0)
    assert (second.topic, second.payload, second.qos) == (topic, bytes(range(48)), 1)
    c.disconnect()
    assert not c.connected


def test_bad_password_is_refused_with_a_readable_reason(mosquitto: TestMosquitto) -> None:
    mosquitto.add_terminal(TID)
    c = terminal(mosquitto, "wrong-password")
    with pytest.raises(MQTTError) as exc:
        c.connect()
    # Mosquitto 2.0 answers a wrong password with "not authorised" (5) on MQTT 3.1.1.
    assert exc.value.rc in (4, 5)
    assert "refused" in str(exc.value)
    assert ("not authorised" in str(exc.value)) == (exc.value.rc == 5)
    assert not c.connected


def test_subscribe_receive_and_acknowledge(mosquitto: TestMosquitto) -> None:
    password = mosquitto.add_terminal(TID)
    hub = mosquitto.hub_client()
    got: list[tuple[str, bytes]] = []
    c = terminal(mosquitto, password)
    c.on_message = lambda topic, payload: got.append((topic, payload))
    c.connect(clean_session=False)
    cmd = mosquitto.topic(TID, "cmd")
    c.subscribe(cmd, qos=1)
    c.poll(500)  # SUBACK
    hub.publish(cmd, '{"v":1,"id":"c-1","cmd":"identify","args":{"seconds":3}}', qos=1)
    poll_for(c, 5, lambda: got)
    assert got == [(cmd, b'{"v":1,"id":"c-1","cmd":"identify","args":{"seconds":3}}')]
    # The QoS 1 message was acknowledged: the persistent session does not deliver it again.
    c.disconnect()
    c.on_message = lambda topic, payload: got.append((topic, payload))
    assert c.connect(clean_session=False) is True
    hub.publish(cmd, "second", qos=1)
    poll_for(c, 5, lambda: len(got) > 1)
    assert got[1:] == [(cmd, b"second")]
    c.disconnect()


def test_last_will_is_published_when_the_terminal_vanishes(mosquitto: TestMosquitto) -> None:
    password = mosquitto.add_terminal(TID)
    status = mosquitto.topic(TID, "status")
    hub = mosquitto.hub_client()
    hub.subscribe(status, qos=1)
    c = terminal(mosquitto, password)
    c.set_last_will(status, OFFLINE, retain=True, qos=1)
    c.connect()
    c.publish(status, b'{"v":1,"state":"online"}', qos=1, retain=True)
    c.poll(500)
    assert hub.receive().payload == b'{"v":1,"state":"online"}'
    c.close()  # no DISCONNECT: the broker must publish the will
    assert hub.receive(timeout=5).payload == OFFLINE
    late = mosquitto.hub_client()
    late.subscribe(status, qos=1)
    msg = late.receive()
    assert (msg.payload, msg.retain) == (OFFLINE, True)


def test_graceful_disconnect_does_not_fire_the_will(mosquitto: TestMosquitto) -> None:
    password = mosquitto.add_terminal(TID)
    status = mosquitto.topic(TID, "status")
    hub = mosquitto.hub_client()
    hub.subscribe(status, qos=1)
    c = terminal(mosquitto, password)
    c.set_last_will(status, OFFLINE, retain=True, qos=1)
    c.connect()
    c.disconnect()
    with pytest.raises(queue.Empty):
        hub.receive(timeout=1)


def test_keepalive_keeps_an_idle_connection_up(mosquitto: TestMosquitto) -> None:
    password = mosquitto.add_terminal(TID)
    socks: list[Recording] = []

    def factory(host: str, port: int, timeout: float) -> Recording:
        s = Recording(socket.create_connection((host, port), timeout))
        socks.append(s)
        return s

    c = terminal(mosquitto, password, keepalive=2, sock_factory=factory)
    c.connect()
    # Mosquitto drops a client silent for 1.5 x keepalive (3 s): 5 s idle needs pings.
    poll_for(c, 5)
    assert c.connected
    assert socks[0].sent.count(b"\xc0\x00") >= 4  # one every keepalive / 2
    acks: list[int] = []
    c.on_puback = acks.append
    pid = c.publish(mosquitto.topic(TID, "rating"), bytes(48), qos=1)
    poll_for(c, 5, lambda: acks)
    assert acks == [pid]
    c.disconnect()


def test_killed_broker_is_detected_without_hanging(mosquitto: TestMosquitto) -> None:
    password = mosquitto.add_terminal(TID)
    c = terminal(mosquitto, password, keepalive=2, timeout=2)
    c.connect()
    start = time.monotonic()
    mosquitto.kill()  # SIGKILL, as a crash would: the kernel closes the broker's sockets
    killed = time.monotonic()
    with pytest.raises(OSError):
        poll_for(c, 10)
    elapsed = time.monotonic() - start
    print(
        f"\nkilled broker detected by poll() {elapsed * 1000:.1f} ms after SIGKILL "
        f"({(time.monotonic() - killed) * 1000:.1f} ms after the process was gone)"
    )
    assert elapsed < 3.5 and not c.connected
    # A publish on the dead connection fails at once instead of blocking.
    with pytest.raises(OSError):
        c.publish(mosquitto.topic(TID, "rating"), bytes(48), qos=1)
    # So does reconnecting to the dead port.
    start = time.monotonic()
    with pytest.raises(OSError):
        c.connect()
    print(f"connect() to the dead broker failed after {(time.monotonic() - start) * 1000:.1f} ms")


def test_frozen_broker_is_detected_by_keepalive(mosquitto: TestMosquitto) -> None:
    """A broker that stops answering without closing (power cut of a switch, a hung host)."""
    password = mosquitto.add_terminal(TID)
    c = terminal(mosquitto, password, keepalive=2, timeout=2)
    c.connect()
    pid = mosquitto.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        with pytest.raises(OSError, match="PINGRESP"):
            poll_for(c, 10)
        elapsed = time.monotonic() - start
    finally:
        os.kill(pid, signal.SIGCONT)
    print(f"\nfrozen broker detected after {elapsed * 1000:.0f} ms (keepalive 2 s)")
    # A ping is due after keepalive / 2 and declared lost after keepalive: at most 1.5 x 2 s.
    assert 1.9 < elapsed < 3.5 and not c.connected


def test_silent_server_and_closed_port_time_out() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        c = MQTTClient("t-0123456789ab", "127.0.0.1", port, timeout=0.5)
        start = time.monotonic()
        with pytest.raises(OSError, match="CONNACK"):
            c.connect()  # accepted by the kernel's backlog, never answered
        assert time.monotonic() - start < 1.5
    c = MQTTClient("t-0123456789ab", "127.0.0.1", find_free_port(), timeout=0.5)
    with pytest.raises(ConnectionRefusedError):
        c.connect()
    assert not c.connected


def test_tls_with_the_office_ca(tmp_path: Path) -> None:
    cert, key = tmp_path / "broker.crt", tmp_path / "broker.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    broker = TestMosquitto(
        tmp_path / "mosquitto", port=find_free_port(), office=OFFICE, tls=TlsFiles(cert, key)
    )
    password = new_password()
    broker.write_config(HUB_USER, new_password(), {TID: password})
    broker.start()
    try:
        c = MQTTClient(TID, "127.0.0.1", broker.port, user=TID, password=password,
                       ssl_params={"cafile": str(cert)})  # fmt: skip
        acks: list[int] = []
        c.on_puback = acks.append
        c.connect()
        pid = c.publish(broker.topic(TID, "rating"), bytes(48), qos=1)
        poll_for(c, 5, lambda: acks)
        assert acks == [pid]
        c.disconnect()
        # Without the office CA the broker is not trusted.
        other = tmp_path / "other.crt"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=other",
             "-keyout", str(tmp_path / "other.key"), "-out", str(other)],
            check=True, capture_output=True,
        )  # fmt: skip
        c = MQTTClient(TID, "127.0.0.1", broker.port, user=TID, password=password,
                       ssl_params={"cafile": str(other)})  # fmt: skip
        with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
            c.connect()
    finally:
        broker.stop()
