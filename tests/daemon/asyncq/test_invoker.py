"""plat.daemon.asyncq.invoker: an attempt served in process by a handler with the
gateway's signature that relays to a scripted instance on loopback (the real
exchange; the gateway's own decisions run end to end in test_door.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest_asyncio

from plat.daemon.asyncq.invoker import MAX_KEPT_BODY, Invoker
from plat.daemon.http.deadlines import Deadlines
from plat.daemon.http.message import Request, Response
from plat.daemon.http.relay import Call, exchange
from plat.daemon.http.upstream import UpstreamError, UpstreamPool
from tests.daemon.http.scripted import Answer, Asked, ScriptedServer


class Instance(ScriptedServer):
    def answer(self, asked: Asked) -> Answer:
        if asked.path == b"/slow":
            return Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow", delay=0.4)
        if asked.path == b"/big":
            n = MAX_KEPT_BODY + 10
            return Answer(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n + b"y" * n)
        if asked.path == b"/cut":
            return Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab", hang_up=True)
        body = asked.head + asked.body
        return Answer(b"HTTP/1.1 503 Busy\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


class Gateway:
    """Stands in for Gateway.invoke: relays the call; records what it was given."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.deadlines = Deadlines()
        self.given: list[tuple[bytes, bytes]] = []
        self.ended: list[str] = []
        self.hold = asyncio.Event()

    async def invoke(
        self, request: Request, response: Response, name: bytes, subpath: bytes
    ) -> None:
        self.given.append((name, subpath))
        try:
            if subpath == b"/held":
                await self.hold.wait()  # waiting for an instance: no exchange yet
            if subpath == b"/fails":
                raise RuntimeError("broken")
            body = await request.read(request.content_length or 0)
            lines = b"".join(k + b": " + v + b"\r\n" for k, v in request.headers)
            head = b"%s %s HTTP/1.1\r\n%s\r\n" % (request.method, subpath, lines)
            call = Call("c1")
            try:
                await exchange(self.pool, request, response, head, body, call, self.deadlines)
            except UpstreamError:
                if not response.started:  # the gateway answers 502 then
                    raise
            self.ended.append("answered")
        except BaseException as exc:
            self.ended.append(type(exc).__name__)
            raise


@pytest_asyncio.fixture
async def gateway() -> AsyncIterator[Gateway]:
    server = Instance()
    port = await server.start()
    pool = UpstreamPool.tcp("127.0.0.1", port)
    gw = Gateway(pool)
    yield gw
    gw.deadlines.close()
    pool.close()
    await server.close()


HEADERS = [(b"X-Call-Id", b"abc"), (b"X-Plat-Attempt", b"2")]


async def test_an_attempt_gets_the_answer(gateway: Gateway) -> None:
    invoker = Invoker(gateway.invoke)
    out = await invoker.attempt("fn.acme", b"POST", b"/p/q?x=1", HEADERS, b"body", 5.0)
    assert gateway.given == [(b"fn.acme", b"/p/q")]
    assert out.status == 503 and out.error is None
    assert out.body.startswith(b"POST /p/q HTTP/1.1\r\nHost: localhost\r\n")
    assert b"X-Call-Id: abc\r\nX-Plat-Attempt: 2\r\nContent-Length: 4\r\n" in out.body
    assert out.body.endswith(b"\r\n\r\nbody")
    assert ("X-Call-Id", "c1") in out.headers
    await invoker.close()


async def test_the_path_defaults_to_the_root(gateway: Gateway) -> None:
    invoker = Invoker(gateway.invoke)
    await invoker.attempt("fn", b"POST", b"?x=1", [], b"", 5.0)
    await invoker.attempt("fn", b"POST", b"", [], b"", 5.0)
    assert gateway.given == [(b"fn", b"/"), (b"fn", b"/")]


async def test_a_long_answer_is_kept_up_to_the_limit(gateway: Gateway) -> None:
    out = await Invoker(gateway.invoke).attempt("fn", b"POST", b"/big", [], b"", 5.0)
    assert out.status == 200 and len(out.body) == MAX_KEPT_BODY and out.truncated == 10


async def test_a_cut_answer_is_an_error_with_its_status(gateway: Gateway) -> None:
    out = await Invoker(gateway.invoke).attempt("fn", b"POST", b"/cut", [], b"", 5.0)
    assert out.status == 200 and out.error == "the answer was cut off" and out.body == b"ab"


async def test_a_failing_gateway_is_an_error_without_a_status(gateway: Gateway) -> None:
    out = await Invoker(gateway.invoke).attempt("fn", b"POST", b"/fails", [], b"", 5.0)
    assert out.status == 0 and out.error is not None and "broken" in out.error


async def test_past_its_timeout_an_attempt_ends_but_the_exchange_runs_to_the_answer(
    gateway: Gateway,
) -> None:
    """As when a client hangs up mid-call: the instance is busy with it until it
    answers, so the gateway keeps the exchange (and the instance's slot) till then."""
    invoker = Invoker(gateway.invoke)
    started = time.monotonic()
    out = await invoker.attempt("fn", b"POST", b"/slow", [], b"", 0.1)
    assert 0.1 <= time.monotonic() - started < 0.3
    assert out.status == 0 and out.error == "no answer within 0.1 s"
    assert gateway.ended == [] and len(invoker._abandoned) == 1
    for _ in range(100):
        if gateway.ended:
            break
        await asyncio.sleep(0.01)
    assert gateway.ended == ["ClientGone"] and not invoker._abandoned


async def test_past_its_timeout_before_the_exchange_the_call_is_cancelled(
    gateway: Gateway,
) -> None:
    invoker = Invoker(gateway.invoke)
    out = await invoker.attempt("fn", b"POST", b"/held", [], b"", 0.05)
    assert out.error == "no answer within 0.05 s"
    await asyncio.sleep(0.01)
    assert gateway.ended == ["CancelledError"] and not invoker._abandoned


async def test_close_stops_abandoned_attempts(gateway: Gateway) -> None:
    invoker = Invoker(gateway.invoke)
    await invoker.attempt("fn", b"POST", b"/slow", [], b"", 0.05)
    assert len(invoker._abandoned) == 1
    await invoker.close()
    assert gateway.ended == ["CancelledError"] and not invoker._abandoned


async def test_a_cancelled_attempt_cancels_its_call(gateway: Gateway) -> None:
    invoker = Invoker(gateway.invoke)
    task = asyncio.create_task(invoker.attempt("fn", b"POST", b"/held", [], b"", 5.0))
    await asyncio.sleep(0.02)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0.01)
    assert gateway.ended == ["CancelledError"]
