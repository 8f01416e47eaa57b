"""Control API routes for git hooks: add (the secret is in that answer only),
list, remove, and each hook's deliveries with their logs. A hook belongs to the
caller's tenant; another tenant's hooks answer 404, as its functions do."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from plat.daemon.control.errors import json_body
from plat.daemon.control.scope import scope_of
from plat.daemon.hooks.service import DEFAULT_TTL, HookService
from plat.errors import PlatError
from plat.units import parse_duration

MAX_LISTED = 500


def _text(data: dict[str, Any], key: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise PlatError(f"'{key}' must be a string" if key in data else f"a hook needs '{key}'")
    return value


def _ttl(value: Any) -> float:
    if value is None:
        return DEFAULT_TTL
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise PlatError("'preview_ttl' must be a duration, e.g. 72h")
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise PlatError(f"'preview_ttl': {exc}") from None


def hook_routes(hooks: HookService) -> list[web.RouteDef]:
    async def list_hooks(request: web.Request) -> web.Response:
        scope = scope_of(request)
        return web.json_response(await hooks.hooks(None if scope.every_tenant else scope.tenant))

    async def add(request: web.Request) -> web.Response:
        scope = scope_of(request)
        data = await json_body(request)
        previews = data.get("previews", True)
        if not isinstance(previews, bool):
            raise PlatError("'previews' must be true or false")
        created = await hooks.add(
            scope.tenant,
            _text(data, "function"),
            repo=_text(data, "repo"),
            branch=_text(data, "branch", "main"),
            path=_text(data, "path", ""),
            previews=previews,
            preview_ttl=_ttl(data.get("preview_ttl")),
            local_repos=scope.principal.admin,
        )
        return web.json_response(created, status=201)

    async def remove(request: web.Request) -> web.Response:
        hook, previews = await hooks.remove(scope_of(request).tenant, request.match_info["hook"])
        return web.json_response(
            {"removed": hook.id, "function": hook.function, "previews_removed": previews}
        )

    async def deliveries(request: web.Request) -> web.Response:
        try:
            limit = min(MAX_LISTED, max(1, int(request.query.get("limit", "50"))))
        except ValueError:
            raise PlatError("'limit' must be a number") from None
        tenant = scope_of(request).tenant
        return web.json_response(await hooks.deliveries(tenant, request.match_info["hook"], limit))

    async def delivery(request: web.Request) -> web.Response:
        info = request.match_info
        tenant = scope_of(request).tenant
        return web.json_response(await hooks.delivery(tenant, info["hook"], info["delivery"]))

    return [
        web.get("/v1/hooks", list_hooks),
        web.post("/v1/hooks", add),
        web.delete("/v1/hooks/{hook}", remove),
        web.get("/v1/hooks/{hook}/deliveries", deliveries),
        web.get("/v1/hooks/{hook}/deliveries/{delivery}", delivery),
    ]
