"""Register, replace and retire terminals at the office hub, keeping a record per terminal.

The district key: DESIGN.md 4.3 wants it issued by the district server, so that the hub (run by the
office being rated) never holds it. That server does not exist yet (the district issue), and the hub
still generates the key and passes it through. So a production registration (``district_url``) is
refused with a message saying what is missing, and the interim path is an explicit, loudly named
choice (``insecure_hub_district_key``) whose records are marked: see docs/decisions.md.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioning import records
from provisioning.hubapi import HubClient, HubError, api_base, hub_host

INSECURE_FLAG = "--insecure-hub-district-key"


class RegistrationError(Exception):
    """Something the technician must fix before the terminal can be registered."""


class DistrictKeyUnavailable(RegistrationError):
    """No way to obtain the district key that this deployment accepts."""


@dataclass(frozen=True)
class DistrictChoice:
    url: str | None = None  # the district server that issues the key (production)
    insecure_hub_key: bool = False  # development / pilot: accept the hub-generated key


def check_district(choice: DistrictChoice) -> str:
    """The district-key source to record, or DistrictKeyUnavailable saying what is missing.

    Checked before anything is created at the hub, so a refusal leaves nothing half-registered.
    """
    if choice.url and choice.insecure_hub_key:
        raise DistrictKeyUnavailable(
            f"--district and {INSECURE_FLAG} exclude each other: the key comes from one place"
        )
    if choice.url:
        raise DistrictKeyUnavailable(
            f"the district server at {choice.url} cannot issue terminal keys yet: this version of "
            "SIPAS has no district server (it comes with the district issue). Nothing was "
            f"registered. For a development or pilot terminal only, register with {INSECURE_FLAG} "
            "(the hub generates the district key; the record and the sticker are marked)"
        )
    if choice.insecure_hub_key:
        return records.HUB_INTERIM
    raise DistrictKeyUnavailable(
        "missing --district URL: a terminal's district key must come from the district server, so "
        "that the office's hub never holds it (DESIGN.md 4.3). This version of SIPAS has no "
        "district server yet (the district issue), so production terminals cannot be registered. "
        f"Nothing was registered. For a development or pilot terminal only, add {INSECURE_FLAG}: "
        "the hub generates the district key, and the record and the sticker say so"
    )


def _is_local(host: str) -> bool:
    if host in ("", "localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_unspecified


def broker_address(device: dict[str, Any], hub_url: str, override: str | None) -> str:
    """Where the terminal finds the broker. The hub answers its own MQTT address, which is
    127.0.0.1 or 0.0.0.0 on a hub that does not set SIPAS_HUB_ADVERTISED_HOST: useless to a
    terminal on the network, so the address this PC reached the hub at is used instead."""
    if override:
        return override
    answered = str(device.get("broker_host") or "")
    via = hub_host(hub_url)
    if _is_local(answered) and not _is_local(via):
        return via
    return answered


def _device(answer: dict[str, Any], hub_url: str, broker_host: str | None) -> dict[str, Any]:
    device = dict(answer)
    device["broker_host"] = broker_address(device, hub_url, broker_host)
    return device


def register(
    client: HubClient,
    *,
    chip: str,
    desk: str | None,
    district: DistrictChoice,
    records_dir: Path,
    broker_host: str | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Create the terminal at the hub and write its record; (record path, record)."""
    terminal_id = records.terminal_id_from_chip(chip)
    source = check_district(district)
    path = records.record_path(records_dir, terminal_id)
    if path.exists():
        old = records.load(path)
        if old.get("status") == "active":
            raise RegistrationError(
                f"{path} already records {terminal_id} as registered: to provision the same board "
                "again use `sipas-provision build` with that record; for a new board on the same "
                f"desk use `sipas-provision replace {terminal_id} NEW-CHIP-ID`"
            )
    answer = client.register(terminal_id, desk)
    rec = records.new_record(
        device=_device(answer, client.base, broker_host),
        hub_url=client.base,
        chip_id=terminal_id[2:],
        desk=desk,
        district_key_source=source,
        district_url=district.url,
    )
    records.add_event(rec, "registered", desk=desk)
    _save(records_dir, path, rec)
    return path, rec


def _save(records_dir: Path, path: Path, rec: dict[str, Any]) -> None:
    records_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    records.save(path, rec)


def _desk_at_hub(client: HubClient, terminal_id: str) -> str | None:
    for t in client.terminals():
        if t.get("id") == terminal_id:
            desk = t.get("desk")
            return str(desk) if desk else None
    return None


def replace(
    client: HubClient,
    *,
    old_id: str,
    new_chip: str,
    district: DistrictChoice,
    records_dir: Path,
    force: bool = False,
    broker_host: str | None = None,
) -> tuple[Path, dict[str, Any], Path | None]:
    """A new board takes the old one's desk; the old one's account is revoked at the broker.
    (new record path, new record, old record path if this PC had one)."""
    old_id = records.terminal_id_from_chip(old_id)
    new_id = records.terminal_id_from_chip(new_chip)
    if old_id == new_id:
        raise RegistrationError("OLD and NEW are the same terminal")
    source = check_district(district)
    new_path = records.record_path(records_dir, new_id)
    if new_path.exists() and records.load(new_path).get("status") == "active":
        raise RegistrationError(f"{new_path} already records {new_id} as an active terminal")
    try:
        answer = client.replace(old_id, new_id, force=force)
    except HubError as e:
        if e.status == 409 and "unsent" in str(e):
            raise HubError(f"{e}. With the tool: add --force (those ratings are then lost)") from e
        raise
    desk = _desk_at_hub(client, new_id)
    rec = records.new_record(
        device=_device(answer, client.base, broker_host),
        hub_url=client.base,
        chip_id=new_id[2:],
        desk=desk,
        district_key_source=source,
        district_url=district.url,
    )
    records.add_event(rec, "registered", desk=desk, replaces=old_id)
    _save(records_dir, new_path, rec)
    old_path = records.find(records_dir, old_id)
    if old_path is not None:
        old = records.load(old_path)
        old["status"] = "replaced"
        old["replaced_by"] = new_id
        records.add_event(old, "replaced", by=new_id, forced=force)
        records.save(old_path, old)
    return new_path, rec, old_path


def retire(
    client: HubClient,
    *,
    terminal_id: str,
    records_dir: Path,
    reason: str | None,
    force: bool = False,
) -> Path | None:
    """Take the terminal out of service at the hub (its broker account goes at once); the record,
    if this PC has one, is marked retired and kept (it holds the district key, see decisions)."""
    terminal_id = records.terminal_id_from_chip(terminal_id)
    try:
        client.retire(terminal_id, reason=reason, force=force)
    except HubError as e:
        if e.status == 409 and "unsent" in str(e):
            raise HubError(f"{e}. With the tool: add --force (those ratings are then lost)") from e
        raise
    path = records.find(records_dir, terminal_id)
    if path is not None:
        rec = records.load(path)
        rec["status"] = "retired"
        records.add_event(rec, "retired", reason=reason, forced=force)
        records.save(path, rec)
    return path


__all__ = [
    "DistrictChoice",
    "DistrictKeyUnavailable",
    "RegistrationError",
    "api_base",
    "check_district",
    "register",
    "replace",
    "retire",
]
