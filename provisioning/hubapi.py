"""The few calls the technician's tool makes to an office hub's API (``/api/v1``).

Every failure becomes a :class:`HubError` whose message says what went wrong and what to do; the
answers carry secrets (the device configuration), which this module hands back and never logs.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx

API_PREFIX = "/api/v1"


class HubError(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def api_base(url: str) -> str:
    """``http://hub:8080``, ``http://hub:8080/`` or ``http://hub:8080/api/v1`` -> the API base."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise HubError(f"--hub {url!r}: give the hub's address as http://HOST:PORT")
    if url.endswith(API_PREFIX):
        url = url[: -len(API_PREFIX)]
    return url + API_PREFIX


def hub_host(url: str) -> str:
    return urlsplit(api_base(url)).hostname or ""


class HubClient:
    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 15.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not token:
            raise HubError(
                "no API token: pass --token or set SIPAS_PROVISION_TOKEN (the hub's "
                "SIPAS_HUB_API_TOKEN)"
            )
        self.base = api_base(url)
        self._http = httpx.Client(
            base_url=self.base,
            headers={"Authorization": f"Bearer {token}", "X-SIPAS-Actor": "sipas-provision"},
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, what: str, **kw: Any) -> Any:
        try:
            r = self._http.request(method, path, **kw)
        except httpx.TransportError as e:
            raise HubError(
                f"cannot reach the hub at {self.base} ({e.__class__.__name__}: {e}): check the "
                "address (--hub), that this PC is on the office network and that `sipas-hub run` "
                "is running"
            ) from e
        if r.status_code == 401:
            raise HubError(
                "the hub refused the API token: use the hub's SIPAS_HUB_API_TOKEN (--token or "
                "SIPAS_PROVISION_TOKEN)",
                401,
            )
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail")
            except ValueError:
                detail = r.text[:200]
            raise HubError(f"{what}: the hub answered {r.status_code}: {detail}", r.status_code)
        return r.json()

    def desks(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = self._call("GET", "/desks", "listing desks")
        return out

    def terminals(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = self._call("GET", "/terminals", "listing terminals")
        return out

    def register(self, terminal_id: str, desk: str | None) -> dict[str, Any]:
        """Create the terminal; the device configuration (with secrets)."""
        try:
            out: dict[str, Any] = self._call(
                "POST",
                "/terminals",
                f"registering {terminal_id}",
                json={"terminal_id": terminal_id, "desk_id": desk},
            )
        except HubError as e:
            if e.status == 404 and desk:
                raise HubError(
                    f"desk {desk!r} does not exist at this hub: create it first on the hub "
                    f'(`sipas-hub desk add {desk} "Quầy ..."`), then register again',
                    404,
                ) from e
            if e.status == 409:
                raise HubError(
                    f"{terminal_id} is already registered at this hub. A new board for the same "
                    f"desk: `sipas-provision replace {terminal_id} NEW-CHIP-ID`; a retired one "
                    "cannot come back under the same id",
                    409,
                ) from e
            raise
        return out

    def replace(self, old_id: str, new_id: str, *, force: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = self._call(
            "POST",
            f"/terminals/{old_id}/replace",
            f"replacing {old_id}",
            json={"new_terminal_id": new_id, "force": force},
        )
        return out

    def retire(
        self, terminal_id: str, *, reason: str | None, force: bool = False
    ) -> dict[str, Any]:
        out: dict[str, Any] = self._call(
            "POST",
            f"/terminals/{terminal_id}/retire",
            f"retiring {terminal_id}",
            json={"reason": reason, "force": force},
        )
        return out
