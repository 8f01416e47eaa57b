"""A lean HTTP/1.1 server: an asyncio Protocol parsing with httptools (llhttp).

It serves one ``handler(request, response)`` coroutine per request and knows
nothing about plat. Requests on one connection are answered strictly in order:
a pipelined request waits (and reading pauses) until the one before it is
answered, so pipelining is safe. Request bodies are buffered only up to
``BODY_HIGH_WATER`` before reading pauses, so a handler can stream them; a
response is written as the handler produces it, framed by Content-Length when
the handler knows the length and chunked otherwise (close-delimited for
HTTP/1.0 clients).

A client that disconnects while its request is being handled cancels the
handler task, unless the handler set ``response.on_gone``: then that callback
runs instead (the gateway uses it to finish an exchange with an instance
before giving the slot back). Writes to a gone client are dropped silently.
A body the handler left unread is read and discarded (for at most
``linger_timeout``) so that the connection can serve the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import cast

import httptools

from plat.daemon.http_message import Request, Response, reason

log = logging.getLogger(__name__)

Handler = Callable[[Request, Response], Awaitable[None]]

# Idle keep-alive connections are closed after this long (aiohttp's default).
KEEPALIVE_TIMEOUT = 75.0
# A request body the handler left unread is discarded for at most this long.
LINGER_TIMEOUT = 10.0
MAX_HEAD = 64 * 1024
# Headers the server notes on the Request (framing, and what most handlers ask for).
_NOTED = frozenset({b"content-length", b"transfer-encoding", b"expect", b"host", b"authorization"})
_TEXT_PLAIN = b"Content-Type: text/plain; charset=utf-8\r\n"


class ServerConnection(asyncio.Protocol):
    """One client connection: parses requests, runs the handler for each, in order."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.remote = ""
        self.parser = httptools.HttpRequestParser(self)
        self.idle_since: float | None = time.monotonic()
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._in_head = False
        self._parsing: Request | None = None
        self._active: tuple[Request, Response] | None = None
        self._task: asyncio.Task[None] | None = None
        self._queue: deque[Request] = deque()
        self._paused_body = False
        self._paused_queue = False
        self.write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._stop_reading = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, tuple) else ""
        self.server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self._stop_reading or self._closed:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrades (WebSocket) are not proxied: answer this request, then close.
            self._stop_reading = True
            return
        except httptools.HttpParserError:
            self._bad_request(400)
            return
        if self._in_head:
            # Counts whole reads: a head spread over many reads grows past the limit.
            self._head_size += len(data)
            if self._head_size > MAX_HEAD:
                self._bad_request(431)

    def eof_received(self) -> bool | None:
        return None  # half-closed clients are treated as gone (as aiohttp does)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.server.connections.discard(self)
        self._queue.clear()
        if self._parsing is not None:
            self._parsing.fail()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        active = self._active
        if active is None:
            return
        request, response = active
        response.gone = True
        request.fail()
        if response.on_gone is not None:
            response.on_gone()
        elif self._task is not None:
            self._task.cancel()

    def pause_writing(self) -> None:
        self.write_paused = True
        producer = self._active[1].producer if self._active is not None else None
        if producer is not None:
            producer.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        producer = self._active[1].producer if self._active is not None else None
        if producer is not None:
            producer.resume_reading()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_size = 0
        self._url = b""
        self._headers = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_size = 0
        parser = self.parser
        request = Request(
            self,
            parser.get_method(),
            self._url,
            parser.get_http_version(),
            self._headers,
            parser.should_keep_alive(),
        )
        for name, value in self._headers:
            lower = name.lower()
            if lower in _NOTED:
                if lower == b"content-length":
                    request.content_length = int(value)
                elif lower == b"transfer-encoding":
                    request.chunked = True
                elif lower == b"host":
                    if request.host is None:
                        request.host = value
                elif lower == b"authorization":
                    if request.authorization is None:
                        request.authorization = value
                elif value.lower() == b"100-continue" and request.version == "1.1":
                    request.expects_continue = True
        if not request.has_body:
            request.body_done = True
        self._parsing = request
        if self._active is None and not self._queue:
            self._begin(request)
        else:
            self._queue.append(request)
            self._set_paused(queue=True)

    def on_body(self, body: bytes) -> None:
        if self._parsing is not None:
            self._parsing.feed_body(body)

    def on_message_complete(self) -> None:
        request = self._parsing
        if request is None:
            return
        self._parsing = None
        request.end_body()
        if request.discarding and self._active is None:
            self._next()  # the handler finished earlier; the body is now read

    # requests

    def _begin(self, request: Request) -> None:
        self.idle_since = None
        response = Response(self, request)
        self._active = (request, response)
        self._task = self.loop.create_task(self._serve(request, response))

    async def _serve(self, request: Request, response: Response) -> None:
        try:
            await self.server.handler(request, response)
        except asyncio.CancelledError:
            if not response.gone:
                raise
        except Exception:
            log.exception("the HTTP handler failed on %s %s", request.method, request.target)
        finally:
            self._finish(request, response)

    def _finish(self, request: Request, response: Response) -> None:
        self._active = None
        self._task = None
        if self._closed:
            return
        if not response.finished:
            if response.started:
                response.abort()
                return
            response.keep_alive = False
            response.send(500, [_TEXT_PLAIN], b"500: Internal Server Error")
        if not response.keep_alive or self._stop_reading:
            assert self.transport is not None
            self.transport.close()
            self._closed = True
            return
        if not request.body_done:
            request.drop_body()
            self._set_paused(body=False)
            self.idle_since = time.monotonic()  # lingering: see HttpServer.sweep
            return
        self._next()

    def _next(self) -> None:
        if self._queue:
            request = self._queue.popleft()
            if not self._queue:
                self._set_paused(queue=False)
            self._begin(request)
        else:
            self.idle_since = time.monotonic()
            self._set_paused(queue=False, body=False)

    def _bad_request(self, status: int) -> None:
        """An unparsable request: answer it when nothing else is on the wire, then close."""
        self._queue.clear()
        if self._active is not None:
            self._stop_reading = True  # close after the response in progress
            self._active[1].keep_alive = False
            return
        self._closed = True
        if self.transport is not None:
            body = b"%d: %s" % (status, reason(status))
            self.transport.write(
                b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                % (status, reason(status), len(body), body)
            )
            self.transport.close()

    # used by Request and Response

    def write_raw(self, data: bytes) -> None:
        if not self._closed and self.transport is not None:
            self.transport.write(data)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    async def drain(self) -> None:
        while self.write_paused and not self._closed:
            self._drain_waiter = self.loop.create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None

    def body_buffered(self) -> None:
        self._set_paused(body=True)

    def body_drained(self) -> None:
        if self._paused_body:
            self._set_paused(body=False)

    def _set_paused(self, *, body: bool | None = None, queue: bool | None = None) -> None:
        was = self._paused_body or self._paused_queue
        if body is not None:
            self._paused_body = body
        if queue is not None:
            self._paused_queue = queue
        now = self._paused_body or self._paused_queue
        if now != was and self.transport is not None and not self._closed:
            if now:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def close_if_idle(self, now: float, keepalive: float, linger: float) -> None:
        since = self.idle_since
        if since is None or self.transport is None:
            return
        lingering = self._active is None and self._parsing is not None and self._parsing.discarding
        if now - since > (linger if lingering else keepalive):
            self._closed = True
            self.transport.close()

    def shut(self) -> None:
        """Close now if idle; otherwise close once the current response is done."""
        if self._active is None:
            self._closed = True
            if self.transport is not None:
                self.transport.close()
        else:
            self._active[1].keep_alive = False
            self._queue.clear()


class HttpServer:
    """Listens on a TCP port and serves ``handler`` on every connection.

    ``start`` raises OSError when the address cannot be bound; ``close`` is
    idempotent: it stops listening, closes idle connections, gives requests in
    progress up to ``grace`` seconds, then cuts what is left.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        keepalive_timeout: float = KEEPALIVE_TIMEOUT,
        linger_timeout: float = LINGER_TIMEOUT,
    ) -> None:
        self.handler = handler
        self.keepalive_timeout = keepalive_timeout
        self.linger_timeout = linger_timeout
        self.connections: set[ServerConnection] = set()
        self.loop = asyncio.get_running_loop()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._port = 0

    async def start(self, host: str, port: int) -> None:
        if self._server is not None:
            return
        self._server = await self.loop.create_server(
            lambda: ServerConnection(self), host, port, reuse_address=True, backlog=1024
        )
        self._port = int(self._server.sockets[0].getsockname()[1])
        self._sweeper = self.loop.create_task(self._sweep(), name="http-server-sweeper")

    @property
    def port(self) -> int:
        """The port listened on (0 before ``start``)."""
        return self._port

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._server.sockets) if self._server is not None else ()

    async def _sweep(self) -> None:
        interval = min(self.keepalive_timeout, self.linger_timeout) / 4
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for conn in list(self.connections):
                conn.close_if_idle(now, self.keepalive_timeout, self.linger_timeout)

    async def close(self, grace: float = 5.0) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        for conn in list(self.connections):
            conn.shut()
        deadline = time.monotonic() + grace
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.abort()
        with contextlib.suppress(Exception):
            await server.wait_closed()
        await asyncio.sleep(0)  # let connection_lost run for the aborted ones
