"""plat.daemon.http_server: the HTTP/1.1 server, driven by real clients over loopback."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
from collections.abc import AsyncIterator, Callable

import pytest
import uvloop

from plat.daemon.http_message import BODY_HIGH_WATER, ClientGone, Request, Response
from plat.daemon.http_server import HttpServer

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


# a raw client


class Raw:
    """A bare HTTP/1.1 client on one connection: write bytes, read answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, server: HttpServer) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self, *, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        """One response; header names lower-cased (repeats joined with ', ')."""
        line = await self.reader.readline()
        assert line, "the connection closed"
        status = int(line.split()[1])
        headers: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
        if head_only or status in (204, 304) or status < 200:
            return status, headers, b""
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size = int((await self.reader.readline()).strip(), 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        else:
            body = await self.reader.read()
        return status, headers, body

    async def closed(self) -> bool:
        try:
            return await asyncio.wait_for(self.reader.read(1), 2) == b""
        except (ConnectionError, TimeoutError):
            return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


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


async def test_bad_request_is_400_then_closed(served: tuple[HttpServer, Handlers]) -> None:
    server, _ = served
    client = await Raw.open(server)
    await client.send(b"NOT HTTP AT ALL\r\n\r\n")
    status, headers, _ = await client.answer()
    assert (status, headers["connection"]) == (400, "close")
    assert await client.closed()
    await client.close()


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


async def test_upgrade_requests_are_answered_then_closed(
    served: tuple[HttpServer, Handlers],
) -> None:
    server, _ = served
    client = await Raw.open(server)
    await client.send(
        b"GET /fast/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    )
    status, _, body = await client.answer()
    assert (status, body) == (200, b"/fast/ws")
    assert await client.closed()
    await client.close()


async def test_garbage_after_a_request_in_progress_closes_after_its_answer(
    served: tuple[HttpServer, Handlers],
) -> None:
    server, _ = served
    client = await Raw.open(server)
    await client.send(b"GET /slow/a?0.1 HTTP/1.1\r\nHost: x\r\n\r\nNOT HTTP\r\n\r\n")
    status, headers, body = await client.answer()
    assert (status, body, headers["connection"]) == (200, b"/slow/a?0.1", "close")
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
