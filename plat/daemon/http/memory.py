"""A request and its answer held in memory: a handler of plat.daemon.http.server
called in process, with no connection and no HTTP on the wire.

The queue's attempts are calls through the gateway (auth, admission, metrics,
journal, tracing, timeouts: one code path for every call), but writing a request
head onto a socket pair into the gateway's own server, parsing it there, then
serialising the answer to parse it again on the other end cost an async call
about twice the CPU of a synchronous one. ``memory_request`` builds the
``Request`` the server's parser would have built; ``MemoryResponse`` is a
``Response`` that keeps what the handler answers (status, header lines as they
would have been sent, and the body up to a limit) instead of writing it out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from plat.daemon.http.message import (
    _NO_BODY_STATUSES,
    Request,
    Response,
    date_line,
)


class MemoryConnection:
    """The ``Connection`` of an in-memory exchange: nothing to write to or pause.

    ``remote`` is what a socket pair's peer name gave the server: no address."""

    __slots__ = ("loop", "remote", "write_paused")

    def __init__(self, loop: asyncio.AbstractEventLoop, remote: str = "") -> None:
        self.loop = loop
        self.remote = remote
        self.write_paused = False

    def write_raw(self, data: bytes) -> None:
        pass  # only ``100 Continue``, which an in-memory request never waits for

    def abort(self) -> None:
        pass

    async def drain(self) -> None:
        pass

    def body_buffered(self) -> None:
        pass

    def body_drained(self) -> None:
        pass


def memory_request(
    conn: MemoryConnection,
    method: bytes,
    target: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    body: bytes,
) -> Request:
    """A ``Request`` as the server's reader would have made of ``method target
    HTTP/1.1``, ``headers`` and a ``body`` sent whole with a Content-Length
    (``headers`` should not carry framing or Host: those are added here)."""
    lines = [(b"Host", b"localhost"), *headers, (b"Content-Length", b"%d" % len(body))]
    request = Request(conn, method, target, "1.1", lines, True)
    request.host = b"localhost"
    for name, value in headers:
        if name.lower() == b"authorization":
            request.authorization = value
            break
    request.content_length = len(body)
    if body:
        request.feed_body(body)
    request.end_body()
    return request


class MemoryResponse(Response):
    """Keeps the answer: ``status`` (0 until the head), ``headers`` as the client
    would have received them, the first ``limit`` bytes of the body in ``body``
    and how many more came in ``truncated``. ``cut`` is true when the handler
    aborted the answer (the instance failed in the middle of it)."""

    __slots__ = ("_parts", "_size", "cut", "headers", "limit", "status")

    def __init__(self, conn: MemoryConnection, request: Request, limit: int) -> None:
        super().__init__(conn, request)
        self.limit = limit
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self._parts: list[bytes] = []
        self._size = 0
        self.cut = False

    def start(
        self,
        status: int,
        reason_phrase: bytes,
        lines: list[bytes],
        length: int | None,
        *,
        date: bool = True,
    ) -> None:
        self.started = True
        self.status = status
        lines = [*lines, date_line()] if date else list(lines)
        if status in _NO_BODY_STATUSES or status < 200:
            self.head_only = True
        elif length is not None:
            lines.append(b"Content-Length: %d\r\n" % length)
        elif not self.head_only:
            lines.append(b"Transfer-Encoding: chunked\r\n")
        headers = self.headers
        for line in lines:
            name, _, value = line.partition(b":")
            if name:
                headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))

    def write(self, data: bytes) -> None:
        if self.head_only or not data:
            return
        room = self.limit - self._size
        if room > 0:
            self._parts.append(data if len(data) <= room else data[:room])
        self._size += len(data)

    def flush(self) -> None:
        pass

    def end(self) -> None:
        self.finished = True

    def abort(self) -> None:
        self.finished = self.cut = True

    def abandon(self) -> None:
        """The caller stopped waiting (as a client that hangs up): what the server
        does for a connection lost mid-request, bar cancelling the handler, which is
        the caller's to do when ``on_gone`` is not set."""
        self.gone = True
        self._request.fail(499)
        if self.on_gone is not None:
            self.on_gone()

    @property
    def body(self) -> bytes:
        parts = self._parts
        return parts[0] if len(parts) == 1 else b"".join(parts)

    @property
    def truncated(self) -> int:
        return max(0, self._size - self.limit)
