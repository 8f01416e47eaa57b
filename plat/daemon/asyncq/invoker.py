"""One attempt of a queued call, made through the gateway in process.

The queue calls the function the way a client would, over a socket pair into the
gateway's own HTTP server: admission, scaling, auth, metrics, tracing and the
journal treat it as any call, with no TCP and no second code path to keep in step.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from plat.daemon.http.upstream import UpstreamError, UpstreamPool, socketpair_connect

MAX_KEPT_BODY = 1024 * 1024  # of an answer, for the callback; the rest is counted


@dataclass
class Outcome:
    """What one attempt got: a status (0 when there was no answer) and its answer,
    or the error that stopped it."""

    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    truncated: int = 0
    error: str | None = None


class _Collect:
    """An upstream Sink that keeps the answer (bounded)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.outcome = Outcome()
        self.parts: list[bytes] = []
        self.size = 0
        self.done: asyncio.Future[None] = loop.create_future()

    def head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.outcome.status = status
        self.outcome.headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]

    def body(self, data: bytes) -> None:
        room = MAX_KEPT_BODY - self.size
        if room > 0:
            self.parts.append(data[:room])
        self.size += len(data)

    def flush(self) -> None:
        pass

    def complete(self) -> None:
        self.outcome.body = b"".join(self.parts)
        self.outcome.truncated = max(0, self.size - MAX_KEPT_BODY)
        if not self.done.done():
            self.done.set_result(None)

    def failed(self, error: UpstreamError) -> None:
        self.outcome.error = str(error) or type(error).__name__
        if not self.done.done():
            self.done.set_result(None)


class Invoker:
    """Makes attempts through ``accept``, which serves one end of a socket pair
    (the gateway's HTTP server)."""

    def __init__(self, accept: Callable[[socket.socket], Awaitable[object]]) -> None:
        self.pool = UpstreamPool(socketpair_connect(accept), address=b"localhost")

    async def attempt(self, head: bytes, body: bytes, timeout: float) -> Outcome:
        """Send ``head`` (a complete request head, CRLF CRLF included) and ``body``;
        the answer, or an Outcome naming the error (a timeout included)."""
        loop = asyncio.get_running_loop()
        conn = self.pool.take()
        try:
            async with asyncio.timeout(timeout):
                for attempt in (1, 2):
                    if conn is None:
                        conn = await self.pool.open()
                    sink = _Collect(loop)
                    conn.send(head, body, sink, head_only=False)
                    await sink.done
                    if sink.outcome.error is None or attempt == 2 or sink.outcome.status:
                        return sink.outcome
                    conn = None  # a kept-alive connection closed under us: once more
        except TimeoutError:
            if conn is not None:
                conn.abort()
            return Outcome(error=f"no answer within {timeout:g} s")
        except (UpstreamError, OSError) as exc:
            return Outcome(error=str(exc) or type(exc).__name__)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.pool.close()
