"""The terminal's `update` command (firmware/app/ota.py) against a real HTTP server on loopback: a
good bundle is downloaded, checked and staged for the next boot; a tampered, wrong, truncated,
oversized or badly-pathed one is refused with a clear reason and nothing is staged.

The server is a plain ``http.server`` serving the bundle's bytes, so a test can lie about a file
(wrong bytes, a short body, another length) the way a broken or hostile server would."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import struct
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from hub.broker import find_free_port
from provisioning.bundle import build_bundle
from provisioning.simulate import FIRMWARE_DIR, HostBoard, firmware_path

firmware_path()
import ota_boot  # noqa: E402
from app import config, ota  # noqa: E402
from app.app import App  # noqa: E402

pytestmark = pytest.mark.integration

DEVICE = {
    "terminal_id": "t-0123456789ab", "office": "office-test", "epoch": 1, "hub_key": "11" * 32,
    "district_key": "22" * 32, "broker_host": "hub", "mqtt_password": "x",
}  # fmt: skip
HUB_KEY = bytes.fromhex(DEVICE["hub_key"])


class Server:
    """Serves ``files`` (path -> bytes) under /fw/; ``short`` paths are cut off half-way after a
    full Content-Length, ``length`` overrides the Content-Length sent."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.short: set[str] = set()
        self.length: dict[str, int] = {}
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                path = self.path.removeprefix("/fw/")
                outer.requests.append(f"{self.request_version} {self.command} {self.path}")
                body = outer.files.get(path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(outer.length.get(path, len(body))))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if path in outer.short else body)

            def log_message(self, *_a: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/fw/"
        threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generic bundle (the simulator's .py files) of this firmware (0.2.0), as version 0.3.0."""
    fw = tmp_path_factory.mktemp("fw") / "firmware"
    shutil.copytree(FIRMWARE_DIR, fw, ignore=shutil.ignore_patterns("__pycache__"))
    src = (fw / "app" / "app.py").read_text()
    (fw / "app" / "app.py").write_text(src.replace('FW_VERSION = "0.2.0"', 'FW_VERSION = "0.3.0"'))
    out = tmp_path_factory.mktemp("bundle") / "0.3.0"
    build_bundle(out, config=None, firmware_dir=fw, compiled=False)
    return out


@pytest.fixture
def server(bundle: Path) -> Iterator[Server]:
    s = Server()
    for p in bundle.rglob("*"):
        if p.is_file():
            s.files[str(p.relative_to(bundle))] = p.read_bytes()
    yield s
    s.close()


class Board(HostBoard):
    pass


@pytest.fixture
def app(tmp_path: Path) -> App:
    root = tmp_path / "flash"
    (root / "app").mkdir(parents=True)
    cfg = config.validate({**DEVICE, "outbox_dir": str(root / "outbox")})
    return App(cfg, Board(), config_path=str(root / "config.json"), root=str(root))


def sign(
    manifest: bytes, tid: str = DEVICE["terminal_id"], key: bytes = HUB_KEY, count: int = 1
) -> str:
    """``sig2``: the manifest with the command's count (u32 LE) and flags (no downgrade)."""
    msg = b"SIPAS-U2" + tid.encode() + b"\x00" + struct.pack("<IB", count, 0) + manifest
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def update(app: App, server: Server, version: str = "0.3.0", sig: str | None = None) -> dict:
    sig = sign(server.files["manifest.json"]) if sig is None else sig
    args = {"version": version, "url": server.url, "count": 1, "sig2": sig}
    return ota.update(app, "u-1", args)


def resign(server: Server, change: Any) -> None:
    """Replace the served manifest by a changed one, properly signed (a hub that signs anything)."""
    m = json.loads(server.files["manifest.json"])
    change(m)
    server.files["manifest.json"] = json.dumps(m).encode()


def nothing_staged(app: App) -> bool:
    root = Path(app.root)
    return not (root / "app.new").exists() and not (root / "ota.json").exists()


def test_a_good_bundle_is_downloaded_checked_and_staged(
    app: App, server: Server, bundle: Path
) -> None:
    app.board.queue_press(1)  # a citizen presses while the update downloads
    fed = app.board.watchdog_fed
    reply = update(app, server)
    assert reply == {"v": 1, "id": "u-1", "ok": True, "staged": "0.3.0"}
    assert app.reboot_pending  # App.step publishes the reply, then resets
    root = Path(app.root)
    manifest = json.loads((bundle / "manifest.json").read_text())
    staged = sorted(p.name for p in (root / "app.new").iterdir())
    assert staged == sorted(Path(e["path"]).name for e in manifest["app"])
    for e in manifest["app"]:
        assert (root / "app.new" / Path(e["path"]).name).read_bytes() == (
            bundle / e["path"]
        ).read_bytes()
    assert json.loads((root / "ota.json").read_text()) == {
        "state": "staged", "version": "0.3.0", "from": "0.2.0"
    }  # fmt: skip
    # only the manifest and the app files travel; plain HTTP/1.0 GETs
    assert len(server.requests) == 1 + len(manifest["app"])
    assert all(r.startswith("HTTP/1.0 GET /fw/") for r in server.requests)
    assert app.outbox.depth() == 1  # the press was served between chunks
    assert app.board.watchdog_fed > fed + len(manifest["app"])
    # the next boot swaps it in
    assert ota_boot.boot(app.root)["trial"]
    assert 'FW_VERSION = "0.3.0"' in (root / "app" / "app.py").read_text()


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("tampered manifest", "bad signature on manifest.json"),
        ("signed for another terminal", "bad signature on manifest.json"),
        ("not hex", "bad signature on manifest.json"),
        ("wrong version", "manifest version '0.3.0' is not '0.4.0'"),
        ("wrong sha256", "app/codec.py: sha256 mismatch"),
        ("truncated", "app/codec.py: truncated at"),
        ("oversized file", "app/codec.py: {big} bytes served, manifest says {size}"),
        ("path outside app/", "bad app path '../boot.py'"),
        ("sub-directory", "bad app path 'app/sub/x.py'"),
        ("root file", "bad app path 'boot.py'"),
        ("listed twice", "is listed twice"),
        ("no start", "no app/start"),
        ("missing file", "app/codec.py: HTTP 404"),
        ("bundle too big for the flash", "not enough flash"),
        ("server down", "cannot reach 127.0.0.1"),
    ],
)
def test_a_bad_update_is_refused_with_the_reason_and_nothing_staged(
    app: App, server: Server, case: str, error: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sig = None
    version = "0.3.0"
    codec_data = server.files["app/codec.py"]
    if case == "tampered manifest":
        sig = sign(server.files["manifest.json"])
        resign(server, lambda m: m["app"][0].update(sha256="0" * 64))
    elif case == "signed for another terminal":
        sig = sign(server.files["manifest.json"], tid="t-0000000000ff")
    elif case == "not hex":
        sig = "zz" * 32
    elif case == "wrong version":
        version = "0.4.0"
    elif case == "wrong sha256":
        server.files["app/codec.py"] = codec_data.replace(b"HMAC", b"hmac", 1)  # same size
    elif case == "truncated":
        server.short.add("app/codec.py")
    elif case == "oversized file":
        server.files["app/codec.py"] = codec_data + b"# and a little more\n"
        error = error.format(big=len(codec_data) + 20, size=len(codec_data))
    elif case == "path outside app/":
        resign(server, lambda m: m["app"][0].update(path="../boot.py"))
    elif case == "sub-directory":
        resign(server, lambda m: m["app"][0].update(path="app/sub/x.py"))
    elif case == "root file":
        resign(server, lambda m: m["app"].append({**m["app"][0], "path": "boot.py"}))
    elif case == "listed twice":
        resign(server, lambda m: m["app"].append(dict(m["app"][0])))
    elif case == "no start":
        resign(server, lambda m: m.update(app=[e for e in m["app"] if "start" not in e["path"]]))
    elif case == "missing file":
        del server.files["app/codec.py"]
    elif case == "bundle too big for the flash":
        monkeypatch.setattr(ota, "free_bytes", lambda root: 150_000)
    elif case == "server down":
        server.url = f"http://127.0.0.1:{find_free_port()}/fw/"
    reply = update(app, server, version=version, sig=sig)
    assert reply["ok"] is False and reply["id"] == "u-1", reply
    assert error in reply["error"], reply
    assert nothing_staged(app), case
    assert not app.reboot_pending
    assert ("ota", "refused: " + reply["error"]) in app.events


def test_no_update_while_the_current_version_is_on_trial(app: App, server: Server) -> None:
    app.ota = "trial"
    reply = update(app, server)
    assert reply["ok"] is False and "still on trial" in reply["error"]
    assert server.requests == []


def test_update_command_replies_before_the_reset(app: App, server: Server) -> None:
    class Client:
        def __init__(self, *_a: Any, **_kw: Any) -> None:
            self.connected = False
            self.published: list[tuple[str, Any]] = []

        def set_last_will(self, *_a: Any, **_kw: Any) -> None: ...
        def connect(self, clean_session: bool = True) -> bool:
            self.connected = True
            return False

        def subscribe(self, *_a: Any) -> None: ...
        def publish(self, topic: str, msg: Any, qos: int = 0, retain: bool = False) -> int:
            self.published.append((topic, msg))
            return 1

        def poll(self, _ms: int = 0) -> None: ...
        def close(self) -> None:
            self.connected = False

        disconnect = close

    app._client_factory = Client
    app.step(0)
    cmd = {"v": 1, "id": "u-2", "cmd": "update", "args": {
        "version": "0.3.0", "url": server.url, "count": 1,
        "sig2": sign(server.files["manifest.json"])}}  # fmt: skip
    app._on_message(app.t_cmd, json.dumps(cmd).encode())
    client = app.client
    assert client is not None
    replies = [json.loads(m) for t, m in client.published if t == app.t_reply]
    assert replies == [{"v": 1, "id": "u-2", "ok": True, "staged": "0.3.0"}]
    assert app.board.resets == 0
    app.step(0)
    assert app.board.resets == 1
