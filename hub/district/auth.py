"""Who is calling the district server: API tokens (stored hashed), roles, and hub tokens.

Roles (as on the hub, docs/district.md):

- ``admin`` (district administrator): everything.
- ``auditor`` (district staff, Phòng Nội vụ): reads everything, writes nothing.
- ``viewer`` (an office's supervisor): reads their own office only (``Principal.office``).
- ``provisioner`` (a district technician): issues terminal district keys, for one office when the
  token names one; reads nothing else.

Hubs are not API users: a hub's token (``sipas-district hub add``) opens only the sync endpoint,
for its own office (:func:`hub_office`).

The configured ``SIPAS_DISTRICT_ADMIN_TOKEN`` is the bootstrap admin token. Tokens are random
(32 bytes), so a plain SHA-256 is a safe way to keep them; a token is shown once, at creation.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from hub.district.models import ApiToken, Hub, Office, utcnow

ADMIN = "admin"
AUDITOR = "auditor"
VIEWER = "viewer"
PROVISIONER = "provisioner"
ROLES = (ADMIN, AUDITOR, VIEWER, PROVISIONER)

READ = (ADMIN, AUDITOR, VIEWER)  # routes that read; a viewer's answers are scoped to its office
KEYS = (ADMIN, PROVISIONER)  # issuing terminal keys

_bearer = HTTPBearer(auto_error=False)
_ROLES = "sipas_roles"


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    office: str | None = None  # viewer (and an office's provisioner): the only office it reaches
    token_id: int | None = None  # None: the bootstrap token

    def may_see(self, office: str) -> bool:
        return self.office is None or self.office == office

    @property
    def actor(self) -> str:
        return f"api:{self.name}"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def create_token(
    engine: Engine, *, name: str, role: str, office: str | None = None, by: str = "cli"
) -> tuple[ApiToken, str]:
    """A new API token; returns the row and the token (shown once, never stored)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: choose one of {', '.join(ROLES)}")
    if role == VIEWER and office is None:
        raise ValueError("a viewer token needs --office: a viewer sees one office")
    if role in (ADMIN, AUDITOR) and office is not None:
        raise ValueError(f"role {role} covers the whole district: leave out --office")
    token = _new_token("sipasd_")
    with Session(engine) as s:
        if office is not None and s.get(Office, office) is None:
            raise ValueError(f"no office {office!r}: add it with `sipas-district office add`")
        row = ApiToken(
            name=name,
            role=role,
            office=office,
            token_hash=hash_token(token),
            prefix=token[7:13],
            created_by=by,
        )
        s.add(row)
        s.commit()
        s.refresh(row)
    return row, token


def create_hub_token(engine: Engine, *, office: str) -> tuple[Hub, str]:
    """Register (or re-key) the office's hub: earlier tokens of that office stop working."""
    token = _new_token("sipash_")
    with Session(engine) as s:
        if s.get(Office, office) is None:
            raise ValueError(f"no office {office!r}: add it first with `sipas-district office add`")
        now = utcnow()
        for old in s.exec(select(Hub).where(Hub.office == office, Hub.revoked_at == None)):  # noqa: E711
            old.revoked_at = now
            s.add(old)
        row = Hub(office=office, token_hash=hash_token(token), prefix=token[7:13])
        s.add(row)
        s.commit()
        s.refresh(row)
    return row, token


def _unauthorised(why: str) -> HTTPException:
    return HTTPException(401, why, headers={"WWW-Authenticate": "Bearer"})


def principal(
    request: Request,
    cred: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, from the bearer token; 401 if it is missing, unknown or revoked."""
    if cred is None:
        raise _unauthorised("missing API token: send 'Authorization: Bearer <token>'")
    token = cred.credentials
    bootstrap: str = request.app.state.settings.admin_token
    if bootstrap and hmac.compare_digest(token.encode(), bootstrap.encode()):
        return Principal(name="admin", role=ADMIN)
    with Session(request.app.state.engine) as s:
        row = s.exec(select(ApiToken).where(ApiToken.token_hash == hash_token(token))).first()
    if row is None:
        raise _unauthorised("unknown API token: ask the district administrator for one")
    if row.revoked_at is not None:
        raise _unauthorised("this API token was revoked: ask the district administrator")
    return Principal(name=row.name, role=row.role, office=row.office, token_id=row.id)


def require(*roles: str) -> Callable[..., Principal]:
    """A dependency that lets only these roles through (403 names the roles that may)."""
    unknown = set(roles) - set(ROLES)
    if not roles or unknown:
        raise ValueError(f"require() needs roles from {ROLES}, got {roles}")
    allowed = frozenset(roles)

    def dep(who: Annotated[Principal, Depends(principal)]) -> Principal:
        if who.role not in allowed:
            raise HTTPException(
                403, f"role {who.role} may not do this; it needs: {', '.join(sorted(allowed))}"
            )
        return who

    setattr(dep, _ROLES, allowed)
    return dep


def hub_office(
    request: Request,
    cred: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The office whose hub is calling (sync endpoint); 401 if the hub token is not valid."""
    if cred is None:
        raise _unauthorised("missing hub token: send 'Authorization: Bearer <hub token>'")
    with Session(request.app.state.engine) as s:
        row = s.exec(select(Hub).where(Hub.token_hash == hash_token(cred.credentials))).first()
    if row is None or row.revoked_at is not None:
        raise _unauthorised(
            "unknown or revoked hub token: the district issues one with `sipas-district hub add "
            "OFFICE`; put it in the hub's SIPAS_HUB_DISTRICT_TOKEN"
        )
    return row.office
