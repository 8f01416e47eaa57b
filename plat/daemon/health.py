"""``/healthz`` (the daemon is alive) and ``/readyz`` (store and engine reachable)."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from plat.daemon.drivers.base import Backend
from plat.daemon.store import Store
from plat.errors import PlatError


def health_routes(store: Store, backend: Backend, started_at: float) -> list[web.RouteDef]:
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "uptime": time.time() - started_at})

    async def readyz(request: web.Request) -> web.Response:
        checks: dict[str, str] = {}
        try:
            await asyncio.wait_for(store.ping(), timeout=2)
            checks["store"] = "ok"
        except (PlatError, TimeoutError, OSError) as exc:
            checks["store"] = f"unreachable: {exc}"
        try:
            await asyncio.wait_for(backend.list(), timeout=5)
            checks["engine"] = "ok"
        except (PlatError, TimeoutError, OSError) as exc:
            checks["engine"] = f"unreachable: {exc}"
        ok = all(v == "ok" for v in checks.values())
        return web.json_response(
            {"status": "ready" if ok else "not ready", "checks": checks}, status=200 if ok else 503
        )

    return [web.get("/healthz", healthz), web.get("/readyz", readyz)]
