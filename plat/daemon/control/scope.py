"""Who calls the control API, and for which tenant.

The unix socket's caller is the admin. On the gateway port (``/api/v1/...``) a
caller shows ``Authorization: Bearer <token>``: the admin token, or a tenant's.
The admin picks a tenant with ``X-Plat-Tenant`` (none: ``default``, and every
tenant for the lists); a tenant's token always acts for its own tenant, and a
name of another tenant is a 404, as if it did not exist.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Literal

from aiohttp import web
from aiohttp.typedefs import Middleware

from plat.credentials import USER, check_basic
from plat.daemon.control.errors import Handler
from plat.daemon.tenants import ADMIN, Principal, Tenants
from plat.errors import PlatError, no_function
from plat.manifest import NAME_RE
from plat.tenancy import function_key

TENANT_HEADER = "X-Plat-Tenant"
Door = Literal["socket", "http"]


class Unauthorized(PlatError):
    status = 401
    code = "unauthorized"


class Forbidden(PlatError):
    status = 403
    code = "forbidden"


@dataclass(frozen=True)
class Scope:
    principal: Principal
    door: Door
    tenant: str  # the tenant acted on
    chosen: bool  # whether a tenant was named (the admin's lists cover all otherwise)

    @property
    def every_tenant(self) -> bool:
        """Lists cover every tenant: the admin named none."""
        return self.principal.admin and not self.chosen

    def key(self, name: str) -> str:
        """The key of function ``name`` of this scope's tenant; 404 for a name that is
        not a plain function name."""
        if not NAME_RE.fullmatch(name):
            raise no_function(name)
        return function_key(name, self.tenant)

    def sees(self, tenant: str) -> bool:
        return self.every_tenant or tenant == self.tenant

    def require_admin(self, what: str) -> None:
        if not self.principal.admin:
            raise Forbidden(f"{what} needs the admin token", hint="ask the plat admin")


SCOPE = web.RequestKey("scope", Scope)


def scope_of(request: web.Request) -> Scope:
    return request[SCOPE]


def _choose(principal: Principal, door: Door, request: web.Request, tenants: Tenants) -> Scope:
    named = request.headers.get(TENANT_HEADER, "").strip()
    if not named:
        return Scope(principal, door, principal.tenant, chosen=not principal.admin)
    if not principal.admin and named != principal.tenant:
        raise Tenants.missing(named)
    if not tenants.exists(named):
        raise Tenants.missing(named)
    return Scope(principal, door, named, chosen=True)


def bearer_principal(header: str, tenants: Tenants, admin_basic: str) -> Principal | None:
    """The principal an Authorization header stands for (Bearer token, or the admin's
    Basic credentials); None for anything else."""
    scheme, _, credentials = header.strip().partition(" ")
    credentials = credentials.strip()
    scheme = scheme.lower()
    if scheme == "bearer" and credentials:
        return tenants.authenticate(credentials)
    if scheme == "basic" and credentials:
        if check_basic(header, admin_basic):
            return ADMIN
        try:
            user, _, secret = base64.b64decode(credentials, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        if user != USER and secret and tenants.token_tenant(secret) == user:
            return Principal("tenant", user)
    return None


def socket_scope(tenants: Tenants) -> Middleware:
    """Middleware of the unix socket: the caller is the admin."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        request[SCOPE] = _choose(ADMIN, "socket", request, tenants)
        return await handler(request)

    return middleware


def http_scope(tenants: Tenants, admin_basic: str) -> Middleware:
    """Middleware of the gateway's door: a token (or the admin's Basic credentials)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        header = request.headers.get("Authorization")
        principal = bearer_principal(header, tenants, admin_basic) if header else None
        if principal is None:
            raise Unauthorized(
                "the control API on the gateway needs `Authorization: Bearer <token>`"
                + ("" if header is None else "; the token given was refused"),
                hint="a tenant's token comes from `plat tenant create` or "
                "`plat tenant token NAME --rotate`; the admin's from `plat auth token`",
            )
        request[SCOPE] = _choose(principal, "http", request, tenants)
        return await handler(request)

    return middleware
