"""The web dashboard at ``/ui/``: static pages shipped in the package that call the
control API (``/api/v1/...``) with the token the user logs in with."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).parent / "static"


def ui_routes() -> list[web.RouteDef]:
    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    async def bare(request: web.Request) -> web.Response:
        raise web.HTTPFound("/ui/")

    return [
        web.get("/ui", bare),
        web.get("/ui/", index),
        web.static("/ui/static", STATIC),
    ]
