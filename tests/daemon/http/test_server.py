"""plat.daemon.http.server: the HTTP/1.1 server, driven by real clients over loopback."""

from __future__ import annotations

import asyncio
import gc
import http.client
import json
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable

import pytest
import uvloop

from plat.daemon.http.message import BODY_HIGH_WATER, ClientGone, Request, Response
from plat.daemon.http.server import HttpServer
from tests.daemon.http.raw import Raw

JSON = b"Content-Type: application/json\r\n"


class Handlers:
    """Test handlers by path; records what happened for the assertions."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.gone = asyncio.Event()
        self.max_buffered = 0

    async def __call__(self, request: Request, response: Response) -> None:
        route = getattr(self, "h_" + request.path.decode().strip("/").split("/")[0], self.h_echo)
        await route(request, response)

    async def h_echo(self, request: Request, response: Response) -> None:
        body = await request.read(64 * 1024 * 1024)
        payload = {
            "method": request.method.decode(),
            "target": request.target.decode(),
            "path": request.path.decode(),
            "query": request.query.decode(),
            "version": request.version,
            "headers": [[n.decode(), v.decode()] for n, v in request.headers],
            "length": len(body),
            "body": body[:64].decode(errors="replace"),
            "remote": request.remote,
        }
        response.send(200, [JSON], json.dumps(payload).encode())

    async def h_slow(self, request: Request, response: Response) -> None:
        await asyncio.sleep(float(request.query.decode() or "0.2"))
        self.events.append(f"slow {request.target.decode()}")
        response.send(200, [], request.target)

    async def h_fast(self, request: Request, response: Response) -> None:
        self.events.append(f"fast {request.target.decode()}")
        response.send(200, [], request.target)

    async def h_noread(self, request: Request, response: Response) -> None:
        response.send(201, [], b"ignored your body")

    async def h_stream(self, request: Request, response: Response) -> None:
        parts = int(request.query.decode() or "3")
        response.start(200, b"OK", [], None)
        for i in range(parts):
            response.write(b"part%d;" % i)
            response.flush()
            await response.drain()
            await asyncio.sleep(0)
        response.end()

    async def h_big(self, request: Request, response: Response) -> None:
        size = int(request.query.decode())
        block = b"x" * 65536
        response.start(200, b"OK", [], size)
        sent = 0
        while sent < size:
            piece = block[: size - sent]
            response.write(piece)
            response.flush()
            sent += len(piece)
            await response.drain()
        response.end()

    async def h_hang(self, request: Request, response: Response) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.events.append("cancelled")
            self.gone.set()
            raise

    async def h_ongone(self, request: Request, response: Response) -> None:
        done = asyncio.get_running_loop().create_future()

        def left() -> None:
            self.events.append("on_gone")
            done.set_result(None)

        response.on_gone = left
        await done
        await asyncio.sleep(0.05)  # still running: not cancelled
        self.events.append("finished")
        response.send(200, [], b"nobody reads this")
        self.gone.set()

    async def h_slowread(self, request: Request, response: Response) -> None:
        total = 0
        while chunk := await request.read_chunk():
            total += len(chunk)
            self.max_buffered = max(self.max_buffered, request.buffered)
            await asyncio.sleep(0.002)
        response.send(200, [], str(total).encode())

    async def h_readgone(self, request: Request, response: Response) -> None:
        response.on_gone = lambda: None
        try:
            await request.read(1 << 30)
        except ClientGone:
            self.events.append("ClientGone")
            self.gone.set()

    async def h_boom(self, request: Request, response: Response) -> None:
        raise RuntimeError("a bug in a handler")

    async def h_silent(self, request: Request, response: Response) -> None:
        return None


@pytest.fixture
async def served() -> AsyncIterator[tuple[HttpServer, Handlers]]:
    handlers = Handlers()
    server = HttpServer(handlers, keepalive_timeout=0.5, linger_timeout=0.5)
    await server.start("127.0.0.1", 0)
    yield server, handlers
    await server.close(grace=1.0)


async def in_thread(fn: Callable[[], object]) -> object:
    return await asyncio.to_thread(fn)


# keep-alive, pipelining, order


async def test_keep_alive_many_requests_on_one_connection(
    served: tuple[HttpServer, Handlers],
) -> None:
    server, _ = served

    def run() -> list[tuple[int, dict[str, object]]]:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        out = []
        for i in range(5):
            conn.request("POST", f"/echo/{i}?q={i}", body=b"b" * i, headers={"X-I": str(i)})
            resp = conn.getresponse()
            out.append((resp.status, json.loads(resp.read())))
            assert resp.getheader("Date")
        sock = conn.sock
        conn.close()
        assert sock is not None
        return out

    answers = await in_thread(run)
    assert isinstance(answers, list)
    for i, (status, body) in enumerate(answers):
        assert status == 200
        assert body["path"] == f"/echo/{i}"
        assert body["query"] == f"q={i}"
        assert body["length"] == i
        assert ["X-I", str(i)] in body["headers"]
    assert len(server.connections) <= 1


async def test_pipelined_requests_are_answered_in_order(
    served: tuple[HttpServer, Handlers],
) -> None:
    server, handlers = served
    client = await Raw.open(server)
    await client.send(
        b"GET /slow/1?0.2 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /echo/2 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        b"GET /fast/3 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    first = await client.answer()
    second = await client.answer()
    third = await client.answer()
    assert first[2] == b"/slow/1?0.2"
    assert json.loads(second[2])["body"] == "hello"
    assert third[2] == b"/fast/3"
    # The third handler only ran once the first had answered.
    assert handlers.events == ["slow /slow/1?0.2", "fast /fast/3"]
    await client.close()


async def test_connection_close_is_honoured(served: tuple[HttpServer, Handlers]) -> None:
    server, _ = served
    client = await Raw.open(server)
    await client.send(b"GET /fast HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    status, headers, _ = await client.answer()
    assert status == 200
    assert headers["connection"] == "close"
    assert await client.closed()
    await client.close()


async def test_http10_keeps_alive_only_when_asked(served: tuple[HttpServer, Handlers]) -> None:
    server, _ = served
    client = await Raw.open(server)
    await client.send(b"GET /fast/a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    status, headers, body = await client.answer()
    assert (status, body, headers["connection"]) == (200, b"/fast/a", "keep-alive")
    await client.send(b"GET /fast/b HTTP/1.0\r\n\r\n")
    status, _, body = await client.answer()
    assert (status, body) == (200, b"/fast/b")
    assert await client.closed()
    await client.close()


async def test_unknown_length_is_chunked_for_11_and_until_close_for_10(
    served: tuple[HttpServer, Handlers],
) -> None:
    server, _ = served
    client = await Raw.open(server)
    await client.send(b"GET /stream?3 HTTP/1.1\r\nHost: x\r\n\r\n")
    _, headers, body = await client.answer()
    assert headers["transfer-encoding"] == "chunked"
    assert body == b"part0;part1;part2;"
    await client.send(b"GET /stream?2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    _status, headers, body = await client.answer()
    assert "transfer-encoding" not in headers and "content-length" not in headers
    assert headers["connection"] == "close"
    assert body == b"part0;part1;"
    await client.close()


async def test_head_answers_carry_the_length_but_no_body(
    served: tuple[HttpServer, Handlers],
) -> None:
    server, _ = served
    client = await Raw.open(server)
    await client.send(b"HEAD /fast/h HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, _ = await client.answer(head_only=True)
    assert (status, headers["content-length"]) == (200, "7")
    await client.send(b"GET /fast/g HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await client.answer())[2] == b"/fast/g"  # no stray body bytes in between
    await client.close()


async def test_absolute_form_target(served: tuple[HttpServer, Handlers]) -> None:
    server, _ = served
    client = await Raw.open(server)
    await client.send(b"GET http://example.test:81/echo/x?y=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    body = json.loads((await client.answer())[2])
    assert (body["path"], body["query"]) == ("/echo/x", "y=1")
    await client.close()


# request bodies


async def test_chunked_request_body(served: tuple[HttpServer, Handlers]) -> None:
    server, _ = served
    client = await Raw.open(server)
    await client.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    for piece in (b"abc", b"defgh", b"i" * 70000):
        await client.send(b"%x\r\n%s\r\n" % (len(piece), piece))
    await client.send(b"0\r\n\r\n")
    body = json.loads((await client.answer())[2])
    assert body["length"] == 70008
    assert body["body"].startswith("abcdefghiii")
    await client.close()


async def test_expect_100_continue(served: tuple[HttpServer, Handlers]) -> None:
    server, _ = served
    client = await Raw.open(server)
    await client.send(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"
    )
    status, _, _ = await client.answer()
    assert status == 100
    await client.send(b"data")
    status, _, body = await client.answer()
    assert status == 200
    assert json.loads(body)["body"] == "data"
    await client.close()


async def test_expect_100_continue_not_read_closes(served: tuple[HttpServer, Handlers]) -> None:
    server, _ = served
    client = await Raw.open(server)
    await client.send(
        b"POST /noread HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 9\r\n\r\n"
    )
    status, headers, _ = await client.answer()
    assert (status, headers["connection"]) == (201, "close")
    assert await client.closed()
    await client.close()


async def test_unread_body_is_discarded_and_the_connection_reused(
    served: tuple[HttpServer, Handlers],
) -> None:
    server, _ = served
    client = await Raw.open(server)
    big = b"z" * (3 * 1024 * 1024)
    await client.send(b"POST /noread HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(big))
    writing = asyncio.create_task(client.send(big))
    status, headers, body = await client.answer()
    assert (status, body) == (201, b"ignored your body")
    assert "connection" not in headers
    await writing
    await client.send(b"GET /fast/next HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await client.answer())[2] == b"/fast/next"
    await client.close()


async def test_request_body_reading_pauses_when_the_handler_is_slow(
    served: tuple[HttpServer, Handlers],
) -> None:
    server, handlers = served
    client = await Raw.open(server)
    size = 8 * 1024 * 1024
    await client.send(b"POST /slowread HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
    await client.send(b"q" * size)
    status, _, body = await client.answer()
    assert (status, body) == (200, str(size).encode())
    # Buffered at most the high-water mark plus one read from the socket.
    assert handlers.max_buffered <= BODY_HIGH_WATER + 256 * 1024
    await client.close()


# streaming out


async def test_large_response_streams_to_a_slow_reader(
    served: tuple[HttpServer, Handlers],
) -> None:
    server, _ = served
    size = 16 * 1024 * 1024
    client = await Raw.open(server)
    await client.send(b"GET /big?%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)
    line = await client.reader.readline()
    assert line.startswith(b"HTTP/1.1 200")
    while await client.reader.readline() != b"\r\n":
        pass
    received = 0
    while received < size:
        chunk = await client.reader.read(65536)
        assert chunk
        received += len(chunk)
        await asyncio.sleep(0.0005)
    assert received == size
    await client.close()


# errors and disconnects


async def test_methods_llhttp_does_not_know_are_400(
    served: tuple[HttpServer, Handlers],
) -> None:
    server, _ = served
    client = await Raw.open(server)
    await client.send(b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await client.answer())[0] == 400
    await client.close()
    client = await Raw.open(server)
    await client.send(b"PURGE /echo HTTP/1.1\r\nHost: x\r\n\r\n")  # a registered one
    assert json.loads((await client.answer())[2])["method"] == "PURGE"
    await client.close()


async def test_oversized_head_is_431(served: tuple[HttpServer, Handlers]) -> None:
    server, _ = served
    client = await Raw.open(server)
    await client.send(b"GET / HTTP/1.1\r\n")
    for i in range(100):
        await client.send(b"X-Filler-%d: %s\r\n" % (i, b"f" * 1000))
    status, _, _ = await client.answer()
    assert status == 431
    await client.close()


async def test_upgrades_are_ignored_and_the_connection_carries_on(
    served: tuple[HttpServer, Handlers],
) -> None:
    server, _ = served
    client = await Raw.open(server)
    await client.send(
        b"GET /fast/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        b"GET /fast/next HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    status, _, body = await client.answer()
    assert (status, body) == (200, b"/fast/ws")
    assert (await client.answer())[2] == b"/fast/next"
    await client.close()


async def test_garbage_after_a_request_in_progress_is_400_after_its_answer(
    served: tuple[HttpServer, Handlers],
) -> None:
    server, _ = served
    client = await Raw.open(server)
    await client.send(b"GET /slow/a?0.1 HTTP/1.1\r\nHost: x\r\n\r\nNOT HTTP\r\n\r\n")
    status, _, body = await client.answer()
    assert (status, body) == (200, b"/slow/a?0.1")
    refusal(await client.answer(), 400)
    assert await client.closed()
    await client.close()


async def test_handler_bug_is_500_and_logged(
    served: tuple[HttpServer, Handlers], caplog: pytest.LogCaptureFixture
) -> None:
    server, _ = served
    client = await Raw.open(server)
    await client.send(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, _ = await client.answer()
    assert (status, headers["connection"]) == (500, "close")
    assert "a bug in a handler" in caplog.text
    client2 = await Raw.open(server)
    await client2.send(b"GET /silent HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await client2.answer())[0] == 500  # a handler that never answered
    await client.close()
    await client2.close()


async def test_client_gone_cancels_the_handler(served: tuple[HttpServer, Handlers]) -> None:
    server, handlers = served
    client = await Raw.open(server)
    await client.send(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(0.05)
    await client.close()
    await asyncio.wait_for(handlers.gone.wait(), 5)
    assert handlers.events == ["cancelled"]


async def test_client_gone_calls_on_gone_instead_when_set(
    served: tuple[HttpServer, Handlers], caplog: pytest.LogCaptureFixture
) -> None:
    server, handlers = served
    client = await Raw.open(server)
    await client.send(b"GET /ongone HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(0.05)
    await client.close()
    await asyncio.wait_for(handlers.gone.wait(), 5)
    assert handlers.events == ["on_gone", "finished"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_client_gone_wakes_a_body_reader(served: tuple[HttpServer, Handlers]) -> None:
    server, handlers = served
    client = await Raw.open(server)
    await client.send(b"POST /readgone HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
    await asyncio.sleep(0.05)
    await client.close()
    await asyncio.wait_for(handlers.gone.wait(), 5)
    assert handlers.events == ["ClientGone"]


# lifecycle


async def test_idle_connections_are_closed_after_the_keepalive_timeout(
    served: tuple[HttpServer, Handlers],
) -> None:
    server, _ = served
    client = await Raw.open(server)
    await client.send(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
    await client.answer()
    assert await asyncio.wait_for(client.reader.read(1), 3) == b""  # 0.5 s keep-alive
    await client.close()


async def test_close_lets_requests_in_progress_finish() -> None:
    handlers = Handlers()
    server = HttpServer(handlers)
    await server.start("127.0.0.1", 0)
    busy = await Raw.open(server)
    idle = await Raw.open(server)
    await busy.send(b"GET /slow/x?0.3 HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(0.05)
    closing = asyncio.create_task(server.close(grace=5))
    status, headers, body = await busy.answer()
    assert (status, body, headers["connection"]) == (200, b"/slow/x?0.3", "close")
    assert await idle.closed()
    await closing
    await server.close()  # idempotent
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", server.port)
    await busy.close()
    await idle.close()


async def test_close_cuts_requests_past_the_grace() -> None:
    handlers = Handlers()
    server = HttpServer(handlers)
    await server.start("127.0.0.1", 0)
    client = await Raw.open(server)
    await client.send(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(0.05)
    await server.close(grace=0.1)
    assert await client.closed()
    await asyncio.wait_for(handlers.gone.wait(), 5)
    await client.close()


async def test_port_is_known_once_started() -> None:
    server = HttpServer(Handlers())
    assert (server.port, server.sockets) == (0, ())
    await server.start("127.0.0.1", 0)
    assert server.port == server.sockets[0].getsockname()[1]
    await server.close()


def test_on_uvloop() -> None:
    """The daemon runs on uvloop: the same server, a few of the above on it."""

    async def scenario() -> None:
        handlers = Handlers()
        server = HttpServer(handlers)
        await server.start("127.0.0.1", 0)
        client = await Raw.open(server)
        await client.send(
            b"GET /slow/1?0.05 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n"
            b"GET /stream?2 HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        assert (await client.answer())[2] == b"/slow/1?0.05"
        assert json.loads((await client.answer())[2])["body"] == "abc"
        assert (await client.answer())[2] == b"part0;part1;"
        await client.send(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(0.05)
        await client.close()
        await asyncio.wait_for(handlers.gone.wait(), 5)
        await server.close()

    uvloop.run(scenario())


# what the server refuses, and the deadlines it keeps


@pytest.fixture
async def strict() -> AsyncIterator[tuple[HttpServer, Handlers]]:
    """A server with short read deadlines and room for four connections."""
    handlers = Handlers()
    server = HttpServer(
        handlers,
        keepalive_timeout=5.0,
        linger_timeout=0.5,
        head_timeout=0.3,
        body_timeout=0.3,
        max_connections=4,
    )
    await server.start("127.0.0.1", 0)
    yield server, handlers
    await server.close(grace=1.0)


def refusal(answer: tuple[int, dict[str, str], bytes], status: int) -> dict[str, str]:
    """The JSON body of a refusal with ``status``, sent with Connection: close."""
    got, headers, body = answer
    assert got == status, (got, body)
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert headers["connection"] == "close"
    payload = json.loads(body)
    assert set(payload) == {"error", "message"}
    return dict(payload)


async def test_a_body_that_never_comes_is_408(strict: tuple[HttpServer, Handlers]) -> None:
    server, handlers = strict
    client = await Raw.open(server)
    await client.send(b"POST /readgone HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    answer = await asyncio.wait_for(client.answer(), 3)
    assert refusal(answer, 408)["error"] == "request_timeout"
    assert await client.closed()
    await asyncio.wait_for(handlers.gone.wait(), 3)  # the handler reading the body was failed
    assert handlers.events == ["ClientGone"]
    await client.close()


async def test_a_body_that_keeps_coming_is_not_cut(strict: tuple[HttpServer, Handlers]) -> None:
    server, _ = strict
    client = await Raw.open(server)
    await client.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n")
    for piece in (b"ab", b"cd", b"ef", b"gh"):  # 0.6 s in all, never 0.3 s without progress
        await asyncio.sleep(0.15)
        await client.send(piece)
    status, _, body = await asyncio.wait_for(client.answer(), 3)
    assert (status, json.loads(body)["body"]) == (200, "abcdefgh")
    await client.close()


async def test_a_head_that_never_ends_is_408(strict: tuple[HttpServer, Handlers]) -> None:
    server, _ = strict
    client = await Raw.open(server)
    started = time.monotonic()
    await client.send(b"GET /fast HTTP/1.1\r\nHost: x\r\n")
    for _ in range(10):  # progress does not extend the head's deadline
        await asyncio.sleep(0.05)
        await client.send(b"X-Slow: 1\r\n")
    answer = await asyncio.wait_for(client.answer(), 3)
    assert refusal(answer, 408)["error"] == "request_timeout"
    assert time.monotonic() - started < 2
    assert await client.closed()
    await client.close()


async def test_a_connection_that_sends_nothing_is_closed(
    strict: tuple[HttpServer, Handlers],
) -> None:
    server, _ = strict
    client = await Raw.open(server)
    assert await asyncio.wait_for(client.reader.read(), 3) == b""  # no answer to no request
    await client.close()


async def test_a_head_deadline_while_a_request_is_served_refuses_in_turn(
    strict: tuple[HttpServer, Handlers],
) -> None:
    server, _ = strict
    client = await Raw.open(server)
    await client.send(b"GET /slow/a?0.6 HTTP/1.1\r\nHost: x\r\n\r\nGET /fast HTTP/1.1\r\n")
    status, _, body = await asyncio.wait_for(client.answer(), 3)
    assert (status, body) == (200, b"/slow/a?0.6")
    refusal(await asyncio.wait_for(client.answer(), 3), 408)
    await client.close()


async def test_at_the_cap_the_oldest_idle_connection_is_shed(
    strict: tuple[HttpServer, Handlers],
) -> None:
    server, _ = strict
    clients = []
    for i in range(4):
        client = await Raw.open(server)
        await client.send(b"GET /fast/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
        assert (await client.answer())[0] == 200
        clients.append(client)
    busy = clients[1]
    await busy.send(b"GET /slow/b?0.5 HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(0.05)
    newcomer = await Raw.open(server)
    await newcomer.send(b"GET /fast/new HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await newcomer.answer())[2] == b"/fast/new"
    assert await clients[0].closed()  # the oldest idle one
    assert (await busy.answer())[2] == b"/slow/b?0.5"  # the busy one was not shed
    await clients[2].send(b"GET /fast/still HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await clients[2].answer())[2] == b"/fast/still"
    assert len(server.connections) <= 4
    for client in [*clients, newcomer]:
        await client.close()


async def test_at_the_cap_with_nothing_to_shed_new_connections_are_closed(
    strict: tuple[HttpServer, Handlers],
) -> None:
    server, _ = strict
    busy = []
    for _ in range(4):
        client = await Raw.open(server)
        await client.send(b"GET /slow/x?0.5 HTTP/1.1\r\nHost: x\r\n\r\n")
        busy.append(client)
    await asyncio.sleep(0.05)
    refused = await Raw.open(server)
    await refused.send(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await refused.closed()
    for client in busy:
        assert (await client.answer())[0] == 200
        await client.close()
    await refused.close()


async def test_a_parse_error_in_a_body_is_400_and_fails_the_reader(
    served: tuple[HttpServer, Handlers],
) -> None:
    server, handlers = served
    client = await Raw.open(server)
    await client.send(
        b"POST /readgone HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
    )
    await asyncio.sleep(0.05)
    await client.send(b"zz\r\n")
    answer = await asyncio.wait_for(client.answer(), 3)
    assert refusal(answer, 400)["error"] == "bad_request"
    assert await client.closed()
    await asyncio.wait_for(handlers.gone.wait(), 3)
    assert handlers.events == ["ClientGone"]
    await client.close()


async def test_a_parse_error_in_a_queued_body_is_400_after_the_answers_before_it(
    served: tuple[HttpServer, Handlers],
) -> None:
    server, _ = served
    client = await Raw.open(server)
    await client.send(
        b"GET /slow/a?0.1 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    )
    assert (await client.answer())[2] == b"/slow/a?0.1"
    refusal(await asyncio.wait_for(client.answer(), 3), 400)
    assert await client.closed()
    await client.close()


async def test_many_small_pipelined_requests_in_one_write_are_all_answered(
    served: tuple[HttpServer, Handlers],
) -> None:
    server, _ = served
    client = await Raw.open(server)
    count = 2101
    one = b"GET /fast/%d HTTP/1.1\r\nHost: x\r\nUser-Agent: pipeliner/1.0\r\nAccept: */*\r\n\r\n"
    await client.send(b"".join(one % i for i in range(count)))  # ~160 KiB in one write
    for i in range(count):
        status, _, body = await asyncio.wait_for(client.answer(), 5)
        assert (status, body) == (200, b"/fast/%d" % i)
    await client.send(b"GET /fast/after HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await client.answer())[2] == b"/fast/after"
    await client.close()


async def test_a_large_head_after_large_requests_in_the_same_read_is_served(
    served: tuple[HttpServer, Handlers],
) -> None:
    server, _ = served
    client = await Raw.open(server)
    filler = b"X-Filler: " + b"f" * 40000 + b"\r\n"
    one = b"GET /fast/%d HTTP/1.1\r\nHost: x\r\n" + filler + b"\r\n"
    heads = b"".join(one % i for i in range(4))  # each head ~40 KiB
    await client.send(heads[:-1000])  # one write ending inside the fourth head
    await asyncio.sleep(0.05)
    await client.send(heads[-1000:])
    for i in range(4):
        assert (await asyncio.wait_for(client.answer(), 5))[2] == b"/fast/%d" % i
    await client.close()


@pytest.mark.parametrize("piece", [100, 4096])
async def test_a_head_over_the_limit_sent_in_pieces_is_431(
    served: tuple[HttpServer, Handlers], piece: int
) -> None:
    server, _ = served
    client = await Raw.open(server)
    head = b"GET /fast HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 100 * 1024 + b"\r\n\r\n"
    try:
        for start in range(0, len(head), piece):
            await client.send(head[start : start + piece])
    except ConnectionError:
        pass  # refused before the end
    answer = await asyncio.wait_for(client.answer(), 3)
    assert refusal(answer, 431)["error"] == "head_too_large"
    await client.close()


@pytest.mark.parametrize(
    ("line", "status"),
    [
        (b"GET /fast\r\nHost: x\r\n\r\n", 400),  # HTTP/0.9: no version
        (b"GET /fast HTTP/0.9\r\nHost: x\r\n\r\n", 400),
        (b"GET /fast HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"GET /fast HTTP/1.2\r\nHost: x\r\n\r\n", 505),
        (b"GET /fast HTTP/3.0\r\nHost: x\r\n\r\n", 505),
        (b"GET /fast HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET /fast HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
        (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # asterisk-form is for OPTIONS only
        (b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n", 405),
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
    ],
)
async def test_requests_refused_before_the_handler(
    served: tuple[HttpServer, Handlers], line: bytes, status: int
) -> None:
    server, handlers = served
    client = await Raw.open(server)
    await client.send(line)
    refusal(await asyncio.wait_for(client.answer(), 3), status)
    assert await client.closed()
    assert handlers.events == []
    await client.close()


async def test_http10_without_host_and_options_asterisk_are_served(
    served: tuple[HttpServer, Handlers],
) -> None:
    server, _ = served
    client = await Raw.open(server)
    await client.send(b"GET /fast/ten HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert (await client.answer())[2] == b"/fast/ten"
    await client.send(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
    assert json.loads((await client.answer())[2])["target"] == "*"
    await client.close()


async def test_an_upgrade_request_is_served_as_http11_body_included(
    served: tuple[HttpServer, Handlers],
) -> None:
    server, _ = served
    client = await Raw.open(server)
    await client.send(
        b"POST /echo/up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Content-Length: 5\r\n\r\nhel"
    )
    await asyncio.sleep(0.05)
    await client.send(
        b"lo"
        b"POST /echo/chunked HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: h2c\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        b"GET /fast/next HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    status, headers, body = await asyncio.wait_for(client.answer(), 3)
    assert (status, json.loads(body)["body"]) == (200, "hello")
    assert "upgrade" not in headers
    assert json.loads((await asyncio.wait_for(client.answer(), 3))[2])["body"] == "abc"
    assert (await asyncio.wait_for(client.answer(), 3))[2] == b"/fast/next"
    await client.close()


@pytest.mark.parametrize(
    "framing",
    [
        b"Transfer-Encoding: gzip\r\n",
        b"Transfer-Encoding: chunked, gzip\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    ],
)
async def test_an_upgrade_request_with_a_body_framing_http11_refuses_is_refused(
    served: tuple[HttpServer, Handlers], framing: bytes
) -> None:
    """llhttp stops at an upgrade request's head, before it checks the body's framing;
    the reader checks it then, as for any request (found by the fuzz benchmark: a
    ``Transfer-Encoding: gzip`` body was read as chunked)."""
    server, _ = served
    client = await Raw.open(server)
    await client.send(
        b"GET /echo/up HTTP/1.1\r\nHost: x\r\nUpgrade: 0\r\nConnection: Upgrade\r\n"
        + framing
        + b"\r\n0\r\n\r\n"
    )
    status, _, body = await asyncio.wait_for(client.answer(), 3)
    assert status == 400 and b"Transfer-Encoding" in body
    await client.close()


async def test_a_closed_connection_is_freed_without_the_garbage_collector(
    served: tuple[HttpServer, Handlers],
) -> None:
    """A connection and its parser held each other: every closed connection waited for
    a full collection, and a burst of 1,000 clients stayed in memory for minutes."""
    server, _ = served
    gc.collect()
    gc.disable()
    try:
        refs: list[weakref.ref[object]] = []
        for path in (b"/echo/a", b"/echo/b"):
            client = await Raw.open(server)
            await client.send(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, _ = await asyncio.wait_for(client.answer(), 3)
            assert status == 200
            (conn,) = server.connections
            refs.append(weakref.ref(conn))
            del conn
            await client.close()
            for _ in range(100):
                if not server.connections:
                    break
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert [ref() for ref in refs] == [None, None]
    finally:
        gc.enable()
