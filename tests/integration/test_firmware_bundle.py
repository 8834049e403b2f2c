"""Firmware bundles on the hub: validation with clear messages, import into the data directory,
and serving the files to terminals without a token (docs/protocol.md, "Application bundle and
over-the-air update")."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub import firmware
from hub.config import Settings
from hub.firmware import BundleConflict, BundleError, FirmwareStore, load_bundle
from hub.service import HubService
from provisioning.bundle import build_bundle

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
APP_DIR = REPO_ROOT / "firmware" / "app"


def _entry(root: Path, rel: str) -> dict[str, Any]:
    body = (root / rel).read_bytes()
    return {"path": rel, "sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}


def make_bundle(
    root: Path,
    version: str = "0.2.0",
    *,
    extra: dict[str, bytes] | None = None,
    edit: Any = None,
    sources: bool = False,
) -> Path:
    """A simulator bundle (``.py`` app files) of the real firmware with FW_VERSION set to
    ``version``; ``edit(manifest)`` may spoil the manifest before it is written."""
    root.mkdir(parents=True)
    (root / "app").mkdir()
    names = []
    for src in sorted(APP_DIR.glob("*.py")):
        text = src.read_text()
        if src.name == "app.py":
            text = re.sub(r'^FW_VERSION = ".*"$', f'FW_VERSION = "{version}"', text, flags=re.M)
        (root / "app" / src.name).write_text(text)
        names.append(f"app/{src.name}")
    for rel, body in (extra or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(body)
    (root / "boot.py").write_bytes((REPO_ROOT / "firmware" / "boot.py").read_bytes())
    manifest: dict[str, Any] = {
        "v": 1,
        "version": version,
        "app": [_entry(root, n) for n in names],
        "root": [_entry(root, "boot.py")],
    }
    if sources:
        (root / "src" / "app").mkdir(parents=True)
        (root / "src" / "app" / "app.py").write_bytes((root / "app" / "app.py").read_bytes())
        manifest["sources"] = [_entry(root, "src/app/app.py")]
    if edit is not None:
        edit(manifest)
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return root


def _bad(tmp_path: Path, **kw: Any) -> str:
    path = make_bundle(tmp_path / "b", **kw)
    with pytest.raises(BundleError) as e:
        load_bundle(path)
    return str(e.value)


# -- validation ----------------------------------------------------------------------------------


def test_a_good_bundle_loads(tmp_path: Path) -> None:
    b = load_bundle(make_bundle(tmp_path / "b", sources=True))
    assert b.version == "0.2.0"
    assert {e.path for e in b.app} >= {"app/app.py", "app/outbox.py"}
    assert b.served() >= {"manifest.json", "app/app.py", "boot.py", "src/app/app.py"}


def test_bad_sha256_names_the_file(tmp_path: Path) -> None:
    def spoil(m: dict[str, Any]) -> None:
        m["app"][1]["sha256"] = "0" * 64

    msg = _bad(tmp_path, edit=spoil)
    assert "sha256 does not match" in msg and "app/" in msg


def test_size_mismatch_names_the_file(tmp_path: Path) -> None:
    def spoil(m: dict[str, Any]) -> None:
        m["app"][0]["size"] += 1

    msg = _bad(tmp_path, edit=spoil)
    assert re.search(r"app entry 'app/\w+\.py': size is \d+ bytes, manifest says \d+", msg)


@pytest.mark.parametrize(
    "path", ["app/sub/x.py", "../x.py", "/app/x.py", "app/x.txt", "boot.py", "app/../boot.py"]
)
def test_app_paths_must_be_app_name_py_or_mpy(tmp_path: Path, path: str) -> None:
    def spoil(m: dict[str, Any]) -> None:
        m["app"].append({"path": path, "sha256": "0" * 64, "size": 1})

    msg = _bad(tmp_path, edit=spoil)
    assert repr(path) in msg and "app/<name>.py or app/<name>.mpy" in msg


def test_root_path_escaping_the_bundle_is_refused(tmp_path: Path) -> None:
    def spoil(m: dict[str, Any]) -> None:
        m["root"].append({"path": "../../etc/passwd", "sha256": "0" * 64, "size": 1})

    assert "not a plain relative path" in _bad(tmp_path, edit=spoil)


def test_missing_file_names_it(tmp_path: Path) -> None:
    def spoil(m: dict[str, Any]) -> None:
        m["app"].append({"path": "app/nowhere.py", "sha256": "0" * 64, "size": 10})

    assert "app entry 'app/nowhere.py': missing from" in _bad(tmp_path, edit=spoil)


def test_version_must_match_fw_version_in_app_py(tmp_path: Path) -> None:
    def spoil(m: dict[str, Any]) -> None:
        m["version"] = "0.3.0"

    msg = _bad(tmp_path, edit=spoil)
    assert "version mismatch" in msg and "'0.3.0'" in msg and "FW_VERSION = '0.2.0'" in msg


def test_the_generic_device_bundle_from_provisioning_is_accepted(tmp_path: Path) -> None:
    """`sipas-provision build --generic`: .mpy compiled with mpy-cross, boot code, sources. Its
    version is checked against the sources, since the .mpy files cannot be read."""
    manifest = build_bundle(tmp_path / "dev", config=None, compiled=True)
    b = load_bundle(tmp_path / "dev")
    assert b.version == manifest["version"]
    assert b.app and all(e.path.endswith(".mpy") for e in b.app)
    assert {"src/app/app.py", "boot.py", "ota_boot.py"} <= b.served()
    store = FirmwareStore(tmp_path / "firmware")
    assert store.import_dir(tmp_path / "dev")[1]
    manifest["version"] = "9.9.9"
    (tmp_path / "dev" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"version mismatch.*src/app/app\.py"):
        load_bundle(tmp_path / "dev")


def test_a_bundle_with_a_terminal_config_is_refused(tmp_path: Path) -> None:
    def spoil(m: dict[str, Any]) -> None:
        m["config"] = {"path": "config.json", "sha256": "0" * 64, "size": 2}

    assert "secrets" in _bad(tmp_path, edit=spoil)


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="has no manifest.json"):
        load_bundle(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(tmp_path)


# -- import --------------------------------------------------------------------------------------


def test_import_is_atomic_and_idempotent(tmp_path: Path) -> None:
    store = FirmwareStore(tmp_path / "data" / "firmware")
    src = make_bundle(tmp_path / "b")
    bundle, created = store.import_dir(src)
    assert created and bundle.path == tmp_path / "data" / "firmware" / "0.2.0"
    assert (bundle.path / "manifest.json").read_bytes() == (src / "manifest.json").read_bytes()
    stamp = (bundle.path / "app" / "app.py").stat().st_mtime_ns
    again, created = store.import_dir(src)
    assert not created and again.manifest_bytes == bundle.manifest_bytes
    assert (bundle.path / "app" / "app.py").stat().st_mtime_ns == stamp
    assert [p.name for p in store.root.iterdir()] == ["0.2.0"]  # no temporary folder left
    assert store.versions() == ["0.2.0"]


def test_same_version_with_other_content_is_an_error(tmp_path: Path) -> None:
    store = FirmwareStore(tmp_path / "firmware")
    store.import_dir(make_bundle(tmp_path / "a"))
    other = make_bundle(tmp_path / "b", extra={"app/extra.py": b"X = 1\n"})
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["app"].append(_entry(other, "app/extra.py"))
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleConflict, match="already on the hub with other content"):
        store.import_dir(other)
    stored = store.get("0.2.0")
    assert stored is not None and "app/extra.py" not in stored.served()


def test_a_bad_bundle_leaves_nothing_behind(tmp_path: Path) -> None:
    store = FirmwareStore(tmp_path / "firmware")

    def spoil(m: dict[str, Any]) -> None:
        m["app"][0]["sha256"] = "f" * 64

    with pytest.raises(BundleError):
        store.import_dir(make_bundle(tmp_path / "b", edit=spoil))
    assert store.versions() == []


# -- serving, through a real hub -----------------------------------------------------------------


def _tar(root: Path, names: list[str] | None = None, top: str = "") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for p in sorted(root.rglob("*")):
            rel = p.relative_to(root).as_posix()
            if p.is_file() and (names is None or rel in names):
                tf.add(p, arcname=f"{top}{rel}")
    return buf.getvalue()


def test_upload_then_serve_byte_exact_without_token(
    hub: HubService, api: httpx.Client, tmp_path: Path
) -> None:
    src = make_bundle(tmp_path / "b", sources=True)
    r = api.post("/firmware", content=_tar(src, top="bundle-0.2.0/"))
    assert r.status_code == 201, r.text
    assert r.json() == {"version": "0.2.0", "created": True, "app_files": len(load_bundle(src).app)}
    assert api.post("/firmware", content=_tar(src)).status_code == 200  # same content: no-op
    audit = api.get("/audit", params={"entity": "firmware"}).json()
    assert [(a["action"], a["entity_id"]) for a in audit] == [("import", "0.2.0")]

    base = f"{hub.api_url}/firmware/0.2.0/"
    with httpx.Client() as anon:  # a terminal has no token
        manifest = anon.get(base + "manifest.json")
        assert manifest.status_code == 200
        assert manifest.content == (src / "manifest.json").read_bytes()
        for rel in load_bundle(src).served() - {"manifest.json"}:
            got = anon.get(base + rel)
            assert got.status_code == 200 and got.content == (src / rel).read_bytes(), rel
        # a file put into the version folder behind the hub's back is not listed: not served
        (hub.settings.data_dir / "firmware" / "0.2.0" / "app" / "stray.py").write_text("x")
        for bad in [
            "app/stray.py",
            "app/nothing.py",
            "",
            "../../hub.sqlite3",
            "%2e%2e/%2e%2e/hub.sqlite3",
            "app/%2e%2e/%2e%2e/%2e%2e/hub.sqlite3",
            "..%2f..%2fhub.sqlite3",
        ]:
            assert anon.get(base + bad).status_code == 404, bad
        raw = httpx.URL(hub.api_url + "/firmware/../../hub.sqlite3")
        assert anon.get(raw).status_code == 404
        assert anon.get(f"{hub.api_url}/firmware/0.9.9/manifest.json").status_code == 404
        assert anon.get(f"{hub.api_url}/firmware/%2e%2e/hub.sqlite3").status_code == 404
        # everything else needs the token
        assert anon.get(f"{hub.api_url}/firmware").status_code == 401
        assert anon.post(f"{hub.api_url}/firmware", content=_tar(src)).status_code == 401
    b = load_bundle(src)
    assert api.get("/firmware").json() == [
        {"version": "0.2.0", "app_files": len(b.app), "files": len(b.entries)}
    ]


def test_upload_refusals_say_why(hub: HubService, api: httpx.Client, tmp_path: Path) -> None:
    r = api.post("/firmware", content=b"not a tarball")
    assert r.status_code == 422 and "tar.gz" in r.json()["detail"]

    def spoil(m: dict[str, Any]) -> None:
        m["app"][0]["sha256"] = "a" * 64

    bad = make_bundle(tmp_path / "bad", edit=spoil)
    r = api.post("/firmware", content=_tar(bad))
    assert r.status_code == 422 and "sha256 does not match" in r.json()["detail"]

    api.post("/firmware", content=_tar(make_bundle(tmp_path / "a"))).raise_for_status()
    other = make_bundle(tmp_path / "b", extra={"app/zz.py": b"Z = 2\n"})
    m = json.loads((other / "manifest.json").read_text())
    m["app"].append(_entry(other, "app/zz.py"))
    (other / "manifest.json").write_text(json.dumps(m))
    r = api.post("/firmware", content=_tar(other))
    assert r.status_code == 409 and "other content" in r.json()["detail"]

    # a tar with a member escaping the extraction folder
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("../evil.py")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    r = api.post("/firmware", content=buf.getvalue())
    assert r.status_code == 422
    assert not (hub.settings.data_dir / "evil.py").exists()


def test_signature_matches_an_independent_hmac() -> None:
    key = bytes(range(32))
    manifest = b'{"v": 1, "version": "0.2.0", "app": []}'
    import hmac as std_hmac

    expected = std_hmac.new(
        key, b"SIPAS-U1t-0123456789ab\x00" + manifest, hashlib.sha256
    ).hexdigest()
    assert firmware.update_signature(key, "t-0123456789ab", manifest) == expected
    assert len(expected) == 64
    assert firmware.update_signature(key, "t-0123456789ac", manifest) != expected


@pytest.mark.parametrize(
    ("kw", "expect"),
    [
        ({"mqtt_host": "127.0.0.1"}, "http://127.0.0.1:8080/api/v1/firmware/"),
        (
            {"mqtt_host": "192.168.1.10", "api_host": "0.0.0.0"},
            "http://192.168.1.10:8080/api/v1/firmware/",
        ),
        (
            {"mqtt_host": "0.0.0.0", "advertised_host": "10.0.0.5", "api_host": "0.0.0.0"},
            "http://10.0.0.5:8080/api/v1/firmware/",
        ),
        ({"mqtt_host": "0.0.0.0", "api_host": "0.0.0.0"}, "SIPAS_HUB_ADVERTISED_HOST"),
        (
            {"mqtt_host": "192.168.1.10", "advertised_host": "127.0.0.1", "api_host": "0.0.0.0"},
            "cannot reach 127.0.0.1",
        ),
        ({"mqtt_host": "192.168.1.10"}, "SIPAS_HUB_API_HOST=0.0.0.0"),
    ],
)
def test_update_url_is_reachable_from_the_lan(kw: dict[str, str], expect: str) -> None:
    settings = Settings(api_token="t" * 20, **kw)  # type: ignore[arg-type]
    if expect.startswith("http"):
        assert firmware.firmware_base_url(settings) == expect
    else:
        with pytest.raises(firmware.RolloutError, match=re.escape(expect)):
            firmware.firmware_base_url(settings)
