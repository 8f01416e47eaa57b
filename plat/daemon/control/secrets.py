"""Control API routes for a tenant's secrets: list (names only), set, remove.

A value arrives as the raw request body and goes straight to the secrets service,
which seals it; no answer, error or log line carries it. Setting a secret that
functions use rolls them onto the new value (blue/green, as a deploy).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from aiohttp import web

from plat.daemon.control.scope import scope_of
from plat.daemon.deployer import Deployer
from plat.daemon.functions import Functions
from plat.daemon.secrets.service import MAX_VALUE as MAX_SECRET
from plat.errors import ConflictError, PlatError
from plat.tenancy import split_key

log = logging.getLogger(__name__)


class SecretsStore(Protocol):
    async def set(self, tenant: str, name: str, value: bytes) -> int: ...

    async def list(self, tenant: str) -> list[dict[str, Any]]: ...

    async def remove(self, tenant: str, name: str) -> None: ...


class SecretTooLarge(PlatError):
    status = 413
    code = "secret_too_large"


def secret_names(manifest: dict[str, Any]) -> list[str]:
    """The names of the secrets a stored manifest lists."""
    names = []
    for entry in manifest.get("secrets") or []:
        name = entry.get("name") if isinstance(entry, dict) else entry
        if isinstance(name, str):
            names.append(name)
    return names


def secret_routes(
    secrets: SecretsStore, functions: Functions, deployer: Deployer
) -> list[web.RouteDef]:
    async def users(tenant: str, name: str | None = None) -> dict[str, list[str]]:
        """{secret name: keys of the tenant's functions that list it}."""
        out: dict[str, list[str]] = {}
        for record in await functions.store.list_functions():
            if split_key(record.name)[1] != tenant:
                continue
            for secret in secret_names(record.manifest):
                if name is None or secret == name:
                    out.setdefault(secret, []).append(record.name)
        return out

    async def list_secrets(request: web.Request) -> web.Response:
        tenant = scope_of(request).tenant
        used = await users(tenant)
        rows = [
            {**row, "used_by": [split_key(k)[0] for k in used.get(row["name"], [])]}
            for row in await secrets.list(tenant)
        ]
        return web.json_response({"tenant": tenant, "secrets": rows})

    async def put(request: web.Request) -> web.Response:
        tenant = scope_of(request).tenant
        name = request.match_info["name"]
        if request.content_length is not None and request.content_length > MAX_SECRET:
            raise SecretTooLarge(f"a secret holds at most {MAX_SECRET // 1024} KiB")
        value = bytearray()
        async for chunk in request.content.iter_chunked(64 * 1024):
            value += chunk
            if len(value) > MAX_SECRET:
                raise SecretTooLarge(f"a secret holds at most {MAX_SECRET // 1024} KiB")
        listed = {row["name"] for row in await secrets.list(tenant)}
        revision = await secrets.set(tenant, name, bytes(value))
        rolled = []
        for key in (await users(tenant, name)).get(name, []):
            try:
                if await deployer.refresh_secrets(key):
                    rolled.append(split_key(key)[0])
            except PlatError as exc:
                log.warning("could not roll %s onto secret %s: %s", key, name, exc.message)
        return web.json_response(
            {"name": name, "revision": revision, "created": name not in listed, "rolled": rolled}
        )

    async def remove(request: web.Request) -> web.Response:
        tenant = scope_of(request).tenant
        name = request.match_info["name"]
        used = (await users(tenant, name)).get(name, [])
        if used:
            error = ConflictError(
                f"secret {name!r} is used by " + ", ".join(split_key(k)[0] for k in used),
                hint="remove it from their plat.yaml and deploy them, or remove those functions",
            )
            error.code = "secret_in_use"
            raise error
        await secrets.remove(tenant, name)
        return web.json_response({"removed": name})

    return [
        web.get("/v1/secrets", list_secrets),
        web.put("/v1/secrets/{name}", put),
        web.delete("/v1/secrets/{name}", remove),
    ]
