"""``deploy``: bring a board's files in line with a bundle, over USB, copying only what differs.

The bundle's manifest (docs/protocol.md, "Application bundle") lists the ``root`` files (boot
code), the ``app`` package and the terminal's ``config``. For each, the board computes the sha256
of what it holds; only files that differ are copied. A copy goes to a temporary name, its sha256 is
checked on the board, and only then is it renamed over the old file (rename is atomic on
littlefs), so a bad copy never replaces a good file. Files in ``/app`` that the bundle does not
list are removed, and any over-the-air update in progress is cancelled (``/app.new``,
``/app.old``, ``/ota.json``): the USB copy is now the truth. The update counter ``/ota_count`` is
raised to this computer's clock (never lowered: provisioning/otacount.py), so an update command
signed before this deploy, replayed later, is refused even if the flash was erased. Then the board
is reset.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provisioning import otacount
from provisioning.bundle import BundleError, verify_bundle
from provisioning.serial_device import Device, DeviceError

_APP_PATH = re.compile(r"^app/[A-Za-z0-9_]+\.(py|mpy)$")
_ROOT_PATH = re.compile(r"^[A-Za-z0-9_]+\.py$")
TMP_SUFFIX = ".sipas-new"
OTA_LEFTOVERS = ("/app.new", "/app.old")
OTA_STATE = "/ota.json"


class DeployError(Exception):
    """Deploy stopped; the message says what failed and what to do."""


@dataclass(frozen=True)
class FileToDeploy:
    local: Path
    device_path: str
    sha256: str
    size: int


@dataclass
class DeployResult:
    version: str
    copied: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    cancelled_ota: bool = False
    bytes_copied: int = 0
    ota_count: int = 0  # the board's update counter afterwards
    ota_count_written: bool = False  # False: the board already held a higher one


class DeployProgress:
    """What deploy reports while it works (the CLI draws rich progress bars from it)."""

    def comparing(self, total: int) -> None: ...

    def file_started(self, device_path: str, size: int) -> None: ...

    def file_progress(self, device_path: str, done: int, size: int) -> None: ...

    def file_done(self, device_path: str) -> None: ...

    def note(self, message: str) -> None: ...


def plan(bundle: Path) -> tuple[str, list[FileToDeploy]]:
    """The bundle's version and the files a board must hold, in copy order (config, root, app).

    The bundle is checked first (every file present, its sha256 as listed)."""
    try:
        manifest = verify_bundle(bundle)
    except BundleError as e:
        raise DeployError(f"{e}. Build the bundle again (`sipas-provision build`)") from e
    files: list[FileToDeploy] = []

    def add(entry: dict[str, Any], pattern: re.Pattern[str] | None) -> None:
        rel = str(entry["path"])
        if pattern is not None and not pattern.match(rel):
            raise DeployError(f"the manifest lists {rel!r}, which does not belong on a board")
        files.append(
            FileToDeploy(bundle / rel, "/" + rel, str(entry["sha256"]), int(entry["size"]))
        )

    config = manifest.get("config")
    if config:
        if config.get("path") != "config.json":
            raise DeployError(f"the manifest's config is {config.get('path')!r}, not config.json")
        add(config, None)
    for entry in manifest.get("root", []):
        add(entry, _ROOT_PATH)
    for entry in manifest.get("app", []):
        add(entry, _APP_PATH)
    if not any(f.device_path.startswith("/app/") for f in files):
        raise DeployError(f"{bundle} holds no application files: build the bundle again")
    return str(manifest.get("version", "?")), files


def deploy(
    port: str,
    bundle: Path,
    *,
    progress: DeployProgress | None = None,
    reset: bool = True,
    device_factory: Callable[[str], Device] = Device,
) -> DeployResult:
    """Copy what differs, verify, remove stale app files, reset. Raises DeployError."""
    ui = progress or DeployProgress()
    version, files = plan(bundle)
    try:
        otacount.count_now()  # a wrong clock stops the deploy before the board is touched
    except otacount.ClockError as e:
        raise DeployError(str(e)) from e
    result = DeployResult(version)
    try:
        with device_factory(port) as dev:
            dev.enter_raw(soft_reset=True)  # stops the application; boot.py runs, main.py not
            ui.comparing(len(files))
            on_device = dev.sha256([f.device_path for f in files])
            todo = [f for f in files if on_device.get(f.device_path) != f.sha256]
            result.unchanged = [f.device_path for f in files if f not in todo]
            app_dir = dev.listdir("/app")
            if app_dir is None:
                dev.mkdir("/app")
                app_dir = []
            for f in todo:
                _copy(dev, f, ui)
                result.copied.append(f.device_path)
                result.bytes_copied += f.size
            wanted = {f.device_path for f in files}
            for name, is_dir in app_dir:
                path = f"/app/{name}"
                if path in wanted:
                    continue
                if is_dir:
                    dev.rmtree(path)
                else:
                    dev.remove(path)
                result.removed.append(path)
                ui.note(f"removed {path} (not in the bundle)")
            for leftover in OTA_LEFTOVERS:
                if dev.listdir(leftover) is not None:
                    dev.rmtree(leftover)
                    result.cancelled_ota = True
            if dev.sha256([OTA_STATE])[OTA_STATE] is not None:
                dev.remove(OTA_STATE)
                result.cancelled_ota = True
            if result.cancelled_ota:
                ui.note("an over-the-air update in progress was cancelled: this copy replaces it")
            # taken now, after the copies: commands signed while they ran are refused too
            result.ota_count, result.ota_count_written = _seed_count(dev, otacount.count_now())
            if reset:
                dev.hard_reset()
    except (DeviceError, otacount.ClockError) as e:
        raise DeployError(str(e)) from e
    return result


def _seed_count(dev: Device, n: int) -> tuple[int, bool]:
    got = dev.exec_json(otacount.seed_code(otacount.DEVICE_PATH, n))
    try:
        return int(got[0]), bool(got[1])
    except (TypeError, ValueError, IndexError, KeyError) as e:
        raise DeviceError(f"unexpected answer from the board on {dev.port}: {got!r}") from e


def _copy(dev: Device, f: FileToDeploy, ui: DeployProgress) -> None:
    data = f.local.read_bytes()
    tmp = f.device_path + TMP_SUFFIX
    ui.file_started(f.device_path, len(data))
    dev.feed_watchdog()
    dev.write_file(tmp, data, lambda done, size: ui.file_progress(f.device_path, done, size))
    got = dev.sha256([tmp])[tmp]
    if got != f.sha256:
        with contextlib.suppress(DeviceError):
            dev.remove(tmp)
        raise DeployError(
            f"{f.device_path} arrived damaged on the board (sha256 {str(got)[:12]}…, expected "
            f"{f.sha256[:12]}…); the board keeps its previous copy. Run deploy again; if it "
            "fails again, change the USB cable (a charge-only or long cable corrupts data) or "
            "the board (its flash may be failing)"
        )
    dev.rename(tmp, f.device_path)
    ui.file_done(f.device_path)
