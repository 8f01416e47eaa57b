"""plat.daemon.http.memory: an in-memory request and response, through a real
exchange (plat.daemon.http.relay) with a scripted server on loopback.

The queue's attempts are made with these (plat.daemon.asyncq.invoker); what the
function then sees runs end to end in tests/daemon/asyncq/test_door.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from plat.daemon.http.deadlines import Deadlines
from plat.daemon.http.memory import MemoryConnection, MemoryResponse, memory_request
from plat.daemon.http.message import ClientGone, Request
from plat.daemon.http.relay import Call, exchange, send_error
from plat.daemon.http.upstream import UpstreamError, UpstreamPool
from tests.daemon.http.scripted import Answer, Asked, ScriptedServer

BIG = 300 * 1024  # past the gateway's SMALL_BODY: a body it streams


class Instance(ScriptedServer):
    def answer(self, asked: Asked) -> Answer:
        path = asked.path
        if path == b"/ok":
            return Answer(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Answer: 1\r\n"
                b"Content-Length: 2\r\n\r\nok"
            )
        if path == b"/chunked":
            return Answer(
                b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            )
        if path.startswith(b"/big/"):
            n = int(path[5:])
            return Answer(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n + b"x" * n)
        if path == b"/cut":
            return Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", hang_up=True)
        if path == b"/slow":
            return Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow", delay=0.3)
        if path == b"/echo":
            body = b"%d %d" % (len(asked.body), sum(asked.body) % 251)
            return Answer(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        return Answer(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")


@pytest_asyncio.fixture
async def instance() -> AsyncIterator[tuple[Instance, UpstreamPool]]:
    server = Instance()
    port = await server.start()
    pool = UpstreamPool.tcp("127.0.0.1", port)
    yield server, pool
    pool.close()
    await server.close()


def pair(
    path: bytes = b"/ok", body: bytes = b"", *, limit: int = 1024, method: bytes = b"POST"
) -> tuple[Request, MemoryResponse]:
    conn = MemoryConnection(asyncio.get_running_loop())
    headers = [(b"Content-Type", b"text/plain"), (b"Authorization", b"Basic eA==")]
    request = memory_request(conn, method, b"/function/fn" + path + b"?q=1", headers, body)
    return request, MemoryResponse(conn, request, limit)


async def relay(
    pool: UpstreamPool, request: Request, response: MemoryResponse, path: bytes
) -> Call:
    """What the gateway does for a call, in short: a head, the body whole or
    streamed (None), the answer relayed to ``response``."""
    call = Call("id-1")
    length = request.content_length or 0
    body = None if length > BIG // 2 else await request.read(length)
    head = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (path, length)
    deadlines = Deadlines()
    try:
        await exchange(pool, request, response, head, body, call, deadlines, None)
    finally:
        deadlines.close()
    return call


async def test_the_request_is_what_the_server_would_have_parsed() -> None:
    request, response = pair(body=b"hello")
    assert (request.method, request.path, request.query) == (b"POST", b"/function/fn/ok", b"q=1")
    assert request.target == b"/function/fn/ok?q=1"
    assert (request.host, request.authorization) == (b"localhost", b"Basic eA==")
    assert (request.content_length, request.has_body, request.chunked) == (5, True, False)
    assert request.keep_alive and request.remote == ""
    assert request.header(b"content-type") == b"text/plain"
    assert request.header(b"content-length") == b"5"
    assert await request.read(5) == b"hello"
    assert await request.read_chunk() == b""
    assert not response.started and not response.head_only and response.status == 0


async def test_an_empty_body() -> None:
    request, _ = pair()
    assert request.content_length == 0 and not request.has_body
    assert await request.read(0) == b""


async def test_an_answer_is_kept_with_its_headers_as_sent(
    instance: tuple[Instance, UpstreamPool],
) -> None:
    _, pool = instance
    request, response = pair()
    call = await relay(pool, request, response, b"/ok")
    assert response.finished and not response.cut and call.status == 200
    assert response.status == 200 and response.body == b"ok" and response.truncated == 0
    names = [name for name, _ in response.headers]
    assert names == ["Content-Type", "X-Answer", "X-Call-Id", "Date", "Content-Length"]
    assert ("X-Call-Id", "id-1") in response.headers and ("Content-Length", "2") in response.headers


async def test_a_chunked_answer(instance: tuple[Instance, UpstreamPool]) -> None:
    _, pool = instance
    request, response = pair()
    await relay(pool, request, response, b"/chunked")
    assert response.status == 201 and response.body == b"abc"
    assert ("Transfer-Encoding", "chunked") in response.headers


async def test_an_answer_past_the_limit_is_counted_not_kept(
    instance: tuple[Instance, UpstreamPool],
) -> None:
    _, pool = instance
    request, response = pair(limit=1000)
    call = await relay(pool, request, response, b"/big/200000")
    assert response.body == b"x" * 1000 and response.truncated == 199_000
    assert call.bytes_out == 200_000 and response.finished


async def test_an_answer_cut_by_the_instance(instance: tuple[Instance, UpstreamPool]) -> None:
    _, pool = instance
    request, response = pair()
    with pytest.raises(UpstreamError):
        await relay(pool, request, response, b"/cut")
    assert response.status == 200 and response.cut and response.body == b"abc"


async def test_a_large_body_is_streamed_whole(instance: tuple[Instance, UpstreamPool]) -> None:
    server, pool = instance
    body = bytes(range(256)) * (BIG // 256)
    request, response = pair(body=body)
    await relay(pool, request, response, b"/echo")
    assert response.body == b"%d %d" % (len(body), sum(body) % 251)
    assert b"Content-Length: %d" % BIG in server.requests[-1]


async def test_an_error_answer(instance: tuple[Instance, UpstreamPool]) -> None:
    _, response = pair()
    call = Call("id-2")
    send_error(response, call, 429, "busy", "too many", [b"Retry-After: 1\r\n"])
    assert response.status == 429 and call.status == 429 and response.finished
    assert ("Retry-After", "1") in response.headers and ("X-Call-Id", "id-2") in response.headers
    assert b'"error": "busy"' in response.body


async def test_a_head_answer_has_no_body() -> None:
    _, response = pair(method=b"HEAD")
    response.send(200, [], b"ignored")
    assert (
        response.head_only and response.body == b"" and ("Content-Length", "7") in response.headers
    )


async def test_abandoned_before_the_answer_the_exchange_ends_with_it(
    instance: tuple[Instance, UpstreamPool],
) -> None:
    """As a client that hangs up while the instance works: the exchange waits for
    the answer's head (the instance is busy until then), then stops."""
    _, pool = instance
    request, response = pair()
    started = time.monotonic()
    task = asyncio.create_task(relay(pool, request, response, b"/slow"))
    await asyncio.sleep(0.05)
    assert response.on_gone is not None
    response.abandon()
    assert not task.done()
    with pytest.raises(ClientGone):
        await task
    assert time.monotonic() - started >= 0.25
    assert response.gone and not response.started and response.status == 0
