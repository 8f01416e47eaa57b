"""Tenants: who may call the API and functions, and how much each may run.

Tokens are random (``plat_<tenant>_<43 random characters>``), shown once, and
kept only as SHA-256 hashes: a token has 256 bits of entropy, so a fast hash
cannot be brute-forced, and checking one on the gateway's hot path costs about
a microsecond. The tenant name inside a token only finds the hash to compare
with (in constant time); it proves nothing by itself. A rotated token stops
working at once: the in-memory copy changes with the store.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass, replace
from typing import Literal

from plat.daemon.serving.quota import Limits
from plat.daemon.store import Store
from plat.daemon.store.tenants import TenantRecord
from plat.errors import ConflictError, NotFoundError, PlatError
from plat.tenancy import DEFAULT_TENANT, MAX_TENANT, valid_tenant

log = logging.getLogger(__name__)

TOKEN_PREFIX = "plat_"
# A tenant name is refused when it could be mistaken for something else.
RESERVED = frozenset({DEFAULT_TENANT, "admin", "all", "api", "plat", "system"})


@dataclass(frozen=True)
class Principal:
    """Who is calling: the admin (every tenant) or one tenant."""

    kind: Literal["admin", "tenant"]
    tenant: str = DEFAULT_TENANT

    @property
    def admin(self) -> bool:
        return self.kind == "admin"


ADMIN = Principal("admin")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(tenant: str) -> str:
    return f"{TOKEN_PREFIX}{tenant}_{secrets.token_urlsafe(32)}"


def check_tenant_name(name: str) -> None:
    if not valid_tenant(name):
        raise PlatError(
            f"{name!r} is not a valid tenant name; use 1-{MAX_TENANT} lowercase letters, "
            "digits and '-', starting and ending with a letter or digit (e.g. acme)"
        )
    if name in RESERVED:
        raise PlatError(f"{name!r} is reserved; choose another tenant name")


class Tenants:
    """The tenants, read from the store once and kept in memory (they change rarely)."""

    def __init__(self, store: Store, admin_token: str) -> None:
        self.store = store
        self._admin_hash = token_hash(admin_token).encode()
        self._tenants: dict[str, TenantRecord] = {}
        self._lock = asyncio.Lock()
        # Bumped by every change of a token: what remembers a token's tenant forgets.
        self.generation = 0

    async def load(self) -> None:
        self._tenants = {t.name: t for t in await self.store.list_tenants()}

    def exists(self, name: str) -> bool:
        return name == DEFAULT_TENANT or name in self._tenants

    def names(self) -> list[str]:
        return [DEFAULT_TENANT, *sorted(self._tenants)]

    def records(self) -> list[TenantRecord]:
        return [self._tenants[name] for name in sorted(self._tenants)]

    def limits_of(self, tenant: str) -> Limits | None:
        record = self._tenants.get(tenant)
        if record is None or (record.max_instances is None and record.max_memory is None):
            return None
        return Limits(record.max_instances, record.max_memory)

    def authenticate(self, token: str) -> Principal | None:
        """The principal a bearer token stands for; None when it stands for nobody."""
        given = token_hash(token).encode()
        if hmac.compare_digest(given, self._admin_hash):
            return ADMIN
        if not token.startswith(TOKEN_PREFIX):
            return None
        tenant = token[len(TOKEN_PREFIX) :].partition("_")[0]
        record = self._tenants.get(tenant)
        if record is None:
            # The same work either way, so a refusal tells nothing about which tenants exist.
            hmac.compare_digest(given, self._admin_hash)
            return None
        if hmac.compare_digest(given, record.token_hash.encode()):
            return Principal("tenant", tenant)
        return None

    def token_tenant(self, token: str) -> str | None:
        """The tenant a token belongs to (not the admin's), else None."""
        principal = self.authenticate(token)
        return principal.tenant if principal is not None and not principal.admin else None

    async def create(
        self, name: str, max_instances: int | None, max_memory: int | None
    ) -> tuple[TenantRecord, str]:
        """The new tenant and its token (shown once). ConflictError when it exists."""
        check_tenant_name(name)
        if max_instances is not None and max_instances < 0:
            raise PlatError("--max-instances must be 0 or more")
        token = new_token(name)
        async with self._lock:
            record = await self.store.create_tenant(
                name, token_hash(token), max_instances, max_memory
            )
            if record is None:
                raise ConflictError(f"tenant {name!r} exists", hint="`plat tenant ls` lists them")
            self._tenants[name] = record
        log.info("tenant %s created", name)
        return record, token

    async def rotate(self, name: str) -> str:
        """A new token for ``name``; the old one stops working now."""
        token = new_token(name)
        async with self._lock:
            record = self._get(name)
            digest = token_hash(token)
            if not await self.store.set_token_hash(name, digest):
                raise self.missing(name)
            self._tenants[name] = replace(record, token_hash=digest, token_at=time.time())
            self.generation += 1
        log.info("tenant %s: token rotated", name)
        return token

    async def remove(self, name: str) -> None:
        async with self._lock:
            self._get(name)
            await self.store.delete_tenant(name)
            self._tenants.pop(name, None)
            self.generation += 1
        log.info("tenant %s removed", name)

    def check(self, name: str) -> None:
        """Raises unless ``name`` is a tenant that can be changed (not ``default``)."""
        self._get(name)

    def _get(self, name: str) -> TenantRecord:
        if name == DEFAULT_TENANT:
            raise PlatError("the built-in tenant 'default' has no token and cannot be removed")
        record = self._tenants.get(name)
        if record is None:
            raise self.missing(name)
        return record

    @staticmethod
    def missing(name: str) -> NotFoundError:
        error = NotFoundError(f"no tenant named {name!r}", hint="`plat tenant ls` lists them")
        error.code = "no_tenant"
        return error


def _replace_hash(record: TenantRecord, digest: str) -> TenantRecord:
    import time
    from dataclasses import replace

    return replace(record, token_hash=digest, token_at=time.time())
