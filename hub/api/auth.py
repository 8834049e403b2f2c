"""Who is calling: API tokens (stored hashed) and the four roles (docs/hub.md, "Roles").

- ``admin`` (technician): everything.
- ``supervisor`` (the office): reads everything, writes office data (desks, officials, duty, cases,
  exclusions, alerts); no terminal or firmware administration.
- ``official``: only their own results and their own duty log (``Principal.official_id``).
- ``auditor`` (district staff): reads and exports everything, writes nothing.

The hub's configured token (``SIPAS_HUB_API_TOKEN``) is the bootstrap admin token: it exists before
any token is created, and CLI tools use it. Tokens are random (32 bytes), so a plain SHA-256 is a
safe way to store them; the token itself is shown once, when it is created.

Routes say who may call them with ``dependencies=[Depends(require(*roles))]`` or take the caller
as a parameter, ``who: Annotated[Principal, Depends(require(...))]``, when they must scope what
they return (an official sees only their own ratings).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import fastapi.routing
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from hub.models import ApiToken, utcnow

ADMIN = "admin"
SUPERVISOR = "supervisor"
OFFICIAL = "official"
AUDITOR = "auditor"
ROLES = (ADMIN, SUPERVISOR, OFFICIAL, AUDITOR)

# The usual sets, so routes read the same everywhere.
READ_ALL = (ADMIN, SUPERVISOR, AUDITOR)  # every rating, report, log of the office
WRITE_OFFICE = (ADMIN, SUPERVISOR)  # desks, officials, duty, cases, exclusions, alerts
ADMIN_ONLY = (ADMIN,)  # terminals, firmware, tokens
ANY_ROLE = ROLES  # officials included: such a route must scope by Principal.official_id

_bearer = HTTPBearer(auto_error=False)
_ROLES = "sipas_roles"  # the attribute on require()'s dependency that holds its roles


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    official_id: str | None = None
    token_id: int | None = None  # None: the bootstrap token

    @property
    def actor(self) -> str:
        """What the audit log records as the actor."""
        return f"api:{self.name}"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    engine: Engine, *, name: str, role: str, official_id: str | None = None, by: str = "cli"
) -> tuple[ApiToken, str]:
    """A new token; returns the row and the token (shown once, never stored)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: choose one of {', '.join(ROLES)}")
    if (role == OFFICIAL) != (official_id is not None):
        raise ValueError("a token for role official needs --official (and only that role does)")
    token = "sipas_" + secrets.token_urlsafe(32)
    row = ApiToken(
        name=name,
        role=role,
        official_id=official_id,
        token_hash=hash_token(token),
        prefix=token[6:12],
        created_by=by,
    )
    with Session(engine) as s:
        s.add(row)
        s.commit()
        s.refresh(row)
    return row, token


def revoke_token(engine: Engine, token_id: int) -> ApiToken:
    with Session(engine) as s:
        row = s.get(ApiToken, token_id)
        if row is None:
            raise ValueError(f"no token with id {token_id}")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            s.add(row)
            s.commit()
            s.refresh(row)
        return row


def _unauthorised(why: str) -> HTTPException:
    return HTTPException(401, why, headers={"WWW-Authenticate": "Bearer"})


def principal(
    request: Request,
    cred: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    x_sipas_actor: Annotated[str | None, Header(max_length=64)] = None,
) -> Principal:
    """The caller, from the bearer token; 401 if it is missing, unknown or revoked."""
    if cred is None:
        raise _unauthorised("missing API token: send 'Authorization: Bearer <token>'")
    token = cred.credentials
    bootstrap: str = request.app.state.token
    if hmac.compare_digest(token.encode(), bootstrap.encode()):
        # CLI tools act for a person with the bootstrap token and name them in X-SIPAS-Actor.
        return Principal(name=x_sipas_actor or "admin", role=ADMIN)
    with Session(request.app.state.engine) as s:
        row = s.exec(select(ApiToken).where(ApiToken.token_hash == hash_token(token))).first()
        if row is None:
            raise _unauthorised("unknown API token: ask an administrator for one")
        if row.revoked_at is not None:
            raise _unauthorised("this API token was revoked: ask an administrator for a new one")
        now = utcnow()
        last = row.last_used_at
        if last is None or (now - last.replace(tzinfo=now.tzinfo)).total_seconds() > 60:
            row.last_used_at = now  # at most once a minute: reads stay reads
            s.add(row)
            s.commit()
        return Principal(name=row.name, role=row.role, official_id=row.official_id, token_id=row.id)


def require(*roles: str) -> Callable[..., Principal]:
    """A dependency that lets only these roles through (403 names the roles that may). It keeps its
    roles, so the app lists who may call each route (``x-roles`` in the OpenAPI document) and a test
    finds any route that declares none (:func:`roles_of`)."""
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


def scope_official(who: Principal, official_id: str | None) -> str | None:
    """The official a query may cover: an official's own id whatever they ask (403 when they ask
    for someone else), the requested one (or None: everybody) for every other role."""
    if who.role != OFFICIAL:
        return official_id
    if official_id is not None and official_id != who.official_id:
        raise HTTPException(403, "an official sees only their own results and duty log")
    return who.official_id


def api_routes(app: FastAPI) -> list[Any]:
    """Every API operation of the app as FastAPI runs it (the path with its router's prefix, the
    router's dependencies included): each has ``path``, ``methods``, ``dependant``, ``body_field``.
    FastAPI 0.12x+ keeps included routers as nodes of ``app.routes``; older ones flatten them."""
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    routes = list(contexts(app.routes)) if contexts else list(app.routes)
    return [r for r in routes if getattr(r, "dependant", None) is not None]


def roles_of(route: Any) -> frozenset[str] | None:
    """The roles a route lets in (every ``require`` in its dependency tree must pass, so the
    intersection), or None when it asks for no token at all."""
    root = getattr(route, "dependant", None)
    if root is None:
        return None
    found: frozenset[str] | None = None
    todo = [root]
    while todo:
        d = todo.pop()
        roles: frozenset[str] | None = getattr(d.call, _ROLES, None)
        if roles is not None:
            found = roles if found is None else found & roles
        todo.extend(d.dependencies)
    return found
