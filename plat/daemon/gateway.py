"""The gateway: ``/function/<name>[/<subpath>]`` proxied to a ready instance.

Requests arrive through plat.daemon.http.server; the gateway decides (route,
auth, body limits, admission, the head sent on) and plat.daemon.http.relay carries
the exchange over plat.daemon.http.upstream's keep-alive connections, one pool per
instance. Every method, the query, headers (hop-by-hop dropped) and bodies pass
through, streamed both ways. Errors are JSON bodies: 401, 404, 413, 429, 502,
503, 504; every answer about a function carries its X-Call-Id. Every call of a
deployed function is counted (metrics), recorded (journal) and traced (a W3C
traceparent goes to the instance; plat.daemon.tracing). Everything else on the
port (``/healthz``, ``/metrics``, ``/api/``, ``/ui/``) is an aiohttp application
the gateway reaches in-process over socket pairs, with the same keep-alive pooling.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Literal
from urllib.parse import unquote_to_bytes

from aiohttp import web

from plat.daemon.access import Access, host_key
from plat.daemon.control.upload import MAX_UPLOAD
from plat.daemon.http.deadlines import Deadlines
from plat.daemon.http.message import BodyTooLarge, ClientGone, Request, Response
from plat.daemon.http.relay import (
    CALL_ID_RE,
    HOP_BY_HOP,
    Call,
    CallIds,
    exchange,
    forward_headers,
    send_error,
)
from plat.daemon.http.upstream import (
    UpstreamError,
    UpstreamPool,
    Upstreams,
    socketpair_connect,
)
from plat.daemon.journal import Journal
from plat.daemon.metrics import Metrics
from plat.daemon.serving.controller import Controller
from plat.daemon.serving.function_state import FunctionState
from plat.daemon.serving.instance import Instance
from plat.daemon.store import Invocation
from plat.daemon.tenants import Tenants
from plat.daemon.tracing.export import Exporter
from plat.daemon.tracing.tracer import CallTrace, Tracer
from plat.errors import PlatError

log = logging.getLogger(__name__)

Door = Callable[[Request, Response, bytes, bytes], Awaitable[None]]

# The gateway sets these itself: a client's values are replaced, not passed on.
_REPLACED = frozenset({b"x-call-id", b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto"})
# Expect: 100-continue is answered by the gateway's server, not the function.
# X-Plat-Probe marks the controller's readiness probes, which the shims answer
# themselves: a client's would keep its call from the handler.
TO_FUNCTION = HOP_BY_HOP | _REPLACED | {b"expect", b"x-plat-probe"}
TO_FUNCTION_NO_AUTH = TO_FUNCTION | {b"authorization"}
# With tracing on, the gateway sends its own traceparent (its span is the parent).
_TRACED = frozenset({b"traceparent"})
# The in-process aiohttp app sees Authorization, the client's Host, and X-Plat-Peer (ours).
TO_INTERNAL = HOP_BY_HOP | {b"expect", b"x-plat-peer"}

# Read small bodies whole (one write upstream, a retry possible); stream the rest.
SMALL_BODY = 256 * 1024
# Requests of other methods always state a length, 0 included (as aiohttp's client did).
_BODYLESS_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE"})
SWEEP_INTERVAL = 10.0


class Gateway:
    """Serves the gateway port: functions, and ``others`` (an aiohttp app) for the rest.

    ``handle`` is the HTTP server's handler. ``start`` and ``close`` are idempotent.
    """

    def __init__(
        self,
        controller: Controller,
        journal: Journal,
        metrics: Metrics,
        *,
        auth_header: str,
        max_body: int,
        others: web.Application | None = None,
        tenants: Tenants | None = None,
        max_api_body: int = MAX_UPLOAD,
        tracer: Tracer | None = None,
        exporter: Exporter | None = None,
    ) -> None:
        """``tenants``: whose tokens may call a ``basic`` function of their tenant;
        ``max_api_body``: the control API's body limit; ``tracer``: traces calls
        (None: off); ``exporter``: sends sampled calls' spans over OTLP."""
        self.controller = controller
        self.journal = journal
        self.metrics = metrics
        self.auth_header = auth_header
        self.max_body = max_body
        self.max_api_body = max_api_body
        self.access = Access(auth_header, tenants)
        self.upstreams = Upstreams()
        self.deadlines = Deadlines()
        self.call_ids = CallIds()
        self._others = others
        self._runner: web.AppRunner | None = None
        self._internal: UpstreamPool | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._fqdn: bytes | None = None
        self.tracer = tracer if tracer is not None and tracer.enabled else None
        self.exporter = exporter if self.tracer is not None else None
        traced = _TRACED if self.tracer is not None else frozenset()
        self._drop = (TO_FUNCTION | traced, TO_FUNCTION_NO_AUTH | traced)
        # Accepts /async-function/ calls once the queue is there (plat.daemon.asyncq.door).
        self.async_door: Door | None = None
        # Told (client address, function key) of each call whose credentials were refused.
        self.on_auth_failure: Callable[[str, str], None] | None = None

    async def start(self) -> None:
        if self._sweeper is not None:
            return
        loop = asyncio.get_running_loop()
        if self._others is not None:
            runner = web.AppRunner(self._others, access_log=None, handle_signals=False)
            await runner.setup()
            self._runner = runner
            server = runner.server
            assert server is not None

            async def accept(sock: socket.socket) -> None:
                await loop.connect_accepted_socket(server, sock)

            self._internal = UpstreamPool(socketpair_connect(accept), address=b"localhost")
        self.controller.on_instance_stopped.append(self._instance_stopped)
        self._sweeper = loop.create_task(self._sweep(), name="gateway-sweeper")

    async def close(self) -> None:
        if self._sweeper is None:
            return
        self._sweeper.cancel()
        await asyncio.gather(self._sweeper, return_exceptions=True)
        self._sweeper = None
        if self._instance_stopped in self.controller.on_instance_stopped:
            self.controller.on_instance_stopped.remove(self._instance_stopped)
        self.upstreams.close()
        self.deadlines.close()
        if self._internal is not None:
            self._internal.close()
            self._internal = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _instance_stopped(self, inst: Instance) -> None:
        self.upstreams.drop(inst.id)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = time.monotonic()
            self.upstreams.sweep(now)
            if self._internal is not None:
                self._internal.sweep(now)

    # requests

    async def handle(self, request: Request, response: Response) -> None:
        path = request.path
        host = request.host
        if host is not None and b".localhost" in host:
            key = host_key(host, self.controller.functions)
            if key is not None:  # <name>[.<tenant>].localhost: the whole path is the function's
                await self.invoke(request, response, key, path)
                return
        if path.startswith(b"/function/"):
            name, _, rest = path[10:].partition(b"/")
            if name:
                await self.invoke(request, response, name, b"/" + rest)
                return
        elif path.startswith(b"/async-function/") and self.async_door is not None:
            name, _, rest = path[16:].partition(b"/")
            if name:
                await self.async_door(request, response, name, b"/" + rest)
                return
        elif not path.startswith(b"/"):  # OPTIONS *: nothing answers for the whole server
            target = path.decode("latin-1")
            send_error(response, Call(""), 404, "not_found", f"nothing answers for {target}")
            return
        await self._other(request, response)

    async def invoke(
        self, request: Request, response: Response, raw_name: bytes, subpath: bytes
    ) -> None:
        """Proxy one call; every call of a known function is counted and recorded."""
        if b"%" in raw_name:
            raw_name = unquote_to_bytes(raw_name)
        name = raw_name.decode("utf-8", "replace")
        fs = self.controller.functions.get(name)
        given = request.header(b"x-call-id")
        if given is not None and CALL_ID_RE.fullmatch(given):
            call = Call(given.decode())
        else:
            call = Call(self.call_ids.new())
        if fs is None:
            send_error(response, call, 404, "not_found", f"no function named {name!r} is deployed")
            return
        trace: CallTrace | None = None
        traceparent = b""
        if self.tracer is not None:
            trace, traceparent = self.tracer.start(request.header(b"traceparent"))
        started = time.perf_counter()
        self.metrics.request_started(name)
        try:
            await self._proxy(request, response, fs, call, subpath, trace, traceparent)
        except ClientGone as exc:
            call.status = exc.status
        except BaseException:
            call.status = 499  # the client went away (or the daemon is stopping)
            raise
        finally:
            seconds = time.perf_counter() - started
            status = call.status
            cold = call.cold
            self.metrics.request_finished(name, status, seconds, cold > 0)
            if cold:
                self.metrics.cold_start(name, cold)
            extra = () if trace is None else trace.fields(started, request.method)
            record = Invocation(
                time.time(),
                name,
                fs.version,
                status,
                seconds,
                request.content_length or call.bytes_in,
                call.bytes_out,
                cold > 0,
                call.call_id,
                *extra,
            )
            if trace is not None and self.exporter is not None:
                self.exporter.offer(record)
            self.journal.invocation(record)

    async def _proxy(
        self,
        request: Request,
        response: Response,
        fs: FunctionState,
        call: Call,
        subpath: bytes,
        trace: CallTrace | None,
        traceparent: bytes,
    ) -> None:
        name = fs.name
        manifest = fs.manifest
        public = manifest.auth == "public"
        if not public and not self.admits(request, response, fs, call):
            return
        body = await self.read_body(request, response, call)
        if body is False:
            return
        if trace is not None:
            trace.acquire_at = time.perf_counter()
        try:
            inst, call.cold = await self.controller.acquire(name)
        except PlatError as exc:
            if trace is not None:
                trace.wait = time.perf_counter() - trace.acquire_at
            retry = [b"Retry-After: 1\r\n"] if exc.status in (429, 503) else []
            send_error(response, call, exc.status, exc.code, exc.message, retry)
            return
        if trace is not None:
            trace.wait = time.perf_counter() - trace.acquire_at
            trace.instance = inst.id
            trace.pooled = inst.pooled and call.cold > 0
            trace.upstream = time.perf_counter()  # when the exchange began, until it ends
        try:
            running = inst.running
            pool = self.upstreams.pool(inst.id, running.host, running.port)
            head = self._function_head(request, pool, public, subpath, call, body, traceparent)
            timeout = manifest.timeout
            deadline = asyncio.get_running_loop().time() + timeout
            try:
                await exchange(pool, request, response, head, body, call, self.deadlines, deadline)
            except TimeoutError:
                self.controller.timed_out(inst)
                if response.started:
                    call.status = 499
                else:
                    send_error(
                        response,
                        call,
                        504,
                        "function_timeout",
                        f"{name} did not answer within its timeout of {timeout:g} s",
                        hint="raise `timeout` in plat.yaml, or make the handler faster",
                    )
            except (UpstreamError, OSError) as exc:
                if response.started:
                    call.status = 499
                else:
                    self.controller.suspect(inst)
                    send_error(
                        response,
                        call,
                        502,
                        "instance_failed",
                        f"the instance of {name} failed to answer ({exc}); see `plat logs {name}`",
                    )
        finally:
            if trace is not None and trace.upstream is not None:
                trace.upstream = time.perf_counter() - trace.upstream
            self.controller.release(inst)
            if inst.state == "stopped":  # it stopped during the call: no pool outlives it
                self.upstreams.drop(inst.id)

    def admits(self, request: Request, response: Response, fs: FunctionState, call: Call) -> bool:
        """Whether the caller may call ``fs`` (a function that is not public); the
        refusal is sent otherwise."""
        allowed = self.access.allows(request.authorization, fs.name)
        if allowed is None:  # another tenant's token: as if the function did not exist
            message = f"no function named {fs.name!r} is deployed"
            send_error(response, call, 404, "not_found", message)
            return False
        if not allowed:
            if request.authorization is not None and self.on_auth_failure is not None:
                self.on_auth_failure(request.remote, fs.name)
            send_error(
                response,
                call,
                401,
                "unauthorized",
                "this function needs the admin's basic auth (user admin, password from "
                "`plat auth password`) or its tenant's token (Authorization: Bearer <token>)",
            )
        return allowed

    async def _other(self, request: Request, response: Response) -> None:
        """Anything but a function: the in-process aiohttp app answers."""
        call = Call("")
        pool = self._internal
        if pool is None:
            response.send(404, [b"Content-Type: text/plain; charset=utf-8\r\n"], b"404: Not Found")
            return
        limit = self.max_api_body if request.path.startswith(b"/api/") else self.max_body
        try:
            body = await self.read_body(request, response, call, limit)
            if body is False:
                return
            parts = [request.method, b" ", request.target, b" HTTP/1.1\r\n"]
            parts.append(b"Host: " + (request.host or b"localhost") + b"\r\n")
            parts += (b"X-Plat-Peer: ", request.remote.encode(), b"\r\n")
            for name, value in forward_headers(request.headers, TO_INTERNAL):
                parts += (name, b": ", value, b"\r\n")
            parts.append(self._framing(request, body))
            parts.append(b"\r\n")
            await exchange(pool, request, response, b"".join(parts), body, call, self.deadlines)
        except ClientGone:
            pass
        except (UpstreamError, OSError) as exc:
            if not response.started:
                log.warning("the gateway's internal routes failed: %s", exc)
                send_error(
                    response, call, 502, "internal_error", f"the daemon failed to answer ({exc})"
                )

    # pieces

    async def read_body(
        self, request: Request, response: Response, call: Call, limit: int | None = None
    ) -> bytes | Literal[False] | None:
        """The request body to send: bytes (read whole), None (to be streamed), or
        False when it was refused (413 sent). Raises ClientGone."""
        limit = self.max_body if limit is None else limit
        length = request.content_length
        if length is not None and length > limit:
            self._too_large(response, call, limit)
            return False
        if not request.has_body:
            return b""
        if length is None:  # chunked: bounded, then sent with a Content-Length
            try:
                body = await request.read(limit)
            except BodyTooLarge:
                self._too_large(response, call, limit)
                return False
            call.bytes_in = len(body)
            return body
        if length <= SMALL_BODY:
            return await request.read(length)
        return None

    @staticmethod
    def _framing(request: Request, body: bytes | None) -> bytes:
        if body is None:
            return b"Content-Length: %d\r\n" % (request.content_length or 0)
        if body or request.method not in _BODYLESS_METHODS:
            return b"Content-Length: %d\r\n" % len(body)
        return b""

    def _function_head(
        self,
        request: Request,
        pool: UpstreamPool,
        public: bool,
        subpath: bytes,
        call: Call,
        body: bytes | None,
        traceparent: bytes,
    ) -> bytes:
        target = subpath + b"?" + request.query if request.query else subpath
        parts = [request.method, b" ", target, b" HTTP/1.1\r\nHost: ", pool.address, b"\r\n"]
        for name, value in forward_headers(request.headers, self._drop[0 if public else 1]):
            parts += (name, b": ", value, b"\r\n")
        parts.append(self._framing(request, body))
        host = request.host
        if host is None:
            if self._fqdn is None:
                self._fqdn = socket.getfqdn().encode()  # as aiohttp's request.host did
            host = self._fqdn
        parts += (
            b"X-Forwarded-For: ",
            request.remote.encode(),
            b"\r\nX-Forwarded-Host: ",
            host,
            b"\r\nX-Forwarded-Proto: http\r\n",
            call.id_line,
            traceparent,
            b"\r\n",
        )
        return b"".join(parts)

    def _too_large(self, response: Response, call: Call, limit: int | None = None) -> None:
        limit = self.max_body if limit is None else limit
        send_error(
            response,
            call,
            413,
            "body_too_large",
            f"the request body is larger than the gateway's limit of {limit} bytes",
            hint="send less, or raise PLAT_MAX_BODY for the daemon",
        )
