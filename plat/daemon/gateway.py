"""The gateway: ``/function/<name>[/<subpath>]`` proxied to a ready instance.

Every method, the query, headers (hop-by-hop dropped) and bodies pass through,
streamed both ways over pooled keep-alive connections. Errors are JSON bodies:
401, 404, 413, 502, 504.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from plat.credentials import check_basic
from plat.daemon.controller import Controller, FunctionState
from plat.daemon.journal import Journal
from plat.daemon.metrics import Metrics
from plat.daemon.store import Invocation
from plat.errors import PlatError

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


CALL_ID_HEADER = "X-Call-Id"
CALL_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")


class BodyTooLarge(Exception):
    pass


class Gateway:
    def __init__(
        self,
        controller: Controller,
        journal: Journal,
        metrics: Metrics,
        *,
        auth_header: str,
        max_body: int,
    ) -> None:
        self.controller = controller
        self.journal = journal
        self.metrics = metrics
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
        """Proxy one call; every call of a known function is counted and recorded."""
        name = request.match_info["name"]
        fs = self.controller.functions.get(name)
        call_id = request.headers.get(CALL_ID_HEADER, "")
        if not CALL_ID_RE.fullmatch(call_id):
            call_id = uuid.uuid4().hex
        if fs is None:
            response: web.StreamResponse = json_error(
                404, "not_found", f"no function named {name!r} is deployed"
            )
            response.headers[CALL_ID_HEADER] = call_id
            return response
        started = time.perf_counter()
        self.metrics.request_started(name)
        call = _Call(call_id)
        try:
            response = await self._proxy(request, fs, call)
        except BaseException:
            call.status = 499  # the client went away mid-response
            raise
        finally:
            seconds = time.perf_counter() - started
            status = call.status
            self.metrics.request_finished(name, status, seconds, call.cold > 0)
            if call.cold:
                self.metrics.cold_start(name, call.cold)
            self.journal.invocation(
                Invocation(
                    time.time(),
                    name,
                    fs.version,
                    status,
                    seconds,
                    request.content_length or call.bytes_in,
                    call.bytes_out,
                    call.cold > 0,
                    call_id,
                )
            )
        return response

    async def _proxy(
        self, request: web.Request, fs: FunctionState, call: _Call
    ) -> web.StreamResponse:
        name = fs.name
        if fs.manifest.auth != "public" and not check_basic(
            request.headers.get("Authorization"), self.auth_header
        ):
            return call.error(
                401,
                "unauthorized",
                "this function needs basic auth: user admin, password from `plat auth password`",
            )
        length = request.content_length
        if length is not None and length > self.max_body:
            return call.reply(self._too_large())
        body: bytes | AsyncIterator[bytes] | None = None
        if request.body_exists:
            if length is None:
                try:
                    body = await self._read_bounded(request)
                except BodyTooLarge:
                    return call.reply(self._too_large())
                call.bytes_in = len(body)
            elif length <= SMALL_BODY:
                body = await request.read()
            else:
                body = self._body_stream(request)
        try:
            inst, call.cold = await self.controller.acquire(name)
        except PlatError as exc:
            refused = call.error(exc.status, exc.code, exc.message)
            if exc.status in (429, 503):
                refused.headers["Retry-After"] = "1"
            return refused
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
        headers[CALL_ID_HEADER] = call.call_id
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
                    out_headers = forward_headers(upstream.headers, drop_auth=False)
                    out_headers[CALL_ID_HEADER] = call.call_id
                    response = web.StreamResponse(
                        status=upstream.status, reason=upstream.reason, headers=out_headers
                    )
                    call.status = upstream.status
                    if upstream.content_length is not None:
                        response.content_length = upstream.content_length
                    await response.prepare(request)
                    async for chunk in upstream.content.iter_any():
                        call.bytes_out += len(chunk)
                        await response.write(chunk)
                    await response.write_eof()
                    return response
        except TimeoutError:
            if response is not None and response.prepared:
                raise
            return call.error(
                504,
                "function_timeout",
                f"{name} did not answer within its timeout of {timeout:g} s",
                hint="raise `timeout` in plat.yaml, or make the handler faster",
            )
        except (aiohttp.ClientError, ConnectionError) as exc:
            if response is not None and response.prepared:
                raise
            self.controller.suspect(inst)
            return call.error(
                502,
                "instance_failed",
                f"the instance of {name} failed to answer ({type(exc).__name__}); "
                f"see `plat logs {name}`",
            )
        finally:
            self.controller.release(inst)


class _Call:
    """What the gateway learns about one call while proxying it."""

    __slots__ = ("bytes_in", "bytes_out", "call_id", "cold", "status")

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self.status = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.cold = 0.0

    def reply(self, response: web.Response) -> web.Response:
        self.status = response.status
        self.bytes_out = len(response.body or b"") if isinstance(response.body, bytes) else 0
        response.headers[CALL_ID_HEADER] = self.call_id
        return response

    def error(self, status: int, code: str, message: str, **extra: object) -> web.Response:
        return self.reply(json_error(status, code, message, **extra))
