"""Control API routes for tenants (the admin's): create, list, remove, rotate a token."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from plat.daemon.control.errors import json_body
from plat.daemon.control.scope import scope_of
from plat.daemon.functions import Functions
from plat.daemon.store.tenants import TenantRecord
from plat.daemon.tenants import Tenants
from plat.errors import ConflictError, PlatError
from plat.tenancy import split_key
from plat.units import parse_size

OnRemoved = Callable[[str], Awaitable[None]]


def _quota(data: dict[str, Any]) -> tuple[int | None, int | None]:
    instances, memory = data.get("max_instances"), data.get("max_memory")
    if instances is not None and (
        isinstance(instances, bool) or not isinstance(instances, int) or not 0 <= instances <= 10**6
    ):
        raise PlatError("max_instances must be a whole number from 0 to 1000000")
    if memory is not None:
        if isinstance(memory, bool) or not isinstance(memory, int | str):
            raise PlatError("max_memory must be a size such as 4Gi")
        try:
            memory = parse_size(memory)
        except ValueError as exc:
            raise PlatError(f"max_memory: {exc}") from None
    return instances, memory


def tenant_routes(
    tenants: Tenants,
    functions: Functions,
    on_removed: OnRemoved | None = None,
    warning: str | None = None,
) -> list[web.RouteDef]:
    """``warning``: what a new tenant should know about this daemon (its backend
    does not isolate tenants)."""

    def view(record: TenantRecord) -> dict[str, Any]:
        usage = functions.controller.quotas.usage(record.name)
        return {
            "name": record.name,
            "max_instances": record.max_instances,
            "max_memory": record.max_memory,
            "created_at": record.created_at,
            "token_at": record.token_at,
            "instances": usage.instances,
            "memory": usage.memory,
        }

    async def list_tenants(request: web.Request) -> web.Response:
        scope_of(request).require_admin("listing tenants")
        counts: dict[str, int] = {}
        for record in await functions.store.list_functions():
            tenant = split_key(record.name)[1]
            counts[tenant] = counts.get(tenant, 0) + 1
        rows = [{**view(r), "functions": counts.get(r.name, 0)} for r in tenants.records()]
        body: dict[str, Any] = {"tenants": rows}
        if warning:
            body["warning"] = warning
        return web.json_response(body)

    async def create(request: web.Request) -> web.Response:
        scope_of(request).require_admin("creating a tenant")
        data = await json_body(request)
        name = data.get("name")
        if not isinstance(name, str):
            raise PlatError("a tenant needs a 'name'")
        max_instances, max_memory = _quota(data)
        record, token = await tenants.create(name, max_instances, max_memory)
        body = {**view(record), "token": token}
        if warning:
            body["warning"] = warning
        return web.json_response(body, status=201)

    async def remove(request: web.Request) -> web.Response:
        scope_of(request).require_admin("removing a tenant")
        name = request.match_info["tenant"]
        tenants.check(name)
        owned = [
            r.name for r in await functions.store.list_functions() if split_key(r.name)[1] == name
        ]
        force = request.query.get("force", "0").lower() in ("1", "true", "yes")
        if owned and not force:
            error = ConflictError(
                f"tenant {name!r} has {len(owned)} function(s): "
                + ", ".join(split_key(key)[0] for key in owned),
                hint=f"remove them first, or `plat tenant rm {name} --force` removes them too",
            )
            error.code = "tenant_in_use"
            raise error
        for key in owned:
            await functions.remove(key)
        await tenants.remove(name)
        if on_removed is not None:
            await on_removed(name)
        return web.json_response({"removed": name, "functions": [split_key(k)[0] for k in owned]})

    async def rotate(request: web.Request) -> web.Response:
        scope_of(request).require_admin("rotating a tenant's token")
        name = request.match_info["tenant"]
        token = await tenants.rotate(name)
        return web.json_response({"name": name, "token": token})

    return [
        web.get("/v1/tenants", list_tenants),
        web.post("/v1/tenants", create),
        web.delete("/v1/tenants/{tenant}", remove),
        web.post("/v1/tenants/{tenant}/token", rotate),
    ]
