"""One client connection of the HTTP server: its requests served in order.

Requests on one connection are answered strictly in order: a pipelined request
waits (and reading pauses) until the one before it is answered, so pipelining
is safe (reader.py parses them). A client that disconnects while its request is
being handled cancels the handler task (a handler waiting for the body gets
ClientGone instead), unless the handler set ``response.on_gone``: then that
callback runs instead. Writes to a gone client are dropped silently. A body the
handler left unread is read and discarded (for at most ``linger_timeout``) so
that the connection can serve the next request.

What the reader refuses is answered in its turn (after the requests before it),
then the connection closes. ``expire`` is the server sweeper's visit: it keeps
the head, body, keep-alive and linger deadlines; ``shed_rank`` and ``shed`` let
the server close this connection to make room for a new one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, cast

from plat.daemon.http.flow_control import FlowControl
from plat.daemon.http.message import ClientGone, Request, Response
from plat.daemon.http.reader import SPENT_PARSER, RequestReader
from plat.daemon.http.rules import AT_CAPACITY, Refusal, timed_out

Handler = Callable[[Request, Response], Awaitable[None]]


class Host(Protocol):
    """What a connection asks of the server that accepted it (``HttpServer``)."""

    loop: asyncio.AbstractEventLoop
    connections: set[ServerConnection]
    max_connections: int
    handler: Handler
    head_timeout: float
    body_timeout: float
    keepalive_timeout: float
    linger_timeout: float

    def shed(self) -> bool:
        """Close the idlest connection to make room; False when none can go."""
        ...


log = logging.getLogger(__name__)

_TEXT_PLAIN = b"Content-Type: text/plain; charset=utf-8\r\n"


class ServerConnection(FlowControl, RequestReader):
    """One client connection: runs the handler for each request, in order."""

    def __init__(self, server: Host) -> None:
        super().__init__()
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.remote = ""
        self.idle_since: float | None = time.monotonic()
        self._active: tuple[Request, Response] | None = None
        self._task: asyncio.Task[None] | None = None
        self._draining = False  # answered and shut for writing: see _close_after_answer
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

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        self._queue.clear()
        self._backlog = b""
        if self._parsing is not None:
            self._parsing.fail()
        self.wake_drain()
        self._abandon(499)
        # No cycles left to the garbage collector (see SPENT_PARSER).
        self.parser = SPENT_PARSER
        self.transport = None

    def pause_writing(self) -> None:
        super().pause_writing()
        producer = self._active[1].producer if self._active is not None else None
        if producer is not None:
            producer.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        producer = self._active[1].producer if self._active is not None else None
        if producer is not None:
            producer.resume_reading()

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
        if self.closed:
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
        if self.closed:
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
        if self.transport is not None and not self.closed:
            self.transport.write(refusal.response())
            self._close_after_answer()

    def _close_after_answer(self) -> None:
        """Close once an answer is written. Closing with unread bytes would reset the
        connection and could lose the answer on the way, so the server shuts its
        side, then reads and drops what the client still sends until it closes (for
        at most ``linger_timeout``), as nginx's lingering close does."""
        transport = self.transport
        self.closed = self._stop_reading = True
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
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # used by Request and Response (with drain, body_buffered and body_drained)

    def write_raw(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # used by HttpServer

    def expire(self, now: float) -> None:
        """The sweeper's visit: refuse or close what overstayed its deadline. A deadline
        starts at the first visit that sees its phase, so it is kept up to one sweep
        interval late, never early; while the server paused reading, none runs."""
        if self._draining:
            if now - (self.idle_since or now) > self.server.linger_timeout:
                self.abort()
            return
        if self.closed or self._stop_reading or self.transport is None:
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
        if self.closed or self._active is not None or self._queue:
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
