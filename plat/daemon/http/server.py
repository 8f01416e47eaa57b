"""A lean HTTP/1.1 server: an asyncio Protocol parsing with httptools (llhttp).

It serves one ``handler(request, response)`` coroutine per request and knows
nothing about plat. Requests on one connection are answered strictly in order:
a pipelined request waits (and reading pauses) until the one before it is
answered, so pipelining is safe; a large read is parsed a slice at a time and
no further while ``QUEUE_AHEAD`` requests wait, so pipelining cannot pile up
parsed requests either. Request bodies are buffered only up to
``BODY_HIGH_WATER`` before reading pauses, so a handler can stream them; a
response is written as the handler produces it, framed by Content-Length when
the handler knows the length and chunked otherwise (close-delimited for
HTTP/1.0 clients).

A client that disconnects while its request is being handled cancels the
handler task (a handler waiting for the body gets ClientGone instead), unless
the handler set ``response.on_gone``: then that callback runs instead (the
gateway uses it to finish an exchange with an instance before giving the slot
back). Writes to a gone client are dropped silently. A body the handler left
unread is read and discarded (for at most ``linger_timeout``) so that the
connection can serve the next request.

What the server refuses (plat.daemon.http.rules) is answered in its turn with
a JSON body, then the connection closes: unparsable requests, heads over
``MAX_HEAD``, versions other than 1.0 and 1.1, a missing Host, a head not
complete within ``head_timeout`` or a body that makes no progress for
``body_timeout`` (408). Upgrade requests are served as plain HTTP/1.1, body
included: the server ignores ``Upgrade`` (RFC 9110, section 7.8). At
``max_connections`` a new connection closes the oldest idle one, else the one
that has been sending its head the longest, else it is closed itself. One
sweeper task keeps every deadline: no timer per request.
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

from plat.daemon.http.message import ClientGone, Request, Response
from plat.daemon.http.rules import (
    AT_CAPACITY,
    HEAD_TOO_LARGE,
    MAX_HEAD,
    Refusal,
    check_head,
    parser_refusal,
    timed_out,
)

log = logging.getLogger(__name__)

Handler = Callable[[Request, Response], Awaitable[None]]

# Idle keep-alive connections are closed after this long (aiohttp's default).
KEEPALIVE_TIMEOUT = 75.0
# A request body the handler left unread is discarded for at most this long.
LINGER_TIMEOUT = 10.0
# A request head must be complete this long after its first byte (a new
# connection's first head: after the connection opened).
HEAD_TIMEOUT = 10.0
# A request body being read may go this long without a byte.
BODY_TIMEOUT = 30.0
MAX_CONNECTIONS = 4096
# Reads larger than this are parsed a slice at a time; parsing stops while this
# many requests (or more) are queued, the rest of the read is kept as bytes.
FEED_SLICE = 16 * 1024
QUEUE_AHEAD = 64
# Headers the server notes on the Request (framing, and what most handlers ask for).
_NOTED = frozenset(
    {b"content-length", b"transfer-encoding", b"expect", b"host", b"authorization", b"upgrade"}
)
_TEXT_PLAIN = b"Content-Type: text/plain; charset=utf-8\r\n"
# A request line's bytes besides the target (method, spaces, version, CRLF), and
# a header line's besides its name and value (": ", CRLF), for MAX_HEAD.
_LINE_OVERHEAD = 16
_HEADER_OVERHEAD = 4


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; the refusal is on the connection."""


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
        self._head_partial = 0  # bytes of reads inside a header line llhttp still holds
        self._in_head = False
        self._messages = 0  # request heads begun
        self._reads = 0
        self._parsing: Request | None = None
        self._active: tuple[Request, Response] | None = None
        self._task: asyncio.Task[None] | None = None
        self._queue: deque[Request | Refusal] = deque()
        self._backlog = b""
        self._feeding = False
        self._refusal: Refusal | None = None
        self._upgrading: Request | None = None
        self._synthetic = False
        self._paused_body = False
        self._paused_queue = False
        self.write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._stop_reading = False
        self._draining = False  # answered and shut for writing: see _answer
        # what the sweeper saw on its last visit (see expire)
        self._head_mark = -1
        self._head_since = 0.0
        self._body_mark = -1
        self._body_since = 0.0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        server = self.server
        if len(server.connections) >= server.max_connections and not server.shed():
            self._close()
            return
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, tuple) else ""
        server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self._stop_reading or self._closed:
            return
        self._reads += 1
        if len(data) > FEED_SLICE or self._backlog:
            self._feed_sliced(data)
        else:
            self._feed(data)

    def eof_received(self) -> bool | None:
        return None  # half-closed clients are treated as gone (as aiohttp does)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.server.connections.discard(self)
        self._queue.clear()
        self._backlog = b""
        if self._parsing is not None:
            self._parsing.fail()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._abandon(499)

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

    # parsing

    def _feed(self, data: bytes | memoryview) -> None:
        while True:
            in_head = self._in_head
            size = self._head_size
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade as exc:
                data = data[int(exc.args[0]) :]
                self._upgraded()
                if data and not self._stop_reading:
                    continue
                return
            except httptools.HttpParserError as exc:
                refusal, self._refusal = self._refusal, None
                self._refuse(refusal or parser_refusal(exc))
                return
            break
        if in_head and self._in_head:
            if self._head_size != size:
                self._head_partial = 0
            else:  # the whole read is inside one header line that llhttp still holds
                self._head_partial += len(data)
                if self._head_size + self._head_partial > MAX_HEAD:
                    self._refuse(HEAD_TOO_LARGE)

    def _feed_sliced(self, data: bytes) -> None:
        """Parse a slice at a time; stop while QUEUE_AHEAD requests wait (reading is
        paused then) and keep the rest as bytes, fed again by ``_next``."""
        if self._backlog:
            data, self._backlog = self._backlog + data, b""
        view = memoryview(data)
        self._feeding = True
        try:
            for start in range(0, len(view), FEED_SLICE):
                if len(self._queue) >= QUEUE_AHEAD:
                    self._backlog = bytes(view[start:])
                    return
                self._feed(view[start : start + FEED_SLICE])
                if self._stop_reading or self._closed:
                    return
        finally:
            self._feeding = False

    def _upgraded(self) -> None:
        """llhttp stopped after an upgrade request's head. The upgrade is ignored: the
        request is served as HTTP/1.1, its body (which llhttp skips) included, by a
        new parser that first takes a made-up head with the body's framing."""
        request, self._upgrading = self._upgrading, None
        self.parser = httptools.HttpRequestParser(self)
        if request is not None and not request.body_done:
            if request.chunked:
                framing = b"Transfer-Encoding: chunked"
            else:
                framing = b"Content-Length: %d" % (request.content_length or 0)
            self._synthetic = True
            self.parser.feed_data(b"PUT / HTTP/1.1\r\n" + framing + b"\r\n\r\n")

    def _too_large(self) -> None:
        self._refusal = HEAD_TOO_LARGE
        raise _Refused()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._in_head = True
        self._messages += 1
        self._head_size = _LINE_OVERHEAD
        self._head_partial = 0
        self._url = b""
        self._headers = []

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if self._head_size > MAX_HEAD:
            self._too_large()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._head_size += len(name) + len(value) + _HEADER_OVERHEAD
        if self._head_size > MAX_HEAD:
            self._too_large()

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._synthetic:  # the made-up head of _upgraded: the body goes on as before
            self._synthetic = False
            return
        parser = self.parser
        method = parser.get_method()
        version = parser.get_http_version()
        headers = self._headers
        hosts = 0
        upgrade = False
        content_length: int | None = None
        chunked = expects_continue = False
        host = authorization = None
        for name, value in headers:
            lower = name.lower()
            if lower in _NOTED:
                if lower == b"content-length":
                    content_length = int(value)
                elif lower == b"transfer-encoding":
                    chunked = True
                elif lower == b"host":
                    hosts += 1
                    if host is None:
                        host = value
                elif lower == b"authorization":
                    if authorization is None:
                        authorization = value
                elif lower == b"upgrade":
                    upgrade = True
                elif value.lower() == b"100-continue" and version == "1.1":
                    expects_continue = True
        url = self._url
        if hosts != 1 or version != "1.1" or method == b"CONNECT" or url == b"*":
            refusal = check_head(method, url, version, hosts)
            if refusal is not None:
                self._refusal = refusal._replace(head_only=method == b"HEAD")
                raise _Refused()
        request = Request(self, method, url, version, headers, parser.should_keep_alive())
        request.host = host
        request.authorization = authorization
        request.content_length = content_length
        request.chunked = chunked
        request.expects_continue = expects_continue
        if not request.has_body:
            request.body_done = True
        if upgrade and parser.should_upgrade():
            self._upgrading = request
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
        if request is None or (request is self._upgrading and not request.body_done):
            return  # llhttp skips an upgrade request's body: _upgraded reads it
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
        except ClientGone:
            pass  # the client left, or the server refused the rest of the request
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
        if not response.keep_alive or (self._stop_reading and not request.body_done):
            self._close_after_answer()
            return
        if not request.body_done:
            request.drop_body()
            self._set_paused(body=False)
            self.idle_since = time.monotonic()  # lingering: see expire
            return
        self._next()

    def _next(self) -> None:
        queue = self._queue
        if queue:
            item = queue.popleft()
            if isinstance(item, Refusal):
                self._answer(item)
                return
            self._begin(item)
        else:
            self.idle_since = time.monotonic()
            self._set_paused(body=False)
        if not queue:
            if self._backlog and not self._feeding:
                self._feed_sliced(b"")
            if not queue and not self._backlog:
                self._set_paused(queue=False)

    def _refuse(self, refusal: Refusal) -> None:
        """A request the server will not serve: stop reading, answer ``refusal`` in
        its turn (after the requests before it), then close."""
        if self._closed:
            return
        self._stop_reading = True
        self._backlog = b""
        if self.transport is not None and not (self._paused_body or self._paused_queue):
            self.transport.pause_reading()
        broken, self._parsing = self._parsing, None  # the request whose body went wrong
        if broken is not None:
            if broken.method == b"HEAD":
                refusal = refusal._replace(head_only=True)
            if self._active is not None and self._active[0] is broken:
                if self._active[1].started:
                    self.abort()  # too late to answer: connection_lost fails the handler
                else:
                    self._answer(refusal)
                    self._abandon(refusal.status)
                return
            if broken.discarding:  # answered already; the rest of its body was dropped
                self._close()
                return
            if self._queue and self._queue[-1] is broken:
                self._queue.pop()  # the refusal answers it
        if self._active is None and not self._queue:
            self._answer(refusal)
        else:
            self._queue.append(refusal)

    def _answer(self, refusal: Refusal) -> None:
        if self.transport is not None and not self._closed:
            self.transport.write(refusal.response())
            self._close_after_answer()

    def _close_after_answer(self) -> None:
        """Close once an answer is written. Closing with unread bytes would reset the
        connection and could lose the answer on the way, so the server shuts its
        side, then reads and drops what the client still sends until it closes (for
        at most ``linger_timeout``), as nginx's lingering close does."""
        transport = self.transport
        self._closed = self._stop_reading = True
        if transport is None:
            return
        try:
            if not transport.can_write_eof():
                raise OSError("no half-close on this transport")
            transport.write_eof()
        except OSError:  # e.g. ENOTCONN: the client is gone already
            transport.close()
            return
        transport.resume_reading()
        self._draining = True
        self.idle_since = time.monotonic()

    def _abandon(self, status: int) -> None:
        """The active request ends here: a handler reading its body gets ClientGone
        (with ``status``), one set on ``on_gone`` is told, any other is cancelled."""
        active = self._active
        if active is None:
            return
        request, response = active
        response.gone = True
        request.fail(status)
        if response.on_gone is not None:
            response.on_gone()
        elif self._task is not None and not request.reading:
            self._task.cancel()

    def _close(self) -> None:
        self._closed = True
        if self.transport is not None:
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
            elif not self._stop_reading:
                self.transport.resume_reading()

    # used by HttpServer

    def expire(self, now: float) -> None:
        """The sweeper's visit: refuse or close what overstayed its deadline. A deadline
        starts at the first visit that sees its phase, so it is kept up to one sweep
        interval late, never early; while the server paused reading, none runs."""
        if self._draining:
            if now - (self.idle_since or now) > self.server.linger_timeout:
                self.abort()
            return
        if self._closed or self._stop_reading or self.transport is None:
            return
        if self._paused_body or self._paused_queue:
            self._head_mark = self._body_mark = -1
            return
        server = self.server
        if self._in_head:
            if self._head_mark != self._messages:
                self._head_mark, self._head_since = self._messages, now
            elif now - self._head_since > server.head_timeout:
                self._refuse(timed_out("head", server.head_timeout))
            return
        request = self._parsing
        if request is not None and not request.body_done:
            if request.discarding:
                if now - (self.idle_since or now) > server.linger_timeout:
                    self._close()
            elif request.expects_continue:
                self._body_mark = -1  # the client waits for 100 Continue
            elif self._body_mark != self._reads:
                self._body_mark, self._body_since = self._reads, now
            elif now - self._body_since > server.body_timeout:
                self._refuse(timed_out("body", server.body_timeout))
            return
        since = self.idle_since
        if since is not None:
            # a new connection has head_timeout for its first request
            limit = server.keepalive_timeout if self._messages else server.head_timeout
            if now - since > limit:
                self._close()

    def shed_rank(self) -> tuple[int, float] | None:
        """Whether this connection may be closed for a new one, and how early: idle
        ones first, oldest first, then those sending a head; None when busy."""
        if self._draining:
            return (-1, self.idle_since or 0.0)
        if self._closed or self._active is not None or self._queue:
            return None
        if self._in_head:
            return (1, self._head_since if self._head_mark == self._messages else time.monotonic())
        if self._parsing is not None or self.idle_since is None:
            return None
        return (0, self.idle_since)

    def shed(self) -> None:
        if self._draining:
            self.abort()
        elif self._in_head:
            self._refuse(AT_CAPACITY)
        else:
            self._close()

    def shut(self) -> None:
        """Close now if idle; otherwise close once the current response is done."""
        if self._active is None:
            self._close()
        else:
            self._active[1].keep_alive = False
            self._queue.clear()
            self._backlog = b""


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
        head_timeout: float = HEAD_TIMEOUT,
        body_timeout: float = BODY_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.handler = handler
        self.keepalive_timeout = keepalive_timeout
        self.linger_timeout = linger_timeout
        self.head_timeout = head_timeout
        self.body_timeout = body_timeout
        self.max_connections = max_connections
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

    def shed(self) -> bool:
        """Close the connection that matters least to make room for a new one; False
        when every connection is busy with a request."""
        best: ServerConnection | None = None
        best_rank: tuple[int, float] | None = None
        for conn in self.connections:
            rank = conn.shed_rank()
            if rank is not None and (best_rank is None or rank < best_rank):
                best, best_rank = conn, rank
        if best is None:
            return False
        best.shed()
        return True

    async def _sweep(self) -> None:
        interval = (
            min(self.keepalive_timeout, self.linger_timeout, self.head_timeout, self.body_timeout)
            / 4
        )
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for conn in list(self.connections):
                conn.expire(now)

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
