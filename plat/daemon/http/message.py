"""One HTTP/1.1 request and its answer, as a handler of plat.daemon.http.server sees them.

A ``Request`` is the parsed head and a body that arrives as the client sends it
(``read_chunk``, or ``read`` for all of it up to a limit). A ``Response`` writes
the head and body to the connection in order; body bytes are buffered until
``flush`` (or ``end``) so that a head and the first body bytes leave in one
write. Both talk to their connection through ``Connection`` only.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Protocol

import httptools

BODY_HIGH_WATER = 256 * 1024
BODY_LOW_WATER = 64 * 1024

REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}
_NO_BODY_STATUSES = frozenset({204, 304})
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Connection(Protocol):
    """What requests and responses need of the connection they arrived on."""

    loop: asyncio.AbstractEventLoop
    remote: str
    write_paused: bool

    def write_raw(self, data: bytes) -> None: ...

    def abort(self) -> None: ...

    async def drain(self) -> None: ...

    def body_buffered(self) -> None:
        """More request body is buffered than BODY_HIGH_WATER: stop reading."""

    def body_drained(self) -> None:
        """The handler took the buffered body below BODY_LOW_WATER: read again."""


def reason(status: int) -> bytes:
    return REASONS.get(status, b"Unknown")


class _DateCache:
    """The ``Date:`` header line, formatted at most once a second."""

    __slots__ = ("line", "second")

    def __init__(self) -> None:
        self.second = -1
        self.line = b""

    def get(self) -> bytes:
        now = time.time()
        second = int(now)
        if second != self.second:
            self.second = second
            self.line = b"Date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
        return self.line


date_line = _DateCache().get


class ClientGone(Exception):
    """The request ended before its handler did: the client closed its connection
    (``status`` 499), or the server gave up on the rest of the request and answered
    it itself (``status`` 400 or 408, say)."""

    def __init__(self, status: int = 499) -> None:
        super().__init__(status)
        self.status = status


class BodyTooLarge(Exception):
    """The request body is longer than the reader's limit."""


class Request:
    """One request's head, and its body as the client sends it.

    ``headers`` are the raw ``(name, value)`` pairs in order. ``host`` and
    ``authorization`` hold the first value of those headers (``None`` when
    absent); ``content_length`` is ``None`` without that header. ``has_body``
    says whether a body follows (a Content-Length above 0, or chunked).
    ``expects_continue``: the client waits for ``100 Continue`` before sending
    the body; the first read sends it.
    """

    __slots__ = (
        "_buffered",
        "_chunks",
        "_conn",
        "_failed",
        "_waiter",
        "authorization",
        "body_done",
        "chunked",
        "content_length",
        "discarding",
        "expects_continue",
        "headers",
        "host",
        "keep_alive",
        "method",
        "path",
        "query",
        "target",
        "version",
    )

    def __init__(
        self,
        conn: Connection,
        method: bytes,
        target: bytes,
        version: str,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
    ) -> None:
        self._conn = conn
        self.method = method
        self.target = target
        if target[:1] == b"/":
            path, _, query = target.partition(b"?")
        else:
            try:
                url = httptools.parse_url(target)
                path, query = url.path or b"/", url.query or b""
            except httptools.HttpParserInvalidURLError:
                path, query = target, b""
        self.path: bytes = path
        self.query: bytes = query
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.host: bytes | None = None
        self.authorization: bytes | None = None
        self.content_length: int | None = None
        self.chunked = False
        self.expects_continue = False  # Expect: 100-continue not answered yet
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self.discarding = False
        self._failed = 0  # the status it failed with
        self.body_done = False

    @property
    def remote(self) -> str:
        """The client's IP address."""
        return self._conn.remote

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    def header(self, lower_name: bytes) -> bytes | None:
        """The first value of a header, by its lower-case name."""
        for name, value in self.headers:
            if name.lower() == lower_name:
                return value
        return None

    async def read_chunk(self) -> bytes:
        """The next piece of the body; ``b""`` at its end. Raises ClientGone."""
        while not self._chunks:
            if self.body_done:
                return b""
            if self._failed:
                raise ClientGone(self._failed)
            if self.expects_continue:
                self.expects_continue = False
                self._conn.write_raw(_CONTINUE)
            self._waiter = self._conn.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = self._chunks.popleft()
        self._buffered -= len(data)
        if self._buffered < BODY_LOW_WATER:
            self._conn.body_drained()
        return data

    async def read(self, limit: int) -> bytes:
        """The whole body; raises BodyTooLarge past ``limit`` bytes, ClientGone."""
        parts: list[bytes] = []
        size = 0
        while chunk := await self.read_chunk():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge()
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    @property
    def buffered(self) -> int:
        """Body bytes received and not read yet."""
        return self._buffered

    # called by the connection

    def feed_body(self, data: bytes) -> None:
        if self.discarding:
            return
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > BODY_HIGH_WATER:
            self._conn.body_buffered()
        self._wake()

    def end_body(self) -> None:
        self.body_done = True
        self._wake()

    def fail(self, status: int = 499) -> None:
        """The body will not come: a reader waiting for it gets ClientGone(status)."""
        if not self._failed:
            self._failed = status
        self._wake()

    @property
    def reading(self) -> bool:
        """A reader is waiting for the body."""
        return self._waiter is not None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def drop_body(self) -> None:
        """The handler is done: what is left of the body is read and thrown away."""
        self.discarding = True
        self._chunks.clear()
        self._buffered = 0


class Producer(Protocol):
    """What feeds a response and can be paused when the client reads slowly."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class Response:
    """The answer to one request, written to its connection in order.

    ``start`` writes the status line and headers (``lines`` are complete
    ``b"Name: value\\r\\n"`` lines; framing, Connection and, with ``date``, a
    Date header are added here). ``write`` buffers body bytes and ``flush``
    sends what is buffered; ``end`` finishes the response. After the client
    went away (``gone``) every write is dropped.
    """

    __slots__ = (
        "_chunked",
        "_conn",
        "_out",
        "_producer",
        "_request",
        "finished",
        "gone",
        "head_only",
        "keep_alive",
        "on_gone",
        "started",
    )

    def __init__(self, conn: Connection, request: Request) -> None:
        self._conn = conn
        self._request = request
        self._out: list[bytes] = []
        self._chunked = False
        self.head_only = request.method == b"HEAD"
        self.keep_alive = request.keep_alive
        self.started = False
        self.finished = False
        self.gone = False
        self.on_gone: Callable[[], None] | None = None
        self._producer: Producer | None = None

    def start(
        self,
        status: int,
        reason_phrase: bytes,
        lines: list[bytes],
        length: int | None,
        *,
        date: bool = True,
    ) -> None:
        """Write the head. ``length`` None means unknown: chunked (HTTP/1.1) or until close."""
        request = self._request
        self.started = True
        http10 = request.version == "1.0"
        out = self._out
        out.append(b"HTTP/1.0 " if http10 else b"HTTP/1.1 ")
        out.append(b"%d %s\r\n" % (status, reason_phrase))
        out.extend(lines)
        if date:
            out.append(date_line())
        bodyless = status in _NO_BODY_STATUSES or status < 200
        if bodyless:
            self.head_only = True
        elif length is not None:
            out.append(b"Content-Length: %d\r\n" % length)
        elif not self.head_only:
            if http10:
                self.keep_alive = False
            else:
                self._chunked = True
                out.append(b"Transfer-Encoding: chunked\r\n")
        if self.keep_alive and request.expects_continue and not request.body_done:
            # 100 Continue was never sent: the client may or may not send the body.
            self.keep_alive = False
        if not self.keep_alive:
            out.append(b"Connection: close\r\n\r\n")
        elif http10:
            out.append(b"Connection: keep-alive\r\n\r\n")
        else:
            out.append(b"\r\n")

    def write(self, data: bytes) -> None:
        if self.head_only or not data:
            return
        if self._chunked:
            self._out.append(b"%x\r\n" % len(data))
            self._out.append(data)
            self._out.append(b"\r\n")
        else:
            self._out.append(data)

    def flush(self) -> None:
        out = self._out
        if out:
            if not self.gone:
                self._conn.write_raw(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def end(self) -> None:
        if self.finished:
            return
        if self._chunked:
            self._out.append(b"0\r\n\r\n")
        self.finished = True
        self.flush()

    def send(self, status: int, lines: list[bytes], body: bytes) -> None:
        """A whole response with a known body."""
        self.start(status, reason(status), lines, len(body))
        self.write(body)
        self.end()

    def abort(self) -> None:
        """Cut the connection: the response cannot be completed."""
        self.finished = True
        self._out.clear()
        self._conn.abort()

    async def drain(self) -> None:
        """Wait until the client has taken most of what was written."""
        await self._conn.drain()

    @property
    def producer(self) -> Producer | None:
        """What feeds this response: paused while the client is slow to read."""
        return self._producer

    @producer.setter
    def producer(self, producer: Producer | None) -> None:
        previous, self._producer = self._producer, producer
        if self._conn.write_paused:
            if previous is not None:
                previous.resume_reading()
            if producer is not None:
                producer.pause_reading()
