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

A token is checked when a request arrives; a live stream (``/ratings/stream``, ``/alerts/stream``)
stays open for hours, so it re-checks its token while open with a :class:`TokenWatch` and ends with
``event: end`` (:func:`end_event`) once the token is revoked or no longer allows the route.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import fastapi.routing
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, select

from hub.models import ApiToken, utcnow

log = logging.getLogger(__name__)

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

# How often (seconds) an open live stream re-reads the token that opened it: one primary-key read
# per stream per interval, however many events it sends, and a revoked token hears at most this
# much more. ``app.state.token_recheck_seconds`` overrides it (tests use a fraction of a second).
TOKEN_RECHECK_SECONDS = 5.0

# Why a stream ended (the ``reason`` of its ``event: end``), with what an API client is told.
END_REASONS = {
    "token_revoked": "this API token was revoked: ask an administrator for a new one",
    "token_unknown": "this API token no longer exists: ask an administrator for one",
    "role_forbidden": "this API token's role no longer allows this stream: sign in again with a "
    "token that does",
}

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


def token_problem(engine: Engine, who: Principal, allowed: frozenset[str]) -> str | None:
    """Why the token behind ``who`` may no longer do what it was let in for (a key of
    :data:`END_REASONS`), or None while it still may. The bootstrap token lasts as long as the hub
    runs with it."""
    if who.token_id is None:
        return None
    with Session(engine) as s:
        row = s.get(ApiToken, who.token_id)
    if row is None:
        return "token_unknown"
    if row.revoked_at is not None:
        return "token_revoked"
    # a stream was scoped for the role (and official) it was opened with: any change ends it
    if row.role not in allowed or (row.role, row.official_id) != (who.role, who.official_id):
        return "role_forbidden"
    return None


class TokenWatch:
    """Re-checks, while a stream is open, the token that opened it: at most once every ``every``
    seconds (a database read in a worker thread), so a busy stream costs the same as an idle one.
    Call :meth:`problem` before sending each event and wait no longer than :meth:`due_in` when idle.
    """

    def __init__(
        self,
        engine: Engine,
        who: Principal,
        roles: tuple[str, ...],
        every: float = TOKEN_RECHECK_SECONDS,
    ) -> None:
        self._engine = engine
        self._who = who
        self._allowed = frozenset(roles)
        self._every = every
        self._due = time.monotonic() + every  # the request itself was just checked

    def due_in(self) -> float:
        """Seconds until the next check (inf for the bootstrap token, which is never re-read)."""
        if self._who.token_id is None:
            return math.inf
        return max(0.0, self._due - time.monotonic())

    async def problem(self) -> str | None:
        """Why the stream must end now (see :func:`token_problem`); reads the database only when
        a check is due, so calling it before every event is cheap."""
        if self.due_in() > 0:
            return None
        self._due = time.monotonic() + self._every
        try:
            return await asyncio.to_thread(token_problem, self._engine, self._who, self._allowed)
        except SQLAlchemyError as e:  # a busy database must not cut every screen: next time
            log.warning("could not re-check a stream's API token (%s); trying again", e)
            return None


def recheck_seconds(request: Request) -> float:
    return float(getattr(request.app.state, "token_recheck_seconds", TOKEN_RECHECK_SECONDS))


def end_event(reason: str) -> str:
    """The stream's last event: ``event: end`` with ``{"reason": ..., "detail": ...}`` and no id,
    so a client knows not to reconnect with this token (the dashboard asks to sign in again)."""
    data = json.dumps({"reason": reason, "detail": END_REASONS.get(reason, reason)})
    return f"event: end\ndata: {data}\n\n"


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
