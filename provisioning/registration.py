"""Register, replace and retire terminals at the office hub, keeping a record per terminal.

The district key: DESIGN.md 4.3 wants it issued by the district server, so that the hub (run by the
office being rated) never holds it. With ``--district URL --district-token T`` the tool asks the
district server (``POST /api/v1/terminals/{id}/key``) and writes that key into the device
configuration; the hub's answer also carries a key it generated, which is thrown away. The token is
checked with the district before anything is created at the hub; if the hub registered the terminal
but the district then failed, the record is kept as ``pending-district`` (mode 0600) and the same
command again only fetches the key. Pilots without a district server keep the explicit, loudly named
``insecure_hub_district_key`` choice, whose records are marked: see docs/decisions.md.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from provisioning import records
from provisioning.hubapi import HubClient, HubError, api_base, hub_host

INSECURE_FLAG = "--insecure-hub-district-key"
PENDING = "pending-district"  # a record whose terminal the hub has, still without a district key


class RegistrationError(Exception):
    """Something the technician must fix before the terminal can be registered."""


class DistrictKeyUnavailable(RegistrationError):
    """No way to obtain the district key that this deployment accepts."""


@dataclass(frozen=True)
class DistrictChoice:
    url: str | None = None  # the district server that issues the key (production)
    insecure_hub_key: bool = False  # development / pilot: accept the hub-generated key
    token: str | None = None  # the district's provisioning token (role provisioner or admin)


def check_district(choice: DistrictChoice) -> str:
    """The district-key source to record, or DistrictKeyUnavailable saying what is missing.

    Checked before anything is created at the hub, so a refusal leaves nothing half-registered.
    """
    if choice.url and choice.insecure_hub_key:
        raise DistrictKeyUnavailable(
            f"--district and {INSECURE_FLAG} exclude each other: the key comes from one place"
        )
    if choice.url:
        if not choice.token:
            raise DistrictKeyUnavailable(
                "missing --district-token: the district server issues keys only to a "
                "provisioning token (`sipas-district token create --role provisioner --office "
                "OFFICE` at the district). Nothing was registered"
            )
        return records.DISTRICT_SERVER
    if choice.insecure_hub_key:
        return records.HUB_INTERIM
    raise DistrictKeyUnavailable(
        "missing --district URL: a terminal's district key must come from the district server, so "
        "that the office's hub never holds it (DESIGN.md 4.3): add --district URL and "
        "--district-token T (SIPAS_PROVISION_DISTRICT, SIPAS_PROVISION_DISTRICT_TOKEN). Nothing "
        f"was registered. For a development or pilot terminal only, add {INSECURE_FLAG}: the hub "
        "generates the district key, and the record and the sticker say so"
    )


class DistrictClient:
    """The two calls the tool makes to the district server: who am I, and issue a key."""

    def __init__(
        self, url: str, token: str, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        base = url.strip().rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise DistrictKeyUnavailable(f"--district {url!r}: give it as https://HOST[:PORT]")
        self.base = base.removesuffix("/api/v1") + "/api/v1"
        self._http = httpx.Client(
            base_url=self.base,
            headers={"Authorization": f"Bearer {token}"},
            timeout=15.0,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, what: str, **kw: Any) -> dict[str, Any]:
        try:
            r = self._http.request(method, path, **kw)
        except httpx.TransportError as e:
            raise DistrictKeyUnavailable(
                f"{what}: cannot reach the district server at {self.base} "
                f"({e.__class__.__name__}: {e}); check --district and the network"
            ) from e
        if r.status_code == 401:
            raise DistrictKeyUnavailable(
                f"{what}: the district server refused the token: use a provisioning token "
                "(`sipas-district token create --role provisioner`) in --district-token"
            )
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail")
            except ValueError:
                detail = r.text[:200]
            raise DistrictKeyUnavailable(f"{what}: the district answered {r.status_code}: {detail}")
        out: dict[str, Any] = r.json()
        return out

    def check(self) -> None:
        """The token works and may issue keys (before anything is created at the hub)."""
        me = self._call("GET", "/me", "checking the district token")
        if me.get("role") not in ("provisioner", "admin"):
            raise DistrictKeyUnavailable(
                f"the district token is a {me.get('role')} token: keys need a provisioner token"
            )

    def issue(self, terminal_id: str, *, office: str, epoch: int, desk: str | None) -> str:
        answer = self._call(
            "POST",
            f"/terminals/{terminal_id}/key",
            f"getting {terminal_id}'s district key",
            json={"office": office, "epoch": epoch, "desk": desk},
        )
        return str(answer["district_key"])


def _district_client(choice: DistrictChoice) -> DistrictClient | None:
    if not choice.url:
        return None
    client = DistrictClient(choice.url, choice.token or "")
    try:
        client.check()
    except BaseException:
        client.close()
        raise
    return client


def _take_district_key(
    district: DistrictClient | None,
    device: dict[str, Any],
    *,
    desk: str | None,
    pending: tuple[Path, Path, dict[str, Any]],
    again: str = "run the same command again",
) -> None:
    """Put the district's key into the device configuration (in place). If the district fails,
    keep what the hub answered as a pending record, so that running the command again finishes."""
    if district is None:
        return
    device.pop("district_key", None)  # the hub generated it: the hub could have kept it
    try:
        device["district_key"] = district.issue(
            device["terminal_id"], office=device["office"], epoch=int(device["epoch"]), desk=desk
        )
    except DistrictKeyUnavailable as e:
        records_dir, path, rec = pending
        rec["device"] = device
        rec["status"] = PENDING
        _save(records_dir, path, rec)
        raise DistrictKeyUnavailable(
            f"{e}. {device['terminal_id']} IS registered at the hub, without its district key: "
            f"fix the cause and {again} (it only fetches the key; kept in {path})"
        ) from e


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
    old: dict[str, Any] | None = None
    if path.exists():
        old = records.load(path)
        if old.get("status") == "active":
            raise RegistrationError(
                f"{path} already records {terminal_id} as registered: to provision the same board "
                "again use `sipas-provision build` with that record; for a new board on the same "
                f"desk use `sipas-provision replace {terminal_id} NEW-CHIP-ID`"
            )
    resume = old is not None and old.get("status") == PENDING
    dc = _district_client(district)
    try:
        if resume and old is not None:
            if dc is None:
                raise DistrictKeyUnavailable(
                    f"{path} waits for {terminal_id}'s district key: run again with --district"
                )
            device = dict(old["device"])
            desk = old.get("desk")
        else:
            device = _device(client.register(terminal_id, desk), client.base, broker_host)
        rec = records.new_record(
            device=device,
            hub_url=client.base,
            chip_id=terminal_id[2:],
            desk=desk,
            district_key_source=source,
            district_url=district.url,
        )
        _take_district_key(dc, device, desk=desk, pending=(records_dir, path, rec))
    finally:
        if dc is not None:
            dc.close()
    rec["device"] = device
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
    dc = _district_client(district)
    try:
        try:
            answer = client.replace(old_id, new_id, force=force)
        except HubError as e:
            if e.status == 409 and "unsent" in str(e):
                raise HubError(
                    f"{e}. With the tool: add --force (those ratings are then lost)"
                ) from e
            raise
        desk = _desk_at_hub(client, new_id)
        device = _device(answer, client.base, broker_host)
        rec = records.new_record(
            device=device,
            hub_url=client.base,
            chip_id=new_id[2:],
            desk=desk,
            district_key_source=source,
            district_url=district.url,
        )
        # A pending replacement is finished with `register --chip-id NEW` and the same options.
        _take_district_key(
            dc,
            device,
            desk=desk,
            pending=(records_dir, new_path, rec),
            again=f"run `sipas-provision register --chip-id {new_id}` with the same --district "
            "options",
        )
    finally:
        if dc is not None:
            dc.close()
    rec["device"] = device
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
    "PENDING",
    "DistrictChoice",
    "DistrictClient",
    "DistrictKeyUnavailable",
    "RegistrationError",
    "api_base",
    "check_district",
    "register",
    "replace",
    "retire",
]
