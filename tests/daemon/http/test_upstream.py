"""plat.daemon.http.upstream: keep-alive connections to real servers over loopback.

A scripted server (answers chosen by path, byte for byte) covers every framing
and failure; the real python shim covers reuse against what instances run.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import uvloop
from aiohttp import web

from plat.daemon.http.upstream import (
    UpstreamConnection,
    UpstreamError,
    UpstreamPool,
    Upstreams,
    socketpair_connect,
)
from tests.daemon.http.scripted import Answer, Asked, ScriptedServer

REPO = Path(__file__).resolve().parents[3]
SHIM = REPO / "runtimes" / "python" / "shim" / "plat_shim.py"

ANSWERS = {
    b"/cl": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\nX-A: 2\r\n\r\nok",
    b"/chunked": b"HTTP/1.1 201 Made\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    b"/interim": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
    b"/close": b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
    b"/head": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
    b"/malformed": b"HTTP/1.1 abc def\r\n\r\n",
}


class Scripted(ScriptedServer):
    """Answers by path (see ANSWERS and the special paths below)."""

    def answer(self, asked: Asked) -> Answer:
        path = asked.path
        if path == b"/drop":
            return Answer(hang_up=True)  # close without a byte of answer
        if path == b"/untilclose":
            return Answer(b"HTTP/1.1 200 OK\r\n\r\nall of it", hang_up=True)
        if path == b"/cut":
            return Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", hang_up=True)
        if path == b"/echo":
            body = asked.body
            return Answer(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        if path == b"/slow":
            return Answer(ANSWERS[b"/cl"], delay=0.2)
        return Answer(ANSWERS[path], hang_up=path == b"/close")


class Recorder:
    """A Sink that keeps what it got."""

    def __init__(self) -> None:
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.data = b""
        self.flushes = 0
        self.done: asyncio.Future[UpstreamError | None] = asyncio.get_running_loop().create_future()

    def head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.status, self.reason, self.headers = status, reason, list(headers)

    def body(self, data: bytes) -> None:
        self.data += data

    def flush(self) -> None:
        self.flushes += 1

    def complete(self) -> None:
        self.done.set_result(None)

    def failed(self, error: UpstreamError) -> None:
        self.done.set_result(error)


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[Scripted, UpstreamPool]]:
    server = Scripted()
    port = await server.start()
    pool = UpstreamPool.tcp("127.0.0.1", port)
    yield server, pool
    pool.close()
    await server.close()


def request(path: str, body: bytes = b"", method: str = "GET") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


async def exchange(
    pool: UpstreamPool, path: str, body: bytes = b"", *, method: str = "GET"
) -> tuple[Recorder, UpstreamConnection]:
    conn = pool.take() or await pool.open()
    sink = Recorder()
    conn.send(request(path, body, method), b"", sink, head_only=method == "HEAD")
    error = await asyncio.wait_for(sink.done, 5)
    if error is not None:
        raise error
    return sink, conn


# framings


async def test_content_length_answer_and_reuse(scripted: tuple[Scripted, UpstreamPool]) -> None:
    server, pool = scripted
    first, conn1 = await exchange(pool, "/cl")
    assert (first.status, first.reason, first.data) == (200, b"OK", b"ok")
    assert first.headers == [(b"Content-Length", b"2"), (b"X-A", b"1"), (b"X-A", b"2")]
    assert not conn1.reused
    second, conn2 = await exchange(pool, "/cl")
    assert conn2 is conn1 and conn2.reused
    assert second.data == b"ok"
    assert server.connections == 1
    assert pool.idle == [conn1]


async def test_chunked_answer(scripted: tuple[Scripted, UpstreamPool]) -> None:
    _, pool = scripted
    sink, _ = await exchange(pool, "/chunked")
    assert (sink.status, sink.reason, sink.data) == (201, b"Made", b"abcde")
    assert len(pool.idle) == 1


async def test_answer_until_close(scripted: tuple[Scripted, UpstreamPool]) -> None:
    _, pool = scripted
    sink, conn = await exchange(pool, "/untilclose")
    assert sink.data == b"all of it"
    assert conn.closed and pool.idle == []


async def test_interim_answers_are_skipped(scripted: tuple[Scripted, UpstreamPool]) -> None:
    _, pool = scripted
    sink, _ = await exchange(pool, "/interim")
    assert (sink.status, sink.data) == (200, b"x")
    assert len(pool.idle) == 1


async def test_connection_close_is_not_reused(scripted: tuple[Scripted, UpstreamPool]) -> None:
    server, pool = scripted
    await exchange(pool, "/close")
    assert pool.idle == []
    await exchange(pool, "/cl")
    assert server.connections == 2


async def test_head_answer_ends_at_its_head(scripted: tuple[Scripted, UpstreamPool]) -> None:
    _, pool = scripted
    sink, conn = await exchange(pool, "/head", method="HEAD")
    assert (sink.status, sink.data) == (200, b"")
    assert (b"Content-Length", b"5") in sink.headers
    assert conn.closed and pool.idle == []  # the parser would wait for 5 bytes


async def test_a_connection_paused_by_its_reader_is_resumed_for_the_next_user(
    scripted: tuple[Scripted, UpstreamPool],
) -> None:
    _, pool = scripted
    conn = await pool.open()

    class Pausing(Recorder):
        def head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
            super().head(status, reason, headers)
            conn.pause_reading()  # as a slow client makes the gateway do

    sink = Pausing()
    conn.send(request("/cl"), b"", sink, head_only=False)
    assert await asyncio.wait_for(sink.done, 5) is None  # head and body came in one read
    again, same = await asyncio.wait_for(exchange(pool, "/cl"), 5)
    assert same is conn and again.data == b"ok"


# failures


async def test_malformed_answer_fails(scripted: tuple[Scripted, UpstreamPool]) -> None:
    _, pool = scripted
    with pytest.raises(UpstreamError) as info:
        await exchange(pool, "/malformed")
    assert "malformed" in str(info.value)
    assert not info.value.retryable


async def test_cut_answer_fails_not_retryable(scripted: tuple[Scripted, UpstreamPool]) -> None:
    _, pool = scripted
    await exchange(pool, "/cl")
    with pytest.raises(UpstreamError) as info:
        await exchange(pool, "/cut")  # on the reused connection, but bytes had arrived
    assert not info.value.retryable


async def test_reused_connection_closed_before_answering_is_retryable(
    scripted: tuple[Scripted, UpstreamPool],
) -> None:
    _, pool = scripted
    await exchange(pool, "/cl")
    with pytest.raises(UpstreamError) as info:
        await exchange(pool, "/drop")
    assert info.value.retryable
    with pytest.raises(UpstreamError) as fresh:
        await exchange(pool, "/drop")  # a new connection: the instance really fails
    assert not fresh.value.retryable


async def test_refused_connection_raises_oserror() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    pool = UpstreamPool.tcp("127.0.0.1", port)
    with pytest.raises(OSError):
        await pool.open()


async def test_abort_drops_the_exchange_silently(scripted: tuple[Scripted, UpstreamPool]) -> None:
    _, pool = scripted
    conn = await pool.open()
    sink = Recorder()
    conn.send(request("/slow"), b"", sink, head_only=False)
    conn.abort()
    await asyncio.sleep(0.3)
    assert not sink.done.done()  # the sink is not told: the caller chose to drop it
    assert conn.closed and pool.idle == []


# streaming the request body


async def test_streamed_body_reused_only_once_fully_sent(
    scripted: tuple[Scripted, UpstreamPool],
) -> None:
    _, pool = scripted
    conn = await pool.open()
    sink = Recorder()
    size = 3 * 1024 * 1024
    conn.send(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size,
        None,
        sink,
        head_only=False,
    )
    block = b"s" * 65536
    for _ in range(size // len(block)):
        conn.write(block)
        await conn.drain()
    conn.end_request()
    assert await asyncio.wait_for(sink.done, 10) is None
    assert len(sink.data) == size
    assert pool.idle == [conn]


async def test_answer_before_the_body_was_sent_is_not_reused(
    scripted: tuple[Scripted, UpstreamPool],
) -> None:
    _, pool = scripted
    conn = await pool.open()
    sink = Recorder()
    # Announces a body that never comes; the scripted server answers /cl only after
    # reading it, so use Content-Length 0 and never call end_request.
    conn.send(request("/cl"), None, sink, head_only=False)
    assert await asyncio.wait_for(sink.done, 5) is None
    assert conn.closed and pool.idle == []


# the pool


async def test_idle_connections_swept_and_pools_dropped(
    scripted: tuple[Scripted, UpstreamPool],
) -> None:
    server, _ = scripted
    port = server.port
    upstreams = Upstreams()
    pool = upstreams.pool("i1", "127.0.0.1", port)
    assert upstreams.pool("i1", "127.0.0.1", port) is pool
    assert pool.address == f"127.0.0.1:{port}".encode()
    _, conn = await exchange(pool, "/cl")
    pool.sweep(time.monotonic(), idle_timeout=60)
    assert pool.idle == [conn]
    pool.sweep(time.monotonic() + 61, idle_timeout=60)
    assert pool.idle == [] and conn.closed
    _, conn = await exchange(pool, "/cl")
    upstreams.drop("i1")
    assert conn.closed and pool.closed and "i1" not in upstreams.pools
    upstreams.drop("i1")  # idempotent


async def test_busy_connection_of_a_closed_pool_is_closed_on_release(
    scripted: tuple[Scripted, UpstreamPool],
) -> None:
    _, pool = scripted
    conn = await pool.open()
    sink = Recorder()
    conn.send(request("/slow"), b"", sink, head_only=False)
    pool.close()
    assert await asyncio.wait_for(sink.done, 5) is None
    assert conn.closed and pool.idle == []


async def test_connection_the_server_closes_while_idle_leaves_the_pool(
    scripted: tuple[Scripted, UpstreamPool],
) -> None:
    server, pool = scripted
    _, conn = await exchange(pool, "/cl")
    server.hang_up()
    for _ in range(100):
        if conn.closed:
            break
        await asyncio.sleep(0.02)
    assert conn.closed and pool.take() is None


# the real shim


@pytest.fixture
def shim(tmp_path: Path) -> Iterator[int]:
    (tmp_path / "handler.py").write_text(
        "def handle(event, context):\n"
        "    return {'statusCode': 200, 'headers': {'Set-Cookie': 'a=1'},"
        " 'body': event.body or b'hi'}\n"
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    env = dict(os.environ, PORT=str(port), PLAT_HOST="127.0.0.1", PLAT_HANDLER="handler.handle")
    proc = subprocess.Popen([sys.executable, str(SHIM)], cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_the_shim_keeps_one_connection_for_many_calls(shim: int) -> None:
    pool = UpstreamPool.tcp("127.0.0.1", shim)
    conns = set()
    for i in range(20):
        sink, conn = await exchange(pool, "/x", body=b"n%d" % i, method="POST")
        assert (sink.status, sink.data) == (200, b"n%d" % i)
        conns.add(conn)
    assert len(conns) == 1
    pool.close()


async def test_the_shim_concurrently(shim: int) -> None:
    pool = UpstreamPool.tcp("127.0.0.1", shim)
    results = await asyncio.gather(*(exchange(pool, "/", body=b"c%d" % i) for i in range(16)))
    assert sorted(sink.data for sink, _ in results) == sorted(b"c%d" % i for i in range(16))
    assert 1 <= len(pool.idle) <= 16
    pool.close()


# socket pairs to an in-process aiohttp app


async def test_socketpair_connect_reaches_an_aiohttp_app() -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"hello {request.headers['Host']}")

    app = web.Application()
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    server = runner.server
    assert server is not None
    loop = asyncio.get_running_loop()

    async def accept(sock: socket.socket) -> None:
        await loop.connect_accepted_socket(server, sock)

    pool = UpstreamPool(socketpair_connect(accept), address=b"inside")
    for _ in range(3):
        sink, _ = await exchange(pool, "/hello")
        assert (sink.status, sink.data) == (200, b"hello t")
    assert len(pool.idle) == 1
    pool.close()
    await runner.cleanup()


def test_on_uvloop() -> None:
    """The daemon runs on uvloop: the same pool, a few of the above on it."""

    async def scenario() -> None:
        server = Scripted()
        pool = UpstreamPool.tcp("127.0.0.1", await server.start())
        first, _ = await exchange(pool, "/chunked")
        assert first.data == b"abcde"
        with pytest.raises(UpstreamError) as info:
            await exchange(pool, "/drop")
        assert info.value.retryable
        sink, _ = await exchange(pool, "/head", method="HEAD")
        assert sink.status == 200
        pool.close()
        await server.close()

    uvloop.run(scenario())
