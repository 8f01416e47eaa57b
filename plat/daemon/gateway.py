"""The gateway: ``/function/<name>[/<subpath>]`` proxied to a ready instance.

Every method, the query, headers (hop-by-hop dropped) and bodies pass through,
streamed both ways over pooled keep-alive connections. Errors are JSON bodies:
401, 404, 413, 502, 504.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from plat.credentials import check_basic
from plat.daemon.controller import Controller
from plat.errors import NotFoundError, PlatError

log = logging.getLogger(__name__)

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
# Read small bodies whole (one write upstream, Content-Length kept); stream the rest.
SMALL_BODY = 256 * 1024
CHUNK = 64 * 1024


def json_error(status: int, code: str, message: str, **extra: object) -> web.Response:
    headers = {"WWW-Authenticate": 'Basic realm="plat"'} if status == 401 else None
    return web.json_response(
        {"error": code, "message": message, **extra}, status=status, headers=headers
    )


def forward_headers(headers: Mapping[str, str], drop_auth: bool) -> CIMultiDict[str]:
    """The end-to-end headers of ``headers``; repeated ones (Set-Cookie) stay separate."""
    out: CIMultiDict[str] = CIMultiDict()
    items = list(headers.items())
    connection_tokens = {
        token.strip().lower()
        for key, value in items
        if key.lower() == "connection"
        for token in value.split(",")
    }
    for key, value in items:
        lower = key.lower()
        if lower in HOP_BY_HOP or lower in connection_tokens:
            continue
        if drop_auth and lower == "authorization":
            continue
        out.add(key, value)
    return out


class BodyTooLarge(Exception):
    pass


class Gateway:
    def __init__(self, controller: Controller, *, auth_header: str, max_body: int) -> None:
        self.controller = controller
        self.auth_header = auth_header
        self.max_body = max_body
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60, ttl_dns_cache=None),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def routes(self) -> list[web.RouteDef]:
        return [
            web.route("*", "/function/{name}", self.invoke),
            web.route("*", "/function/{name}/{subpath:.*}", self.invoke),
        ]

    async def _body_stream(self, request: web.Request) -> AsyncIterator[bytes]:
        async for chunk in request.content.iter_chunked(CHUNK):
            yield chunk

    async def _read_bounded(self, request: web.Request) -> bytes:
        """A body of unknown length (chunked), read up to the limit."""
        buf = bytearray()
        async for chunk in request.content.iter_chunked(CHUNK):
            buf += chunk
            if len(buf) > self.max_body:
                raise BodyTooLarge()
        return bytes(buf)

    def _too_large(self) -> web.Response:
        return json_error(
            413,
            "body_too_large",
            f"the request body is larger than the gateway's limit of {self.max_body} bytes",
            hint="send less, or raise PLAT_MAX_BODY for the daemon",
        )

    async def invoke(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        fs = self.controller.functions.get(name)
        if fs is None:
            return json_error(404, "not_found", f"no function named {name!r} is deployed")
        if fs.manifest.auth != "public" and not check_basic(
            request.headers.get("Authorization"), self.auth_header
        ):
            return json_error(
                401,
                "unauthorized",
                "this function needs basic auth: user admin, password from `plat auth password`",
            )
        length = request.content_length
        if length is not None and length > self.max_body:
            return self._too_large()
        body: bytes | AsyncIterator[bytes] | None = None
        if request.body_exists:
            if length is None:
                try:
                    body = await self._read_bounded(request)
                except BodyTooLarge:
                    return self._too_large()
            elif length <= SMALL_BODY:
                body = await request.read()
            else:
                body = self._body_stream(request)
        try:
            inst = await self.controller.acquire(name)
        except NotFoundError as exc:
            return json_error(404, "not_found", exc.message)
        except PlatError as exc:
            return json_error(exc.status, exc.code, exc.message)
        subpath = request.match_info.get("subpath", "")
        url = f"http://{inst.running.address}/{subpath}"
        if request.query_string:
            url += "?" + request.query_string
        headers = forward_headers(request.headers, drop_auth=fs.manifest.auth != "public")
        if length is not None and isinstance(body, AsyncIterator):
            headers["Content-Length"] = str(length)
        headers["X-Forwarded-For"] = request.remote or ""
        headers["X-Forwarded-Host"] = request.host
        headers["X-Forwarded-Proto"] = request.scheme
        timeout = fs.manifest.timeout
        assert self._session is not None
        response: web.StreamResponse | None = None
        try:
            async with asyncio.timeout(timeout):
                async with self._session.request(
                    request.method,
                    url,
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                    compress=None,
                ) as upstream:
                    response = web.StreamResponse(
                        status=upstream.status,
                        reason=upstream.reason,
                        headers=forward_headers(upstream.headers, drop_auth=False),
                    )
                    if upstream.content_length is not None:
                        response.content_length = upstream.content_length
                    await response.prepare(request)
                    async for chunk in upstream.content.iter_any():
                        await response.write(chunk)
                    await response.write_eof()
                    return response
        except TimeoutError:
            if response is not None and response.prepared:
                raise
            return json_error(
                504,
                "function_timeout",
                f"{name} did not answer within its timeout of {timeout:g} s",
                hint="raise `timeout` in plat.yaml, or make the handler faster",
            )
        except (aiohttp.ClientError, ConnectionError) as exc:
            if response is not None and response.prepared:
                raise
            self.controller.suspect(inst)
            return json_error(
                502,
                "instance_failed",
                f"the instance of {name} failed to answer ({type(exc).__name__}); see its log",
            )
        finally:
            self.controller.release(inst)
