"""A response an adapter rendered itself, its body whole or a stream of chunks.

A WSGI iterable without a Content-Length, or an ASGI app that sends its body in
several messages, produces its body while it is being sent: the server writes
such a ``Stream`` with chunked transfer coding, each chunk as it comes, and
closes it (WSGI ``close()``, the ASGI app told of the disconnect) however the
sending ends. Everything else is a whole body, sent with Content-Length as the
shim's other responses are.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Executor
from typing import NamedTuple

from platshim.output import log_error
from platshim.wire import _REASONS, TOKEN_CHARS, _http_date

# The shim frames the response itself: an application's own framing headers go.
FRAMING = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})
_END = object()


class BadReply(Exception):
    """The application's response cannot be sent (a bad status or header)."""


class Stream:
    """A body produced while it is sent: ``chunks`` from a sync or async iterator.

    A sync iterator is advanced in the worker threads (``next`` may block), inside
    ``run`` (the call's context, so that its output keeps the call's tag).
    ``close`` runs once, whether the body ended, failed or the client left.
    """

    def __init__(
        self,
        chunks: Iterator[bytes] | AsyncIterator[bytes],
        close: Callable[[], Awaitable[None]] | None = None,
        run: Callable[..., object] | None = None,
    ) -> None:
        self.chunks = chunks
        self._close = close
        self._run = run
        self._closed = False

    async def pieces(self, executor: Executor) -> AsyncIterator[bytes]:
        chunks = self.chunks
        if isinstance(chunks, AsyncIterator):
            async for chunk in chunks:
                yield chunk
            return
        loop = asyncio.get_running_loop()
        run = self._run
        while True:
            if run is None:
                chunk = await loop.run_in_executor(executor, next, chunks, _END)
            else:
                chunk = await loop.run_in_executor(executor, run, next, chunks, _END)
            if chunk is _END:
                return
            yield chunk  # type: ignore[misc]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._close is not None:
            await self._close()


class Reply(NamedTuple):
    """A rendered response: status, headers, and a body of bytes or a Stream."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes | Stream


def check_status(status: object) -> int:
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise BadReply(f"the status must be an integer from 100 to 599, not {status!r}")
    return status


def clean_headers(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``pairs`` without framing headers; raises BadReply for a name or value that
    would break the response (a line break, a name that is not a token)."""
    out = []
    for name, value in pairs:
        if not name or any(ch not in TOKEN_CHARS for ch in name):
            raise BadReply(f"invalid response header name {name[:80]!r}")
        if any(ch in value for ch in "\r\n\0"):
            raise BadReply(f"the value of response header {name!r} contains a line break")
        if name.lower() not in FRAMING:
            out.append((name, value))
    return out


def _head(status: int, headers: list[tuple[str, str]], keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    lines.append("Transfer-Encoding: chunked")
    lines.append(f"Date: {_http_date()}")
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


async def write_stream(
    writer: asyncio.StreamWriter,
    reply: Reply,
    stream: Stream,
    executor: Executor,
    *,
    keep_alive: bool,
    head_only: bool,
    what: str,
) -> bool:
    """Send ``reply`` whose body is ``stream``, chunk by chunk; returns whether the
    connection may be kept. A body that fails midway is cut (no last chunk, the
    connection closed), so the client sees it incomplete; the error is logged."""
    writer.write(_head(reply.status, reply.headers, keep_alive))
    if head_only:
        await stream.close()
        await writer.drain()
        return keep_alive
    try:
        async for chunk in stream.pieces(executor):
            if not isinstance(chunk, bytes | bytearray | memoryview):
                raise BadReply(f"a body chunk must be bytes, not {type(chunk).__name__}")
            if chunk:
                writer.write(b"%x\r\n%b\r\n" % (len(chunk), bytes(chunk)))
                await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        with contextlib.suppress(Exception):
            await stream.close()
        raise
    except Exception as exc:
        log_error(f"the response body of {what} failed midway ({type(exc).__name__}: {exc})", exc)
        with contextlib.suppress(Exception):
            await stream.close()
        writer.close()
        return False
    await stream.close()
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    return keep_alive
