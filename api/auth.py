"""Who is calling, and may they do this: API keys, tenants and roles.

A request carries its key as ``x-api-key`` (what ``langgraph-sdk`` sends) or
``Authorization: Bearer <key>``. The key names a tenant and roles; every resource a
request touches is scoped to that tenant (another tenant's id answers 404, as if it did
not exist), and every route needs a minimum role, set in one table here (``required``) so
that a route added without thinking about access is refused by ``tests/api/test_auth.py``.

Roles are ordered, each allowing what the ones before it allow::

    viewer < approver < operator < admin
    read     + answer     + start, cancel,    + manage
               interrupts   change anything     keys

Looked-up keys are cached for ``CACHE_S`` seconds per process, so a revoked key stops
working everywhere within that time and the hot path costs no Redis round trip.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated

from fastapi import Depends, Request
from starlette.routing import Match

from api.console.session import COOKIE as CONSOLE_COOKIE
from api.console.session import Session, is_console
from core.errors import Forbidden, Unauthenticated
from core.settings import Settings
from store.apikeys import ApiKeyStore, digest
from store.layout import DEFAULT_TENANT

log = logging.getLogger("interlock.auth")

CACHE_S = 5.0


class Access(IntEnum):
    """The least a request needs; a key's access is that of its highest role."""

    READ = 0
    ANSWER = 1
    WRITE = 2
    ADMIN = 3


ROLE_ACCESS = {
    "viewer": Access.READ,
    "approver": Access.ANSWER,
    "operator": Access.WRITE,
    "admin": Access.ADMIN,
}


@dataclass(frozen=True)
class Principal:
    tenant: str
    roles: tuple[str, ...]
    key_id: str
    name: str = ""
    groups: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """Who this is, for audit trails: the key's name and id (the service itself,
        acting on a deadline or a schedule, is just its name)."""
        if self.key_id == "system":
            return self.name
        return f"{self.name or 'key'} ({self.key_id})"

    def may_decide(self, assignee: str) -> bool:
        """Whether this caller may answer an approval assigned to ``assignee`` (a role,
        meaning that role or a higher one, or ``group:<name>``). Admins always may."""
        if self.access >= Access.ADMIN:
            return True
        if assignee.startswith("group:"):
            return assignee.removeprefix("group:") in self.groups
        return assignee in ROLE_ACCESS and self.access >= max(ROLE_ACCESS[assignee], Access.ANSWER)

    @property
    def access(self) -> Access:
        return max(ROLE_ACCESS[r] for r in self.roles)

    def can(self, need: Access) -> bool:
        return self.access >= need

    def require(self, need: Access, action: str) -> None:
        if not self.can(need):
            raise Forbidden(
                f"{action} needs role {_role_for(need)} or higher; this key ({self.key_id}) has {list(self.roles)}"
            )


def _role_for(need: Access) -> str:
    return next(role for role, access in ROLE_ACCESS.items() if access == need)


DEV_PRINCIPAL = Principal(
    tenant=DEFAULT_TENANT, roles=("admin",), key_id="auth-off", name="INTERLOCK_AUTH=off"
)

PUBLIC_PATHS = frozenset(
    {"/ok", "/info", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
# Authenticated by a per-trigger HMAC signature of the body instead of an API key
# (``api/routes/triggers.py``): the outside systems that call them hold no keys.
PUBLIC_PATHS |= {"/triggers/{name}"}
_READ_SUFFIXES = ("/search", "/count", "/history", "/state/checkpoint")
# Runs on a thread may be started by an approver only to answer a pending interrupt; the
# route checks the body (``api/routes/runs.py``).
_ANSWER_ROUTES = frozenset(
    {
        "/threads/{thread_id}/runs",
        "/threads/{thread_id}/runs/wait",
        "/threads/{thread_id}/runs/stream",
        "/approvals/{approval_id}/decision",
        "/console/approvals/{approval_id}/decision",
    }
)
# The console's way in and its assets; its pages need a key like any other route.
_CONSOLE_PUBLIC = frozenset({"/console/login", "/console/logout"})
_CONSOLE_STATIC = "/console/static"


def required(method: str, path: str) -> Access | None:
    """The access a route needs (``None``: public). ``path`` is the route's template."""
    if path in PUBLIC_PATHS or path in _CONSOLE_PUBLIC or path.startswith(_CONSOLE_STATIC):
        return None
    if method in ("GET", "HEAD") or path.endswith(_READ_SUFFIXES):
        return Access.READ
    if path in _ANSWER_ROUTES:
        return Access.ANSWER
    return Access.WRITE


class Authenticator:
    """Turns a request's key into a ``Principal``; one per process."""

    def __init__(self, settings: Settings, keys: ApiKeyStore) -> None:
        self.enabled = settings.auth
        self.keys = keys
        self.static = {
            digest(k.key.get_secret_value()): Principal(
                tenant=k.tenant,
                roles=tuple(k.roles),
                key_id=f"static-{i}",
                name=k.name,
                groups=tuple(k.groups),
            )
            for i, k in enumerate(settings.api_keys)
        }
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def principal(self, key: str) -> Principal | None:
        hashed = digest(key)
        if hashed in self.static:
            return self.static[hashed]
        now = time.monotonic()
        hit = self._cache.get(hashed)
        if hit is not None and hit[0] > now:
            return hit[1]
        record = await self.keys.lookup(key)
        found = (
            Principal(
                tenant=record["tenant"],
                roles=tuple(record["roles"]),
                key_id=record["id"],
                name=record["name"],
                groups=tuple(record.get("groups", ())),
            )
            if record
            else None
        )
        if len(self._cache) > 10_000:
            self._cache.clear()  # bounded: a flood of made-up keys cannot grow it forever
        self._cache[hashed] = (now + CACHE_S, found)
        return found

    async def has_keys(self) -> bool:
        return bool(self.static) or bool(await self.keys.list())


def presented_key(request: Request) -> str | None:
    """The API key of a request: from its headers, or for the web console (paths under
    ``/console``) from its session cookie only. Cookies never authenticate the JSON API,
    so no other site can make a browser call it with someone's credentials."""
    if is_console(request.url.path):
        session = Session.parse(request.cookies.get(CONSOLE_COOKIE))
        return session.key if session else None
    key = request.headers.get("x-api-key")
    if key:
        return key
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def _route_path(request: Request) -> str:
    route = request.scope.get("route")
    if route is not None:
        return str(route.path)
    for candidate in request.app.router.routes:  # pragma: no cover - starlette always sets it
        if candidate.matches(request.scope)[0] == Match.FULL:
            return str(candidate.path)
    return request.url.path


async def authenticate(request: Request) -> Principal:
    """The app-wide dependency: 401 without a valid key, 403 without the route's role."""
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    auth: Authenticator = request.app.state.auth
    need = required(request.method, _route_path(request))
    if not auth.enabled:
        principal = DEV_PRINCIPAL
    else:
        key = presented_key(request)
        found = await auth.principal(key) if key else None
        if found is None:
            if need is None:
                return Principal(tenant="", roles=("viewer",), key_id="anonymous")
            raise Unauthenticated(
                "log in to the console with an API key"
                if is_console(request.url.path)
                else "send an API key as the 'x-api-key' header or 'Authorization: Bearer <key>'"
                if key is None
                else "this API key is unknown or revoked"
            )
        principal = found
    if need is not None:
        principal.require(need, f"{request.method} {_route_path(request)}")
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(authenticate)]
