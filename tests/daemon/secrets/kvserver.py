"""A small HTTP server that answers as Vault's KV version 2 engine does, for tests.

The wire format is Vault's: ``GET /v1/<mount>/data/<path>`` with the token in
``X-Vault-Token``; 200 ``{"data": {"data": {...}, "metadata": {"version": n,
...}}}``, 403 ``{"errors": ["permission denied"]}`` for a wrong or missing token,
404 ``{"errors": []}`` for a path (or mount) it does not hold. It is not Vault:
no leases, policies, namespaces or other engines.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from aiohttp import web

TOKEN = "s.test-root-token-0123456789"


class KVServer:
    """KV v2 secrets on loopback. ``stop()`` then ``start()`` serves again on the
    same port (Vault going away and coming back)."""

    def __init__(self, *, token: str = TOKEN, mounts: tuple[str, ...] = ("secret",)) -> None:
        self.token = token
        self.mounts = set(mounts)
        self.secrets: dict[tuple[str, str], tuple[dict[str, Any], int]] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, token) as received
        self.delay = 0.0
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def put(self, mount: str, path: str, data: dict[str, Any]) -> int:
        """Write a new version of the secret at ``mount``/``path``; returns it."""
        _old, version = self.secrets.get((mount, path), ({}, 0))
        self.secrets[(mount, path)] = (dict(data), version + 1)
        return version + 1

    def delete(self, mount: str, path: str) -> None:
        self.secrets.pop((mount, path), None)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/{mount}/data/{path:.+}", self._read)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        if not self.port:
            self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _read(self, request: web.Request) -> web.Response:
        token = request.headers.get("X-Vault-Token")
        self.requests.append((request.path, token))
        if self.delay:
            await asyncio.sleep(self.delay)
        if token != self.token:
            return web.json_response({"errors": ["permission denied"]}, status=403)
        mount, path = request.match_info["mount"], request.match_info["path"]
        found = self.secrets.get((mount, path)) if mount in self.mounts else None
        if found is None:
            return web.json_response({"errors": []}, status=404)
        data, version = found
        return web.json_response(
            {
                "request_id": str(uuid.uuid4()),
                "lease_id": "",
                "renewable": False,
                "lease_duration": 0,
                "data": {
                    "data": data,
                    "metadata": {
                        "created_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "custom_metadata": None,
                        "deletion_time": "",
                        "destroyed": False,
                        "version": version,
                    },
                },
                "wrap_info": None,
                "warnings": None,
                "auth": None,
            }
        )
