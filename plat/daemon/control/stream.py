"""An NDJSON answer whose client may leave: then the rest is dropped quietly (one
INFO line) and the work behind it carries on."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

NDJSON = {"Content-Type": "application/x-ndjson"}


class Stream:
    def __init__(self, what: str) -> None:
        self.response = web.StreamResponse(headers=NDJSON)
        self.what = what
        self.gone = False

    async def start(self, request: web.Request) -> None:
        try:
            await self.response.prepare(request)
        except (ConnectionResetError, RuntimeError):
            self._left()

    async def send(self, event: Mapping[str, Any]) -> None:
        if self.gone:
            return
        try:
            await self.response.write((json.dumps(event) + "\n").encode())
        except (ConnectionResetError, RuntimeError):
            self._left()

    async def end(self) -> None:
        if self.gone:
            return
        try:
            await self.response.write_eof()
        except (ConnectionResetError, RuntimeError):
            self._left()

    def _left(self) -> None:
        if not self.gone:
            self.gone = True
            log.info("%s: the client left; it carries on to its end", self.what)
