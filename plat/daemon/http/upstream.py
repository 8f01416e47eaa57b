"""Keep-alive HTTP/1.1 connections to instances, pooled per instance.

An ``UpstreamConnection`` sends one request at a time and parses the answer
with httptools, handing the head and each piece of the body to a ``Sink`` as
they arrive (nothing is read whole). After a complete answer that allows it,
the connection goes back to its ``UpstreamPool``; idle connections are reused
most recently used first, and closed after ``IDLE_TIMEOUT`` or when the
instance leaves (``Upstreams.drop``).

Failures reach the sink as ``UpstreamError``; ``retryable`` marks the one case
that is safe to send again: a reused connection that the instance had closed,
lost before a single byte of the answer arrived.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, cast

import httptools

from plat.daemon.http.flow_control import FlowControl

# Below the shims' own keep-alive timeout (75 s), so plat, not the instance,
# closes idle connections, and a request seldom meets one being closed.
IDLE_TIMEOUT = 30.0
MAX_IDLE = 256  # idle connections kept per instance


class UpstreamError(Exception):
    """The instance failed to answer: refused, reset, closed early or malformed."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class Sink(Protocol):
    """Receives one answer. Called from the connection's callbacks; must not raise."""

    def head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None: ...

    def body(self, data: bytes) -> None: ...

    def flush(self) -> None:
        """The end of one read from the socket: a good moment to write out."""

    def complete(self) -> None:
        """The whole answer arrived."""

    def failed(self, error: UpstreamError) -> None: ...


class UpstreamConnection(FlowControl, asyncio.Protocol):
    """One HTTP/1.1 connection to an instance, one exchange at a time."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.sink: Sink | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self._head_only = False
        self._sent = False  # the whole request went out
        self._got_data = False
        self._head_seen = False
        self._interim = False
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._read_paused = False

    # the exchange

    def send(self, head: bytes, body: bytes | None, sink: Sink, *, head_only: bool) -> None:
        """Send a request: the head, and the whole body unless it is to be streamed
        with ``write`` and ``end_request`` (``body`` None)."""
        assert self.transport is not None and self.sink is None
        self.sink = sink
        self._head_only = head_only
        self._got_data = self._head_seen = self._interim = False
        self._reason = b""
        self._headers = []
        self._sent = body is not None
        self.transport.write(head + body if body else head)

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def end_request(self) -> None:
        self._sent = True

    def abort(self) -> None:
        """Drop the connection (and the exchange on it, without telling its sink)."""
        self.sink = None
        if not self.closed:
            self.closed = True
            self.pool.discard(self)
            if self.transport is not None:
                self.transport.abort()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed and not self._read_paused:
            self._read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed and self._read_paused:
            self._read_paused = False
            self.transport.resume_reading()

    def _finish(self, reusable: bool) -> None:
        sink = self.sink
        self.sink = None
        self.resume_reading()  # an idle connection must notice when the instance closes it
        self.pool.release(self, reusable and self._sent)
        if sink is not None:
            sink.complete()

    def _fail(self, message: str) -> None:
        sink = self.sink
        self.abort()
        if sink is not None:
            sink.failed(UpstreamError(message))

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        if sink is None:
            if not self.closed:  # bytes nobody asked for: the connection is unusable
                self.abort()
            return
        self._got_data = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.sink is sink:
                self._fail(f"malformed answer: {exc}")
            else:
                self.abort()  # junk after a complete answer (or after a HEAD answer)
        sink.flush()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        was_closed = self.closed
        self.closed = True
        if not was_closed:
            self.pool.discard(self)
        self.wake_drain()
        sink = self.sink
        if sink is None:
            return
        self.sink = None
        if self._head_seen and exc is None and self._until_close():
            sink.complete()
            return
        retryable = self.reused and not self._got_data
        what = "reset" if exc is not None else "closed"
        sink.failed(UpstreamError(f"connection {what} by the instance", retryable=retryable))

    def _until_close(self) -> bool:
        """Whether the answer's body runs until the connection closes (no framing)."""
        for name, value in self._headers:
            lower = name.lower()
            if lower == b"content-length" or (
                lower == b"transfer-encoding" and b"chunked" in value.lower()
            ):
                return False
        return True

    # httptools callbacks

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200 and status != 101:
            self._interim = True  # 100 Continue, 103 Early Hints: not forwarded
            return
        self._head_seen = True
        sink = self.sink
        if sink is None:
            return
        sink.head(status, self._reason, self._headers)
        if self._head_only and self.sink is sink:
            # The parser cannot be told that a HEAD answer has no body: it would wait
            # for Content-Length bytes. Finish here and do not reuse the connection.
            self._finish(reusable=False)

    def on_body(self, body: bytes) -> None:
        sink = self.sink
        if sink is not None:
            sink.body(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            self._reason = b""
            self._headers = []
            return
        if self.sink is not None:
            self._finish(self.parser.should_keep_alive())


Factory = Callable[[], UpstreamConnection]
Connect = Callable[[Factory], Awaitable[tuple[asyncio.BaseTransport, UpstreamConnection]]]


class UpstreamPool:
    """Keep-alive connections to one address, most recently used first."""

    def __init__(self, connect: Connect, *, address: bytes, max_idle: int = MAX_IDLE) -> None:
        self._connect = connect
        self.address = address  # what a Host header names
        self.max_idle = max_idle
        self.idle: list[UpstreamConnection] = []
        self.closed = False

    @classmethod
    def tcp(cls, host: str, port: int, *, max_idle: int = MAX_IDLE) -> UpstreamPool:
        loop = asyncio.get_running_loop()

        def connect(
            factory: Factory,
        ) -> Awaitable[tuple[asyncio.BaseTransport, UpstreamConnection]]:
            return loop.create_connection(factory, host, port)

        return cls(connect, address=f"{host}:{port}".encode(), max_idle=max_idle)

    def take(self) -> UpstreamConnection | None:
        """An idle connection, or None (then ``open`` one)."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.reused = True
                return conn
        return None

    async def open(self) -> UpstreamConnection:
        """A new connection; raises OSError when the instance refuses it."""
        _, conn = await self._connect(lambda: UpstreamConnection(self))
        return conn

    def release(self, conn: UpstreamConnection, reusable: bool) -> None:
        if reusable and not conn.closed and not self.closed and len(self.idle) < self.max_idle:
            conn.idle_since = time.monotonic()
            self.idle.append(conn)
        elif not conn.closed:
            conn.close()

    def discard(self, conn: UpstreamConnection) -> None:
        """``conn`` closed: forget it if it was idle."""
        if conn in self.idle:
            self.idle.remove(conn)

    def sweep(self, now: float, idle_timeout: float = IDLE_TIMEOUT) -> None:
        """Close connections idle for longer than ``idle_timeout``."""
        keep = []
        for conn in self.idle:
            if now - conn.idle_since > idle_timeout:
                conn.close()
            elif not conn.closed:
                keep.append(conn)
        self.idle = keep

    def close(self) -> None:
        """Close the idle connections; busy ones close when their exchange ends. Idempotent."""
        self.closed = True
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()


class Upstreams:
    """The pools of every instance, by instance id."""

    def __init__(self) -> None:
        self.pools: dict[str, UpstreamPool] = {}

    def pool(self, key: str, host: str, port: int) -> UpstreamPool:
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = UpstreamPool.tcp(host, port)
        return pool

    def drop(self, key: str) -> None:
        """The instance left: close its connections."""
        pool = self.pools.pop(key, None)
        if pool is not None:
            pool.close()

    def sweep(self, now: float) -> None:
        for pool in self.pools.values():
            pool.sweep(now)

    def close(self) -> None:
        for key in list(self.pools):
            self.drop(key)


def socketpair_connect(
    accept: Callable[[socket.socket], Awaitable[object]],
) -> Connect:
    """A ``Connect`` for an in-process server: each connection is a socket pair whose
    other end is handed to ``accept`` (e.g. ``loop.connect_accepted_socket``)."""

    async def connect(factory: Factory) -> tuple[asyncio.BaseTransport, UpstreamConnection]:
        ours, theirs = socket.socketpair()
        try:
            await accept(theirs)
            return await asyncio.get_running_loop().create_connection(factory, sock=ours)
        except BaseException:
            ours.close()
            theirs.close()
            raise

    return connect
