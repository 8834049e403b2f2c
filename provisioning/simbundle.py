"""``sipas-provision simulate BUNDLE``: boot the exact bundle that would go to a device, on CPython.

The bundle is checked against its manifest and laid out in a root directory that stands for the
device's flash, as a USB install lays it out on a terminal (:func:`provisioning.simdevice.install`:
boot code at the root, the application from the bundle's ``sources``, ``config.json``; an earlier
run's outbox is kept, so a second run resumes). :class:`provisioning.simdevice.SimDevice` then boots
it in a child process like the chip: ``ota_boot.py`` first, then the application imported from the
root (never from this checkout's ``firmware/``) with the host hardware layer.

Buttons come from the keyboard (a level and Enter) or from a script file, one line each: a level
``1``..``5``, ``wait SECONDS``, ``# a comment``. At the end the tool waits for the hub to acknowledge
what is stored and prints ``outbox N`` (ratings not acknowledged) on stdout.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from provisioning.bundle import BundleError, verify_bundle
from provisioning.simdevice import SimDevice, SimDeviceError
from provisioning.simdevice import install as install_root

EXIT_UNDELIVERED = 5  # ratings still wait in the outbox when the simulation ends


def install(bundle: Path, root: Path) -> dict[str, Any]:
    """Check the bundle and lay it out in ``root`` as on a terminal's flash; the manifest."""
    manifest = verify_bundle(bundle)
    if not manifest.get("config"):
        raise BundleError(
            f"{bundle} is a generic bundle (no config.json): simulate a terminal's bundle, "
            "built with `sipas-provision build --record R.json`"
        )
    try:
        install_root(root, bundle=bundle)
    except SimDeviceError as e:
        raise BundleError(str(e)) from e
    return manifest


def script_lines(script: Path | None) -> Iterable[str]:
    return script.read_text().splitlines() if script is not None else sys.stdin


def run(
    root: Path,
    lines: Iterable[str],
    *,
    say: Callable[[str], None],
    note: Callable[[str], None],
    drain_timeout: float = 15.0,
    boot_timeout: float = 30.0,
) -> int:
    """Boot the device root, press what ``lines`` say, wait for the acks; 0, or
    :data:`EXIT_UNDELIVERED` if ratings are still in the outbox at the end."""
    dev = SimDevice(root)
    try:
        dev.start()
        info = dev.wait_ready(timeout=boot_timeout)
    except SimDeviceError as e:
        dev.stop()
        raise BundleError(f"the bundle did not boot: {e} (its log: {dev.log})") from e
    try:
        note(
            f"terminal booted: firmware {info.get('fw')}"
            + (", SAFE MODE" if info.get("safe_mode") else "")
            + f"; its log: {dev.log}"
        )
        for raw in lines:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            words = line.split()
            if words[0] == "wait" and len(words) == 2:
                time.sleep(float(words[1]))
            elif line.isdigit() and 1 <= int(line) <= 5:
                seq = dev.press(int(line))
                say("refused (outbox full)" if seq is None else f"stored {seq}")
            else:
                note("type a level (1-5) and Enter, `wait SECONDS`, or Ctrl-D to stop")
        deadline = time.monotonic() + drain_timeout
        depth = dev.depth()
        while depth and time.monotonic() < deadline:
            time.sleep(0.1)
            depth = dev.depth()
    except SimDeviceError as e:
        raise BundleError(f"the simulated terminal stopped: {e} (its log: {dev.log})") from e
    finally:
        dev.stop()
    say(f"outbox {depth}")
    if depth:
        note(f"{depth} ratings not acknowledged by the hub yet; they are sent on the next run")
        return EXIT_UNDELIVERED
    return 0
