"""plat.daemon.http.message: how a Response frames itself and a Request reads its body,
seen on the wire through a real server and a bare client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from email.utils import parsedate_to_datetime

import pytest

from plat.daemon.http.message import (
    BodyTooLarge,
    Request,
    Response,
    date_line,
    reason,
)
from plat.daemon.http.server import HttpServer
from tests.daemon.http.raw import Raw

Script = Callable[[Request, Response], Awaitable[None]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Script], Awaitable[HttpServer]]]:
    servers: list[HttpServer] = []

    async def start(script: Script) -> HttpServer:
        server = HttpServer(script)
        await server.start("127.0.0.1", 0)
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close(grace=1)


async def answer(
    server: HttpServer, request: bytes, *, head_only: bool = False
) -> tuple[int, dict[str, str], bytes]:
    client = await Raw.open(server)
    await client.send(request)
    try:
        return await client.answer(head_only=head_only)
    finally:
        await client.close()


def test_reasons_and_the_date_line() -> None:
    assert reason(200) == b"OK"
    assert reason(599) == b"Unknown"
    line = date_line()
    assert line.startswith(b"Date: ") and line.endswith(b" GMT\r\n")
    when = parsedate_to_datetime(line[6:-2].decode())
    assert abs(when.timestamp() - time.time()) < 2
    assert date_line().startswith(b"Date: ")


@pytest.mark.parametrize("status", [204, 304])
async def test_bodyless_statuses_send_no_length_and_no_body(
    serve: Callable[[Script], Awaitable[HttpServer]], status: int
) -> None:
    async def script(request: Request, response: Response) -> None:
        response.start(status, reason(status), [b"X-A: 1\r\n"], 10)
        response.write(b"never sent")
        response.end()

    server = await serve(script)
    client = await Raw.open(server)
    for _ in range(2):  # and the connection stays usable
        await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        got, headers, body = await client.answer()
        assert (got, body, headers["x-a"]) == (status, b"", "1")
        assert "content-length" not in headers and "transfer-encoding" not in headers
    await client.close()


async def test_date_is_added_unless_the_handler_has_one(
    serve: Callable[[Script], Awaitable[HttpServer]],
) -> None:
    async def script(request: Request, response: Response) -> None:
        if request.path == b"/own":
            response.start(200, b"OK", [b"Date: yesterday\r\n"], 0, date=False)
            response.end()
        else:
            response.send(200, [], b"")

    server = await serve(script)
    _, headers, _ = await answer(server, b"GET /own HTTP/1.1\r\nHost: x\r\n\r\n")
    assert headers["date"] == "yesterday"
    _, headers, _ = await answer(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert headers["date"].endswith("GMT")


async def test_chunked_answer_with_empty_writes_skipped(
    serve: Callable[[Script], Awaitable[HttpServer]],
) -> None:
    async def script(request: Request, response: Response) -> None:
        response.start(200, b"OK", [], None)
        for piece in (b"a", b"", b"bc"):
            response.write(piece)
        response.end()
        response.end()  # twice is harmless

    server = await serve(script)
    status, headers, body = await answer(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, headers["transfer-encoding"], body) == (200, "chunked", b"abc")


async def test_read_past_the_limit_raises_and_within_returns_the_body(
    serve: Callable[[Script], Awaitable[HttpServer]],
) -> None:
    async def script(request: Request, response: Response) -> None:
        try:
            body = await request.read(10)
        except BodyTooLarge:
            response.send(413, [], b"too large")
            return
        response.send(200, [], body)

    server = await serve(script)
    ok = await answer(server, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789")
    assert (ok[0], ok[2]) == (200, b"0123456789")
    big = await answer(
        server, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n0123456789X"
    )
    assert (big[0], big[2]) == (413, b"too large")


async def test_request_fields(serve: Callable[[Script], Awaitable[HttpServer]]) -> None:
    seen: list[Request] = []

    async def script(request: Request, response: Response) -> None:
        seen.append(request)
        await request.read(100)
        response.send(200, [], b"")

    server = await serve(script)
    await answer(
        server,
        b"PUT /p/q?x=1 HTTP/1.1\r\nHost: h:1\r\n"
        b"Authorization: Basic a\r\nAuthorization: Basic b\r\n"
        b"X-Call-Id: c1\r\nContent-Length: 3\r\n\r\nabc",
    )
    request = seen[0]
    assert (request.method, request.path, request.query) == (b"PUT", b"/p/q", b"x=1")
    assert (request.host, request.authorization) == (b"h:1", b"Basic a")  # the first one
    assert (request.content_length, request.chunked, request.has_body) == (3, False, True)
    assert request.header(b"x-call-id") == b"c1"
    assert request.header(b"x-missing") is None
    assert request.remote == "127.0.0.1"
    assert request.body_done and request.buffered == 0


async def test_abort_cuts_the_connection(serve: Callable[[Script], Awaitable[HttpServer]]) -> None:
    async def script(request: Request, response: Response) -> None:
        response.start(200, b"OK", [], 100)
        response.write(b"partial")
        response.flush()
        await asyncio.sleep(0.05)
        response.abort()

    server = await serve(script)
    client = await Raw.open(server)
    await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
        await client.answer()
    await client.close()
