"""Relaying one exchange: a request sent to an instance, its answer streamed back.

``exchange`` sends a request head (and body, whole or streamed) over a pooled
connection and waits while a ``Relay`` writes the answer to the client as the
connection parses it: head and body go straight from the parser's callbacks
into the client's transport, one write per read from the instance, with flow
control both ways. The relay knows nothing about plat's routing or auth: it
drops hop-by-hop headers, sets the call's id, and records status and bytes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import secrets
from collections.abc import Sequence
from typing import NamedTuple

from plat.daemon.http.deadlines import Deadlines
from plat.daemon.http.message import ClientGone, Request, Response
from plat.daemon.http.upstream import UpstreamConnection, UpstreamError, UpstreamPool

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
    }
)
# An answer's headers not passed on: hop-by-hop, and the call id the relay sets.
TO_CLIENT = HOP_BY_HOP | {b"x-call-id"}
_OCTET_STREAM = b"Content-Type: application/octet-stream\r\n"


def forward_headers(
    headers: Sequence[tuple[bytes, bytes]], drop: frozenset[bytes] = HOP_BY_HOP
) -> list[tuple[bytes, bytes]]:
    """``headers`` without those named in ``drop`` (lower-case, must include
    ``connection``) or listed in a Connection header, in order; repeated ones
    (Set-Cookie) stay separate."""
    out = []
    named: set[bytes] | None = None
    for name, value in headers:
        lower = name.lower()
        if lower in drop:
            if lower == b"connection":
                for token in value.split(b","):
                    token = token.strip().lower()
                    if token and token not in drop:
                        named = named or set()
                        named.add(token)
            continue
        out.append((name, value))
    if named:
        out = [(name, value) for name, value in out if name.lower() not in named]
    return out


CALL_ID_RE = re.compile(rb"[A-Za-z0-9._-]{1,128}")


class Call:
    """One call: its id, and what is learned while serving it (the relay sets
    ``status`` and ``bytes_out``)."""

    __slots__ = ("bytes_in", "bytes_out", "call_id", "cold", "id_line", "status")

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self.id_line = b"X-Call-Id: " + call_id.encode() + b"\r\n" if call_id else b""
        self.status = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.cold = 0.0


class Reply(NamedTuple):
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


def json_error(status: int, code: str, message: str, **extra: object) -> Reply:
    headers = [(b"Content-Type", b"application/json; charset=utf-8")]
    if status == 401:
        headers.append((b"WWW-Authenticate", b'Basic realm="plat"'))
    body = json.dumps({"error": code, "message": message, **extra}).encode()
    return Reply(status, headers, body)


def send_error(
    response: Response,
    call: Call,
    status: int,
    code: str,
    message: str,
    lines: list[bytes] | None = None,
    **extra: object,
) -> None:
    """Answer ``call`` with plat's JSON error body (``lines``: more header lines)."""
    reply = json_error(status, code, message, **extra)
    out = [name + b": " + value + b"\r\n" for name, value in reply.headers]
    if lines:
        out += lines
    out.append(call.id_line)
    call.status = 499 if response.gone else status
    call.bytes_out = len(reply.body)
    response.send(status, out, reply.body)


class CallIds:
    """Call ids unique to this daemon: a random prefix and a counter (no uuid4 per call),
    32 hex digits as uuid4().hex ids were."""

    def __init__(self) -> None:
        self.prefix = secrets.token_hex(8)
        self._count = itertools.count(1)

    def new(self) -> str:
        return f"{self.prefix}{next(self._count):016x}"


class Relay:
    """Streams one answer of an instance to the client (an upstream.Sink).

    ``done`` resolves when the exchange is over; ``error`` then says why it
    failed (UpstreamError, TimeoutError, ClientGone) or is None.
    """

    __slots__ = ("call", "client_left", "conn", "done", "error", "response")

    def __init__(
        self,
        response: Response,
        call: Call,
        conn: UpstreamConnection,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.response = response
        self.call = call
        self.conn = conn
        self.done: asyncio.Future[None] = loop.create_future()
        self.error: BaseException | None = None
        self.client_left = False

    def head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        response = self.response
        if self.client_left:
            self.conn.abort()
            self._end(ClientGone())
            return
        length: int | None = None
        for name, value in headers:
            if name.lower() == b"content-length":
                length = int(value)
                break
        lines = []
        date = typed = False
        for name, value in forward_headers(headers, TO_CLIENT):
            lower = name.lower()
            if lower == b"date":
                date = True
            elif lower == b"content-type":
                typed = True
            lines.append(name + b": " + value + b"\r\n")
        if not typed and length != 0 and not response.head_only and status not in (204, 304):
            lines.append(_OCTET_STREAM)  # as aiohttp's server added it
        lines.append(self.call.id_line)
        self.call.status = status
        response.start(status, reason, lines, length, date=not date)
        response.producer = self.conn

    def body(self, data: bytes) -> None:
        self.call.bytes_out += len(data)
        self.response.write(data)

    def flush(self) -> None:
        self.response.flush()

    def complete(self) -> None:
        self.response.end()
        self._end(None)

    def failed(self, error: UpstreamError) -> None:
        if self.response.started:
            self.response.abort()  # the client sees a cut answer, not a wrong one
        self._end(error)

    def client_gone(self) -> None:
        """The client left. Before the answer's head, keep waiting for it (the instance
        is still busy with the call, its slot stays taken); after, stop."""
        self.client_left = True
        if self.response.started and not self.done.done():
            self.conn.abort()
            self._end(ClientGone())

    def expire(self) -> None:
        """The function's timeout passed."""
        if self.done.done():
            return
        self.conn.abort()
        if self.response.started:
            self.response.abort()
        self._end(TimeoutError())

    def _end(self, error: BaseException | None) -> None:
        self.response.producer = None
        if not self.done.done():
            self.error = error
            self.done.set_result(None)


async def exchange(
    pool: UpstreamPool,
    request: Request,
    response: Response,
    head: bytes,
    body: bytes | None,
    call: Call,
    deadlines: Deadlines,
    deadline: float | None = None,
) -> None:
    """One exchange with the pool's instance, its answer streamed to the client.

    A whole body (bytes) goes with the head; None streams the request's body.
    Raises TimeoutError (at ``deadline``, if any, kept by ``deadlines``), UpstreamError
    or OSError (the instance failed), ClientGone. A reused connection that the
    instance had closed before answering is retried once on a new one (the
    body is in hand). While the instance works, a client that leaves does not
    end the exchange (see ``Relay.client_gone``).
    """
    loop = asyncio.get_running_loop()
    head_only = request.method == b"HEAD"
    conn = pool.take()
    for attempt in (1, 2):
        if conn is None:
            conn = await _open(pool, deadline)
        relay = Relay(response, call, conn, loop)
        response.on_gone = relay.client_gone
        slot = deadlines.add(relay, deadline) if deadline is not None else 0
        try:
            conn.send(head, body, relay, head_only=head_only)
            if body is None:
                await _pump(request, conn, relay, deadline)
            await relay.done
        finally:
            response.on_gone = None
            if slot:
                deadlines.remove(relay, slot)
        error = relay.error
        if error is None:
            return
        if (
            attempt == 1
            and isinstance(error, UpstreamError)
            and error.retryable
            and body is not None
            and not response.started
        ):
            conn = None
            continue
        raise error
    raise AssertionError("unreachable")


async def _open(pool: UpstreamPool, deadline: float | None) -> UpstreamConnection:
    async with asyncio.timeout_at(deadline):
        return await pool.open()


async def _pump(
    request: Request, conn: UpstreamConnection, relay: Relay, deadline: float | None
) -> None:
    """Stream the request's body upstream; stops early when the answer is already over."""
    try:
        async with asyncio.timeout_at(deadline):
            while not relay.done.done():
                chunk = await request.read_chunk()
                if not chunk:
                    conn.end_request()
                    return
                conn.write(chunk)
                await conn.drain()
    except BaseException:
        conn.abort()
        raise
