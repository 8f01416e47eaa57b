"""The gateway's proxying, end to end over loopback, in one process.

``daemon`` is the production ``Daemon`` (app.py wiring) on the process backend:
real shim instances, real clients. ``scripted`` swaps only the backend for one
whose instances are a scripted HTTP server, to produce what shims never send
(connections closed mid-keep-alive, chunked or cut answers, Connection-named
headers).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import io
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import uvloop
from multidict import CIMultiDict

from plat.config import load_config
from plat.daemon.app import Daemon
from plat.daemon.drivers.base import InstanceExit, InstanceSpec, OutputLine, RunningInstance
from plat.daemon.drivers.process.artifacts import ProcessArtifacts
from plat.daemon.drivers.versions import Driver, Release
from plat.daemon.http.relay import CALL_ID_RE
from plat.daemon.store import Invocation
from plat.manifest import Manifest, load_manifest
from plat.paths import Home
from tests.daemon.http.scripted import Answer, Asked, ScriptedServer
from tests.functions import write_python_function

pytestmark = pytest.mark.asyncio(loop_scope="module")

MAX_BODY = 1024 * 1024

ECHO = """
import hashlib, json

def handle(event, context):
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({
            "method": event.method,
            "path": event.path,
            "query": event.query_string,
            "headers": [[k, event.headers.getlist(k)] for k in event.headers],
            "length": len(event.body),
            "sha": hashlib.sha256(event.body).hexdigest(),
            "call_id": context.call_id,
        }),
    }
"""

BIG = """
def handle(event, context):
    n = int(event.query.get("n", "0"))
    return {
        "statusCode": 200,
        "headers": {
            "Content-Type": "application/octet-stream",
            "Set-Cookie": ["a=1; Path=/", "b=2"],
            "Keep-Alive": "timeout=5",
            "Proxy-Authenticate": "Basic",
            "X-Call-Id": "set-by-the-function",
        },
        "body": b"x" * n,
    }
"""

SLOW = """
import time

def handle(event, context):
    time.sleep(float(event.query.get("s", "2")))
    return "late"
"""

CRASH = """
import os

def handle(event, context):
    if event.path == "/die":
        os._exit(3)
    return "alive"
"""


def config_for(home: Home, env: dict[str, str], **overrides: Any) -> Any:
    settings = {"backend": "process", "gateway_port": 0, "max_body": MAX_BODY, "body_timeout": 1.0}
    settings.update(overrides)
    return load_config(home, env, settings)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def daemon(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Daemon]:
    root = tmp_path_factory.mktemp("gateway")
    home = Home(root / "home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLAT_")}
    daemon = Daemon(home, config_for(home, env, queue_limit=1, queue_timeout=1.0), env)
    await daemon.start()
    fns = root / "fns"
    folders = [
        write_python_function(fns, "echo", ECHO, extra_manifest="auth: public\n"),
        write_python_function(fns, "private", ECHO),
        write_python_function(fns, "big", BIG, extra_manifest="auth: public\n"),
        write_python_function(
            fns,
            "slow",
            SLOW,
            extra_manifest="auth: public\ntimeout: 1s\nscale: {min: 1, max: 1, concurrency: 1}\n",
        ),
        write_python_function(fns, "crash", CRASH, extra_manifest="auth: public\n"),
    ]
    try:
        for folder in folders:
            await daemon.deployer.deploy(
                load_manifest(folder), folder, lambda event: None, force=False, dev=False
            )
        yield daemon
    finally:
        await daemon.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


async def invocations(daemon: Daemon, function: str) -> list[Invocation]:
    await daemon.journal.flush()
    return await daemon.store.query_invocations(0, function)


def header_values(body: dict[str, Any], name: str) -> list[str]:
    for key, values in body["headers"]:
        if key.lower() == name.lower():
            return list(values)
    return []


class Raw:
    """One bare HTTP/1.1 connection: write bytes, read answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> Raw:
        host, port = url.removeprefix("http://").split(":")
        return cls(*await asyncio.open_connection(host, int(port)))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self, *, head_only: bool = False) -> tuple[int, list[tuple[str, str]], bytes]:
        line = await self.reader.readline()
        assert line, "the connection closed"
        status = int(line.split()[1])
        headers: list[tuple[str, str]] = []
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers.append((name.strip(), value.strip()))
        fields = {k.lower(): v for k, v in headers}
        if head_only or status < 200 or status in (204, 304):
            return status, headers, b""
        if "content-length" in fields:
            return status, headers, await self.reader.readexactly(int(fields["content-length"]))
        body = b""
        if fields.get("transfer-encoding") == "chunked":
            while size := int((await self.reader.readline()).strip(), 16):
                body += (await self.reader.readexactly(size + 2))[:-2]
            await self.reader.readline()
            return status, headers, body
        return status, headers, await self.reader.read()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def get(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in headers if k.lower() == name.lower()]


# call ids


async def test_call_ids_generated_passed_on_and_returned(
    daemon: Daemon, client: aiohttp.ClientSession
) -> None:
    url = daemon.gateway_url + "/function/echo"
    async with client.get(url) as res:
        body = await res.json()
        call_id = res.headers["X-Call-Id"]
    assert CALL_ID_RE.fullmatch(call_id.encode())
    assert body["call_id"] == call_id
    async with client.get(url, headers={"X-Call-Id": "my.own-id_1"}) as res:
        assert res.headers["X-Call-Id"] == "my.own-id_1"
        assert (await res.json())["call_id"] == "my.own-id_1"
    async with client.get(url, headers={"X-Call-Id": "not valid!"}) as res:
        assert res.headers["X-Call-Id"] != "not valid!"
        assert CALL_ID_RE.fullmatch(res.headers["X-Call-Id"].encode())
    ids = set()
    for _ in range(20):
        async with client.get(url) as res:
            ids.add(res.headers["X-Call-Id"])
    assert len(ids) == 20


async def test_errors_are_json_with_a_call_id(
    daemon: Daemon, client: aiohttp.ClientSession
) -> None:
    async with client.get(daemon.gateway_url + "/function/missing") as res:
        assert res.status == 404
        assert res.headers["Content-Type"] == "application/json; charset=utf-8"
        assert (await res.json())["error"] == "not_found"
        assert CALL_ID_RE.fullmatch(res.headers["X-Call-Id"].encode())
    headers = {"X-Call-Id": "denied-1"}
    async with client.get(daemon.gateway_url + "/function/private", headers=headers) as res:
        assert res.status == 401
        assert res.headers["WWW-Authenticate"] == 'Basic realm="plat"'
        assert res.headers["X-Call-Id"] == "denied-1"
        assert (await res.json())["error"] == "unauthorized"
    records = [r for r in await invocations(daemon, "private") if r.call_id == "denied-1"]
    assert [r.status for r in records] == [401]


# headers


async def test_headers_towards_the_function(daemon: Daemon, client: aiohttp.ClientSession) -> None:
    headers = [
        ("Connection", "keep-alive, X-Secret"),
        ("X-Secret", "hidden"),
        ("Keep-Alive", "timeout=3"),
        ("Proxy-Authorization", "Basic eA=="),
        ("TE", "trailers"),
        ("X-Tag", "one"),
        ("X-Tag", "two"),
        ("X-Forwarded-For", "10.9.8.7"),
        ("Authorization", "Bearer public-functions-see-it"),
    ]
    async with client.get(
        daemon.gateway_url + "/function/echo", headers=CIMultiDict(headers)
    ) as res:
        body = await res.json()
    names = {k.lower() for k, _ in body["headers"]}
    assert not names & {"connection", "x-secret", "keep-alive", "proxy-authorization", "te"}
    assert header_values(body, "x-tag") == ["one", "two"]
    assert header_values(body, "authorization") == ["Bearer public-functions-see-it"]
    assert header_values(body, "x-forwarded-for") == ["127.0.0.1"]
    assert header_values(body, "x-forwarded-host") == [daemon.gateway_url.removeprefix("http://")]
    assert header_values(body, "x-forwarded-proto") == ["http"]
    instance = daemon.controller.functions["echo"].instances[0]
    assert header_values(body, "host") == [instance.running.address]


async def test_a_probe_header_from_a_client_never_reaches_the_function(
    daemon: Daemon, client: aiohttp.ClientSession
) -> None:
    headers = {"X-Plat-Probe": "1", "Connection": "close"}
    async with client.get(daemon.gateway_url + "/function/echo/p", headers=headers) as res:
        body = await res.json()  # the handler answered, not the shim's readiness probe
    assert body["path"] == "/p"
    assert header_values(body, "x-plat-probe") == []


async def test_authorization_never_reaches_a_private_function(
    daemon: Daemon, client: aiohttp.ClientSession
) -> None:
    auth = {"Authorization": daemon.auth_header}
    async with client.get(daemon.gateway_url + "/function/private", headers=auth) as res:
        assert res.status == 200
        body = await res.json()
    assert header_values(body, "authorization") == []
    lower = {"Authorization": "basic " + daemon.auth_header.split()[1]}
    async with client.get(daemon.gateway_url + "/function/private", headers=lower) as res:
        assert res.status == 200  # the scheme is case-insensitive


async def test_headers_from_the_function(daemon: Daemon, client: aiohttp.ClientSession) -> None:
    async with client.get(daemon.gateway_url + "/function/big?n=5") as res:
        assert await res.read() == b"xxxxx"
        assert res.headers.getall("Set-Cookie") == ["a=1; Path=/", "b=2"]
        assert "Keep-Alive" not in res.headers
        assert "Proxy-Authenticate" not in res.headers
        assert res.headers["X-Call-Id"] != "set-by-the-function"
        assert res.headers.getall("X-Call-Id") == [res.headers["X-Call-Id"]]
        assert res.headers["Content-Length"] == "5"
        assert "Date" in res.headers


# methods, paths, bodies


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def test_every_method_with_its_query_and_subpath(
    daemon: Daemon, client: aiohttp.ClientSession, method: str
) -> None:
    url = daemon.gateway_url + "/function/echo/a/b%20c/?x=1&x=2&y"
    data = b"payload" if method in ("POST", "PUT", "PATCH") else None
    async with client.request(method, url, data=data) as res:
        assert res.status == 200
        body = await res.json()
    assert body["method"] == method
    assert body["path"] == "/a/b c/"
    assert body["query"] == "x=1&x=2&y"
    assert body["length"] == (7 if data else 0)


@pytest.mark.parametrize(
    ("path", "seen"),
    [("/function/echo", "/"), ("/function/echo/", "/"), ("/function/echo//x", "//x")],
)
async def test_subpaths(
    daemon: Daemon, client: aiohttp.ClientSession, path: str, seen: str
) -> None:
    async with client.get(daemon.gateway_url + path) as res:
        assert (await res.json())["path"] == seen


async def test_head(daemon: Daemon) -> None:
    conn = await Raw.open(daemon.gateway_url)
    await conn.send(b"HEAD /function/big?n=11 HTTP/1.1\r\nHost: h\r\n\r\n")
    status, headers, _ = await conn.answer(head_only=True)
    assert (status, get(headers, "content-length")) == (200, ["11"])
    await conn.send(b"GET /function/big?n=3 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (await conn.answer())[2] == b"xxx"  # nothing stray after the HEAD answer
    await conn.close()


async def test_body_over_the_limit_is_413(daemon: Daemon, client: aiohttp.ClientSession) -> None:
    url = daemon.gateway_url + "/function/echo"
    async with client.post(url, data=io.BytesIO(b"x" * (MAX_BODY + 1))) as res:
        assert res.status == 413
        assert (await res.json())["error"] == "body_too_large"
        assert "X-Call-Id" in res.headers

    def chunked(size: int) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(url.split("/")[2], timeout=30)
        conn.putrequest("POST", "/function/echo")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        piece = b"y" * 8192
        for _ in range(size // len(piece)):
            conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        out = (resp.status, resp.read())
        conn.close()
        return out

    status, _ = await asyncio.to_thread(chunked, MAX_BODY + 8192)
    assert status == 413
    status, body = await asyncio.to_thread(chunked, 100 * 8192)
    assert status == 200
    echoed = json.loads(body)
    assert echoed["length"] == 100 * 8192
    assert header_values(echoed, "content-length") == [str(100 * 8192)]
    assert header_values(echoed, "transfer-encoding") == []
    record = (await invocations(daemon, "echo"))[-1]
    assert record.bytes_in == 100 * 8192  # counted while reading the chunks


async def test_large_bodies_stream_both_ways(daemon: Daemon, client: aiohttp.ClientSession) -> None:
    upload = os.urandom(MAX_BODY - 10)  # above the whole-read size: streamed upstream
    async with client.post(daemon.gateway_url + "/function/echo", data=io.BytesIO(upload)) as res:
        body = await res.json()
    assert body["length"] == len(upload)
    assert body["sha"] == hashlib.sha256(upload).hexdigest()
    size = 40 * 1024 * 1024
    got = 0
    async with client.get(daemon.gateway_url + f"/function/big?n={size}") as res:
        async for chunk in res.content.iter_any():
            got += len(chunk)
    assert got == size
    record = (await invocations(daemon, "big"))[-1]
    assert (record.status, record.bytes_out) == (200, size)


async def test_slow_reader_then_the_same_upstream_connection_again(daemon: Daemon) -> None:
    # A slow client pauses the instance's connection; it must be unpaused when it
    # goes back to the pool, or the next call on it would never see its answer.
    size = 8 * 1024 * 1024
    conn = await Raw.open(daemon.gateway_url)
    for _ in range(2):
        await conn.send(b"GET /function/big?n=%d HTTP/1.1\r\nHost: h\r\n\r\n" % size)
        while (await conn.reader.readline()) != b"\r\n":
            pass
        got = 0
        while got < size:
            got += len(await conn.reader.read(256 * 1024))
            await asyncio.sleep(0.001)
        async with asyncio.timeout(5):
            await conn.send(b"GET /function/big?n=1 HTTP/1.1\r\nHost: h\r\n\r\n")
            assert (await conn.answer())[2] == b"x"
    await conn.close()


async def test_expect_100_continue(daemon: Daemon) -> None:
    conn = await Raw.open(daemon.gateway_url)
    await conn.send(
        b"POST /function/echo HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
        b"Content-Length: 5\r\n\r\n"
    )
    status, _, _ = await conn.answer()
    assert status == 100
    await conn.send(b"hello")
    status, _, body = await conn.answer()
    assert status == 200
    echoed = json.loads(body)
    assert echoed["length"] == 5
    assert header_values(echoed, "expect") == []
    await conn.close()


# requests the gateway's server refuses or reshapes


async def test_an_upgrade_request_reaches_the_function_with_its_body(daemon: Daemon) -> None:
    conn = await Raw.open(daemon.gateway_url)
    await conn.send(
        b"POST /function/echo/up HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\nContent-Length: 5\r\n\r\nhello"
        b"GET /function/echo/after HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    status, _, body = await asyncio.wait_for(conn.answer(), 10)
    echoed = json.loads(body)
    assert (status, echoed["length"], echoed["path"]) == (200, 5, "/up")
    assert header_values(echoed, "upgrade") == []
    assert json.loads((await asyncio.wait_for(conn.answer(), 10))[2])["path"] == "/after"
    await conn.close()


async def test_asterisk_target_is_a_json_400_without_a_traceback(
    daemon: Daemon, caplog: pytest.LogCaptureFixture
) -> None:
    for line in (b"GET * HTTP/1.1\r\nHost: h\r\n\r\n", b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"):
        conn = await Raw.open(daemon.gateway_url)
        await conn.send(line)
        status, headers, body = await asyncio.wait_for(conn.answer(), 10)
        assert status in (400, 404), line
        assert get(headers, "Content-Type") == ["application/json; charset=utf-8"]
        assert json.loads(body)["error"] in ("bad_request", "not_found")
        await conn.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_body_that_never_comes_is_408_before_auth(daemon: Daemon) -> None:
    conn = await Raw.open(daemon.gateway_url)
    await conn.send(b"POST /healthz HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n")
    status, _, body = await asyncio.wait_for(conn.answer(), 10)
    assert status == 408
    assert json.loads(body)["error"] == "request_timeout"
    await conn.close()


# connections


async def test_keep_alive_and_pipelining(daemon: Daemon) -> None:
    conn = await Raw.open(daemon.gateway_url)
    await conn.send(
        b"GET /function/echo/1 HTTP/1.1\r\nHost: h\r\n\r\n"
        b"POST /function/echo/2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n"
        b"GET /function/echo/4 HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    answers = [await conn.answer() for _ in range(4)]
    assert [status for status, _, _ in answers] == [200] * 4
    assert json.loads(answers[0][2])["path"] == "/1"
    assert json.loads(answers[1][2])["length"] == 3
    assert json.loads(answers[2][2])["status"] == "ok"
    assert json.loads(answers[3][2])["path"] == "/4"
    await conn.close()


async def test_upstream_connections_are_reused(daemon: Daemon) -> None:
    inst = daemon.controller.functions["echo"].instances[0]
    conn = await Raw.open(daemon.gateway_url)
    for i in range(10):
        await conn.send(b"GET /function/echo/%d HTTP/1.1\r\nHost: h\r\n\r\n" % i)
        assert (await conn.answer())[0] == 200
    await conn.close()
    pool = daemon.gateway.upstreams.pools[inst.id]
    assert len(pool.idle) == 1
    assert pool.idle[0].reused


# failures


async def test_timeout_is_504(daemon: Daemon, client: aiohttp.ClientSession) -> None:
    started = time.monotonic()
    async with client.get(daemon.gateway_url + "/function/slow?s=3") as res:
        assert res.status == 504
        assert (await res.json())["error"] == "function_timeout"
    assert 0.9 < time.monotonic() - started < 2.5
    assert daemon.controller.functions["slow"].instances[0].inflight == 0


async def test_queue_full_is_429_and_queue_timeout_503_with_retry_after(
    daemon: Daemon, client: aiohttp.ClientSession
) -> None:
    await asyncio.sleep(2.5)  # the timed-out call of the previous test has ended
    url = daemon.gateway_url + "/function/slow?s=0.9"
    first = asyncio.create_task(client.get(url))
    await asyncio.sleep(0.2)
    second = asyncio.create_task(client.get(url))  # waits: one slot, queue_limit 1
    await asyncio.sleep(0.2)
    async with client.get(url) as res:
        assert res.status == 429
        assert res.headers["Retry-After"] == "1"
        assert (await res.json())["error"] == "too_many_requests"
    statuses = []
    for task in (first, second):
        res = await task
        statuses.append(res.status)
        res.release()
    assert statuses[0] == 200
    assert statuses[1] in (200, 503)
    await asyncio.sleep(1.2)
    assert daemon.controller.functions["slow"].instances[0].inflight == 0


async def test_dead_instance_is_502(daemon: Daemon, client: aiohttp.ClientSession) -> None:
    async with client.get(daemon.gateway_url + "/function/crash/die") as res:
        assert res.status == 502
        assert (await res.json())["error"] == "instance_failed"
    for _ in range(100):
        async with client.get(daemon.gateway_url + "/function/crash") as res:
            if res.status == 200:
                break
        await asyncio.sleep(0.2)
    assert res.status == 200


async def test_client_gone_mid_answer_is_499_without_an_error_log(
    daemon: Daemon, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    conn = await Raw.open(daemon.gateway_url)
    await conn.send(
        b"GET /function/big?n=%d HTTP/1.1\r\nHost: h\r\nX-Call-Id: leaves-early\r\n\r\n"
        % (200 * 1024 * 1024)
    )
    assert (await conn.reader.readline()).startswith(b"HTTP/1.1 200")
    await conn.reader.read(65536)
    conn.writer.transport.abort()
    inst = daemon.controller.functions["big"].instances[0]
    for _ in range(100):
        records = [r for r in await invocations(daemon, "big") if r.call_id == "leaves-early"]
        if records:
            break
        await asyncio.sleep(0.05)
    assert [r.status for r in records] == [499]
    assert inst.inflight == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "Traceback" not in caplog.text


async def test_client_gone_while_queued_is_499_and_leaves_the_queue(
    daemon: Daemon, client: aiohttp.ClientSession
) -> None:
    fs = daemon.controller.functions["slow"]
    holder = asyncio.create_task(client.get(daemon.gateway_url + "/function/slow?s=0.5"))
    await asyncio.sleep(0.2)
    conn = await Raw.open(daemon.gateway_url)
    await conn.send(b"GET /function/slow?s=0 HTTP/1.1\r\nHost: h\r\nX-Call-Id: gave-up\r\n\r\n")
    await asyncio.sleep(0.1)
    assert len(fs.waiters) == 1
    conn.writer.transport.abort()
    await asyncio.sleep(0.1)
    assert len(fs.waiters) == 0
    (await holder).release()
    records = [r for r in await invocations(daemon, "slow") if r.call_id == "gave-up"]
    assert [r.status for r in records] == [499]


# accounting


async def test_every_call_is_counted_and_recorded(
    daemon: Daemon, client: aiohttp.ClientSession
) -> None:
    before = len(await invocations(daemon, "echo"))
    for i in range(3):
        async with client.post(
            daemon.gateway_url + "/function/echo", data=b"12345", headers={"X-Call-Id": f"acc{i}"}
        ) as res:
            size = len(await res.read())
    records = (await invocations(daemon, "echo"))[before:]
    assert [r.call_id for r in records] == ["acc0", "acc1", "acc2"]
    version = daemon.controller.functions["echo"].version
    for record in records:
        assert (record.status, record.bytes_in, record.bytes_out) == (200, 5, size)
        assert record.version == version and not record.cold and record.duration > 0
    text, _ = daemon.metrics.render()
    assert b'plat_invocations_total{code="200",function="echo",tenant="default"}' in text
    assert b'plat_invocations_in_flight{function="echo",tenant="default"} 0.0' in text


async def test_pools_of_stopped_instances_are_closed(
    daemon: Daemon, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    old = daemon.controller.functions["echo"].instances[0]
    async with client.get(daemon.gateway_url + "/function/echo") as res:
        await res.read()
    pool = daemon.gateway.upstreams.pools[old.id]
    idle = list(pool.idle)
    assert idle
    folder = write_python_function(
        tmp_path, "echo", ECHO + "\n# v2\n", extra_manifest="auth: public\n"
    )
    await daemon.deployer.deploy(
        load_manifest(folder), folder, lambda e: None, force=False, dev=False
    )
    for _ in range(100):
        if old.state == "stopped":
            break
        await asyncio.sleep(0.05)
    assert old.id not in daemon.gateway.upstreams.pools
    assert pool.closed and all(conn.closed for conn in idle)
    async with client.get(daemon.gateway_url + "/function/echo") as res:
        assert res.status == 200


# the rest of the gateway port


async def test_other_routes_answer_as_before(daemon: Daemon, client: aiohttp.ClientSession) -> None:
    base = daemon.gateway_url
    async with client.get(base + "/healthz") as res:
        assert res.status == 200 and (await res.json())["status"] == "ok"
    async with client.get(base + "/readyz") as res:
        assert res.status == 200 and (await res.json())["status"] == "ready"
    async with client.get(base + "/metrics") as res:
        assert res.status == 200
        assert res.headers["Content-Type"].startswith("text/plain")
        assert b"plat_invocations_total" in await res.read()
    headers = {"Accept": "application/openmetrics-text"}
    async with client.get(base + "/metrics", headers=headers) as res:
        assert res.headers["Content-Type"].startswith("application/openmetrics-text")
    for path in ("/nothing", "/function/", "/function", "/functionx"):
        async with client.get(base + path) as res:
            assert (res.status, await res.text()) == (404, "404: Not Found"), path
            assert "X-Call-Id" not in res.headers
    async with client.post(base + "/metrics") as res:
        assert res.status == 405
        assert res.headers["Allow"] == "GET,HEAD"


async def test_metrics_auth_applies_through_the_gateway(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLAT_")}
    daemon = Daemon(home, config_for(home, env, metrics_auth=True), env)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as client:
            async with client.get(daemon.gateway_url + "/metrics") as res:
                assert res.status == 401
                assert res.headers["WWW-Authenticate"] == 'Basic realm="plat"'
            auth = {"Authorization": daemon.auth_header}
            async with client.get(daemon.gateway_url + "/metrics", headers=auth) as res:
                assert res.status == 200
    finally:
        await daemon.close()


# scripted instances: what shims never send


class Scripted(ScriptedServer):
    """An instance that answers by path, byte for byte, and counts connections."""

    def answer(self, asked: Asked) -> Answer:
        path = asked.path
        if b"x-plat-probe" in asked.head.lower():
            return Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        if path == b"/stale" and asked.before:
            return Answer(hang_up=True)  # the instance closed the kept-alive connection
        if path == b"/stale":
            return Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh")
        if path == b"/hop":
            return Answer(
                b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\n"
                b"Keep-Alive: timeout=5\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
            )
        if path == b"/untilclose":
            until_close = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nto the end"
            return Answer(until_close, hang_up=True)
        if path == b"/cut":
            cut = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this"
            return Answer(cut, hang_up=True)
        return Answer()


class ScriptedBackend:
    """The narrow seam: instances are the scripted server, never started or stopped."""

    name = "scripted"
    isolates_tenants = False

    def __init__(self, port: int) -> None:
        self.port = port
        self.started: list[RunningInstance] = []

    async def remove_network(self, tenant: str) -> bool:
        return True

    @property
    def endpoint(self) -> str:
        return "scripted"

    async def start(self, spec: InstanceSpec, instance_id: str) -> RunningInstance:
        running = RunningInstance(
            instance_id, spec.function, spec.version, "127.0.0.1", self.port, instance_id
        )
        self.started.append(running)
        return running

    async def stop(self, instance: RunningInstance, timeout: float = 5.0) -> None:
        return None

    async def remove(self, instance: RunningInstance) -> None:
        return None

    async def output(
        self, instance: RunningInstance, since: float | None = None
    ) -> AsyncIterator[OutputLine]:
        return
        yield  # an async generator that ends at once

    async def list(self) -> list[RunningInstance]:
        return list(self.started)

    async def is_alive(self, instance: RunningInstance) -> bool:
        return True

    def runs(self, image: str) -> bool:
        return True

    async def events(self, since: float | None = None) -> AsyncIterator[InstanceExit]:
        await asyncio.Event().wait()  # its instance never exits
        yield  # type: ignore[misc]  # an async generator

    async def sweep(self) -> None:
        return None

    async def logs(self, instance: RunningInstance, tail: int = 50) -> str:
        return ""

    async def close(self) -> None:
        return None


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def scripted(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Daemon, Scripted]]:
    server = Scripted()
    port = await server.start()
    root = tmp_path_factory.mktemp("scripted")
    home = Home(root / "home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLAT_")}
    artifacts = ProcessArtifacts(home.root / "artifacts", env)
    driver = Driver(ScriptedBackend(port), artifacts, artifacts, link=False)
    daemon = Daemon(home, config_for(home, env), env, driver=driver)
    await daemon.start()
    manifest = Manifest(name="script", runtime="python", auth="public", scale={"min": 1, "max": 1})
    await daemon.controller.deploy(Release(manifest, "v1", "scripted:v1"), str(root))
    try:
        yield daemon, server
    finally:
        await daemon.close()
        assert server.server is not None
        server.server.close()


async def test_kept_alive_connection_closed_by_the_instance_is_retried(
    scripted: tuple[Daemon, Scripted], client: aiohttp.ClientSession
) -> None:
    daemon, server = scripted
    inst = daemon.controller.functions["script"].instances[0]
    url = daemon.gateway_url + "/function/script/stale"
    for _ in range(3):
        async with client.post(url, data=b"again") as res:
            assert (res.status, await res.read()) == (200, b"fresh")
    assert inst.state == "ready"  # never suspected
    assert len([r for r in server.requests if b"/stale" in r]) == 5  # 2 retried
    assert [r.status for r in await invocations(daemon, "script")][-3:] == [200, 200, 200]


async def test_connection_named_and_hop_headers_dropped_from_answers(
    scripted: tuple[Daemon, Scripted], client: aiohttp.ClientSession
) -> None:
    daemon, _ = scripted
    async with client.get(daemon.gateway_url + "/function/script/hop") as res:
        assert await res.read() == b"ok"
        assert "X-Secret" not in res.headers and "Keep-Alive" not in res.headers
        assert res.headers.getall("Set-Cookie") == ["a=1", "b=2"]
        assert res.headers["Transfer-Encoding"] == "chunked"  # length unknown: re-chunked


async def test_answer_until_close_is_chunked_to_the_client(
    scripted: tuple[Daemon, Scripted], client: aiohttp.ClientSession
) -> None:
    daemon, _ = scripted
    async with client.get(daemon.gateway_url + "/function/script/untilclose") as res:
        assert res.headers["Transfer-Encoding"] == "chunked"
        assert await res.read() == b"to the end"


async def test_answer_cut_by_the_instance_cuts_the_client(
    scripted: tuple[Daemon, Scripted], client: aiohttp.ClientSession
) -> None:
    daemon, _ = scripted
    with pytest.raises(aiohttp.ClientPayloadError):
        async with client.get(daemon.gateway_url + "/function/script/cut") as res:
            assert res.status == 200
            await res.read()
    await asyncio.sleep(0.1)
    assert [r.status for r in await invocations(daemon, "script")][-1] == 499


async def test_the_daemon_on_uvloop(tmp_path: Path) -> None:
    """`plat daemon run` runs on uvloop: the same wiring, deploy and a few calls on it
    (in a thread of its own, the test's loop being asyncio's)."""

    async def scenario() -> None:
        home = Home(tmp_path / "home")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PLAT_")}
        daemon = Daemon(home, config_for(home, env), env)
        await daemon.start()
        try:
            folder = write_python_function(tmp_path, "big", BIG, extra_manifest="auth: public\n")
            await daemon.deployer.deploy(
                load_manifest(folder), folder, lambda e: None, force=False, dev=False
            )
            async with aiohttp.ClientSession() as client:
                url = daemon.gateway_url + "/function/big?n=3000000"
                for _ in range(3):
                    async with client.get(url) as res:
                        assert len(await res.read()) == 3_000_000
                async with client.head(url) as res:
                    assert res.headers["Content-Length"] == "3000000"
                async with client.get(daemon.gateway_url + "/healthz") as res:
                    assert res.status == 200
        finally:
            await daemon.close()

    await asyncio.to_thread(uvloop.run, scenario())
