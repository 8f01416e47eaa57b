"""``/healthz`` (the daemon is alive) and ``/readyz`` (store and engine reachable)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from aiohttp import web

from plat.errors import PlatError

if TYPE_CHECKING:
    from plat.daemon.app import Daemon


def health_routes(daemon: Daemon) -> list[web.RouteDef]:
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "uptime": time.time() - daemon.started_at})

    async def readyz(request: web.Request) -> web.Response:
        checks: dict[str, str] = {}
        try:
            await asyncio.wait_for(daemon.store.ping(), timeout=2)
            checks["store"] = "ok"
        except (PlatError, TimeoutError, OSError) as exc:
            checks["store"] = f"unreachable: {exc}"
        try:
            await asyncio.wait_for(daemon.backend.list(), timeout=5)
            checks["engine"] = "ok"
        except (PlatError, TimeoutError, OSError) as exc:
            checks["engine"] = f"unreachable: {exc}"
        ok = all(v == "ok" for v in checks.values())
        return web.json_response(
            {"status": "ready" if ok else "not ready", "checks": checks}, status=200 if ok else 503
        )

    return [web.get("/healthz", healthz), web.get("/readyz", readyz)]
