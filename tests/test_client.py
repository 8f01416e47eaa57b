"""plat.client: the CLI's HTTP/JSON client over the daemon's unix socket.

The server is a real aiohttp app on a unix socket in tmp_path; the (blocking)
client runs in a worker thread so the server keeps serving on the test's loop.
"""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import warnings
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web

from plat.client import DaemonClient
from plat.errors import DaemonError, PlatError
from plat.paths import Home

RELEASE = web.AppKey("release", asyncio.Event)


async def status(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "gateway_url": "http://127.0.0.1:8080"})


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": request.path,
            "content_type": request.headers.get("Content-Type"),
            "body": json.loads(body) if body else None,
        }
    )


async def missing(request: web.Request) -> web.Response:
    return web.json_response(
        {"error": "not_found", "message": "no function named 'ghost'", "hint": "see `plat ls`"},
        status=404,
    )


async def conflict(request: web.Request) -> web.Response:
    return web.json_response({"error": "conflict", "message": "busy"}, status=409)


async def text_error(request: web.Request) -> web.Response:
    return web.Response(status=500, text="internal trouble")


async def empty_error(request: web.Request) -> web.Response:
    return web.Response(status=503)


async def no_content(request: web.Request) -> web.Response:
    return web.Response(status=204)


async def events(request: web.Request) -> web.StreamResponse:
    payload = await request.json()
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await resp.prepare(request)
    for i in range(payload["count"]):
        await resp.write(json.dumps({"event": "line", "n": i}).encode() + b"\n")
        if i == 1:
            await resp.write(b"\n")  # blank lines are skipped
    await resp.write(json.dumps({"event": "done"}).encode() + b"\n")
    await resp.write_eof()
    return resp


async def slow_events(request: web.Request) -> web.StreamResponse:
    """Sends one event, then waits until the test has seen it before sending the last."""
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await resp.prepare(request)
    await resp.write(b'{"event": "first"}\n')
    try:
        await asyncio.wait_for(request.app[RELEASE].wait(), timeout=10)
        last = {"event": "last"}
    except TimeoutError:
        last = {"event": "late"}
    await resp.write(json.dumps(last).encode() + b"\n")
    await resp.write_eof()
    return resp


def make_app() -> web.Application:
    app = web.Application()
    app[RELEASE] = asyncio.Event()
    app.router.add_get("/v1/status", status)
    app.router.add_route("*", "/v1/echo", echo)
    app.router.add_route("*", "/v1/missing", missing)
    app.router.add_route("*", "/v1/conflict", conflict)
    app.router.add_get("/v1/text-error", text_error)
    app.router.add_get("/v1/empty-error", empty_error)
    app.router.add_delete("/v1/no-content", no_content)
    app.router.add_post("/v1/events", events)
    app.router.add_post("/v1/slow-events", slow_events)
    return app


@pytest.fixture
def home(tmp_path: Path) -> Home:
    home = Home(tmp_path / "h")
    home.ensure()
    return home


@pytest.fixture
async def server(home: Home) -> AsyncIterator[web.Application]:
    app = make_app()
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.UnixSite(runner, str(home.socket))
    await site.start()
    try:
        yield app
    finally:
        await runner.cleanup()


async def test_request_returns_json(home: Home, server: web.Application) -> None:
    client = DaemonClient(home)
    assert await asyncio.to_thread(client.request, "GET", "/v1/status") == {
        "ok": True,
        "gateway_url": "http://127.0.0.1:8080",
    }


async def test_request_sends_json_body(home: Home, server: web.Application) -> None:
    client = DaemonClient(home)
    body = {"name": "hello", "n": [1, 2], "unicode": "ünï"}
    got = await asyncio.to_thread(client.request, "PUT", "/v1/echo", body)
    assert got == {
        "method": "PUT",
        "path": "/v1/echo",
        "content_type": "application/json",
        "body": body,
    }


async def test_request_without_body(home: Home, server: web.Application) -> None:
    client = DaemonClient(home)
    got = await asyncio.to_thread(client.request, "GET", "/v1/echo")
    assert got["body"] is None
    assert got["content_type"] is None


async def test_request_empty_response_is_none(home: Home, server: web.Application) -> None:
    client = DaemonClient(home)
    assert await asyncio.to_thread(client.request, "DELETE", "/v1/no-content") is None


async def test_ping(home: Home, server: web.Application) -> None:
    assert await asyncio.to_thread(DaemonClient(home).ping)


async def test_json_error_becomes_plat_error(home: Home, server: web.Application) -> None:
    client = DaemonClient(home)
    with pytest.raises(PlatError) as info:
        await asyncio.to_thread(client.request, "GET", "/v1/missing")
    exc = info.value
    assert not isinstance(exc, DaemonError)
    assert exc.message == "no function named 'ghost'"
    assert exc.hint == "see `plat ls`"
    assert exc.status == 404
    assert exc.code == "not_found"
    assert str(exc) == "no function named 'ghost'\nHint: see `plat ls`"


async def test_json_error_without_hint(home: Home, server: web.Application) -> None:
    client = DaemonClient(home)
    with pytest.raises(PlatError) as info:
        await asyncio.to_thread(client.request, "POST", "/v1/conflict", {"x": 1})
    assert (info.value.status, info.value.code, info.value.message) == (409, "conflict", "busy")
    assert info.value.hint is None


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [("/v1/text-error", 500, "internal trouble"), ("/v1/empty-error", 503, "HTTP 503")],
)
async def test_non_json_error(
    home: Home, server: web.Application, path: str, status: int, message: str
) -> None:
    client = DaemonClient(home)
    with pytest.raises(PlatError) as info:
        await asyncio.to_thread(client.request, "GET", path)
    assert info.value.status == status
    assert info.value.message == message
    assert info.value.code == "error"


async def test_unknown_route_is_plat_error(home: Home, server: web.Application) -> None:
    with pytest.raises(PlatError) as info:
        await asyncio.to_thread(DaemonClient(home).request, "GET", "/v1/nope")
    assert info.value.status == 404


async def test_stream_yields_events_in_order(home: Home, server: web.Application) -> None:
    client = DaemonClient(home)
    got = await asyncio.to_thread(lambda: list(client.stream("POST", "/v1/events", {"count": 4})))
    assert got == [
        {"event": "line", "n": 0},
        {"event": "line", "n": 1},
        {"event": "line", "n": 2},
        {"event": "line", "n": 3},
        {"event": "done"},
    ]


async def test_stream_yields_events_as_they_arrive(home: Home, server: web.Application) -> None:
    client = DaemonClient(home)
    it = client.stream("POST", "/v1/slow-events", {})
    first = await asyncio.to_thread(next, it)
    assert first == {"event": "first"}
    server[RELEASE].set()
    assert await asyncio.to_thread(list, it) == [{"event": "last"}]


async def test_stream_error_status(home: Home, server: web.Application) -> None:
    client = DaemonClient(home)
    with pytest.raises(PlatError) as info:
        await asyncio.to_thread(lambda: list(client.stream("POST", "/v1/missing", {})))
    assert info.value.status == 404
    assert info.value.hint == "see `plat ls`"


def daemon_error(call: Callable[[], object]) -> tuple[str, str | None]:
    """The (message, hint) of the DaemonError ``call`` raises."""
    try:
        call()
    except DaemonError as exc:
        return (exc.message, exc.hint)
    pytest.fail("no DaemonError")


def test_no_socket_is_daemon_error(home: Home) -> None:
    client = DaemonClient(home)
    message, hint = daemon_error(lambda: client.request("GET", "/v1/status"))
    assert str(home.socket) in message
    assert "not running" in message
    assert hint is not None
    assert "plat daemon start" in hint
    assert client.ping() is False


def test_stale_socket_is_daemon_error(home: Home) -> None:
    # A socket file left behind by a killed daemon: connect() is refused.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(home.socket))
    sock.close()
    message, hint = daemon_error(lambda: DaemonClient(home).request("GET", "/v1/status"))
    assert "not running" in message
    assert hint is not None
    assert "plat daemon start" in hint


def test_stream_without_socket_is_daemon_error(home: Home) -> None:
    message, hint = daemon_error(lambda: list(DaemonClient(home).stream("POST", "/v1/events", {})))
    assert "not running" in message
    assert hint is not None
    assert "plat daemon start" in hint


def test_failed_connect_closes_its_socket(home: Home) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert DaemonClient(home).ping() is False
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
