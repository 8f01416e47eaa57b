"""The web dashboard at ``/ui/``: static pages shipped in the package that call the
control API (``/api/v1/...``) with the token the user logs in with.

Only the files shipped under ``static/`` are served, looked up by name in a table
made at start: no path from a request ever reaches the file system, so nothing
outside that folder (``..``, encoded or not, symlinks) can be asked for. Every
answer carries a Content-Security-Policy that allows the page's own scripts,
styles and API calls and nothing else (no inline script, no other origin), so a
function name or a log line that slipped into the page as markup could not run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).parent / "static"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}

CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # The files change with the package; a browser asks again (and gets a 304).
    "Cache-Control": "no-cache",
}


def shipped(root: Path) -> dict[str, Path]:
    """The files the dashboard serves, by their path under ``root`` ("js/app.js"):
    regular files of a known type; symlinks (to files or folders) are left out."""
    found: dict[str, Path] = {}
    for folder, _dirs, names in os.walk(root):  # does not descend into linked folders
        for name in names:
            path = Path(folder) / name
            if path.suffix in CONTENT_TYPES and not path.is_symlink() and path.is_file():
                found[path.relative_to(root).as_posix()] = path
    return found


def _file(path: Path) -> web.FileResponse:
    headers = {**SECURITY_HEADERS, "Content-Type": CONTENT_TYPES[path.suffix]}
    return web.FileResponse(path, headers=headers)


def _not_found() -> web.Response:
    return web.Response(
        status=404, text="not found\n", content_type="text/plain", headers=SECURITY_HEADERS
    )


def ui_routes(root: Path = STATIC) -> list[web.RouteDef]:
    """``/ui/`` (the page), ``/ui/static/<file>`` (its scripts, styles, icon); GET
    and HEAD. ``root`` is the folder of the files (tests give their own)."""
    files = shipped(root)

    async def index(request: web.Request) -> web.StreamResponse:
        page = files.get("index.html")
        return _file(page) if page is not None else _not_found()

    async def bare(request: web.Request) -> web.Response:
        raise web.HTTPFound("/ui/", headers=SECURITY_HEADERS)

    async def static(request: web.Request) -> web.StreamResponse:
        path = files.get(request.match_info["path"])
        return _file(path) if path is not None else _not_found()

    return [
        web.get("/ui", bare),
        web.get("/ui/", index),
        web.get("/ui/static/{path:.*}", static),
    ]
