"""A lean HTTP/1.1 server: an asyncio Protocol parsing with httptools (llhttp).

It serves one ``handler(request, response)`` coroutine per request and knows
nothing about what it serves. Its parts: ``RequestReader`` (reader.py) parses
requests off a connection, ``ServerConnection`` (connection.py) serves them in
order, ``HttpServer`` (here) listens, keeps the connection count and every
deadline. Request bodies are buffered only up to ``BODY_HIGH_WATER`` before
reading pauses, so a handler can stream them; a response is written as the
handler produces it, framed by Content-Length when the handler knows the length
and chunked otherwise (close-delimited for HTTP/1.0 clients).

What the server refuses (rules.py) is answered in its turn with a JSON body,
then the connection closes: unparsable requests, heads over ``MAX_HEAD``,
versions other than 1.0 and 1.1, a missing Host, a head not complete within
``head_timeout`` or a body that makes no progress for ``body_timeout`` (408).
At ``max_connections`` a new connection closes the oldest idle one, else the
one that has been sending its head the longest, else it is closed itself. One
sweeper task keeps every deadline: no timer per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

from plat.daemon.http.connection import Handler, ServerConnection

__all__ = ["Handler", "HttpServer", "ServerConnection"]


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

    async def accept(self, sock: socket.socket) -> None:
        """Serve a connection made in process (one end of a socket pair)."""
        await self.loop.connect_accepted_socket(lambda: ServerConnection(self), sock)

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
