"""plat.client: the CLI's HTTP/JSON client, over the daemon's unix socket and over TCP
to a URL with a bearer token.

The servers are real aiohttp apps, on a unix socket in tmp_path or on loopback TCP
(plain and TLS); the (blocking) client runs in a worker thread so the server keeps
serving on the test's loop.
"""

from __future__ import annotations

import asyncio
import gc
import http.client
import io
import json
import socket
import ssl
import warnings
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from plat.client import DaemonClient, Endpoint
from plat.errors import DaemonError, PlatError
from plat.paths import Home
from tests.fixtures import free_port

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


# -- the HTTP door: <url>/api/v1/... with a bearer token, on real loopback TCP ---------

TOKEN = "plat_t_good-token"
SEEN = web.AppKey("seen", list)


@web.middleware
async def bearer_only(request: web.Request, handler: Callable) -> web.StreamResponse:  # type: ignore[type-arg]
    """What the gateway does for /api: a missing or wrong token is a JSON 401."""
    request.app[SEEN].append((request.path, dict(request.headers)))
    if request.headers.get("Authorization") != f"Bearer {TOKEN}":
        return web.json_response(
            {"error": "unauthorized", "message": "a valid bearer token is required"}, status=401
        )
    return await handler(request)


async def upload(request: web.Request) -> web.StreamResponse:
    """Reads the raw body as it comes, then answers NDJSON events about it."""
    data = await request.read()
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await resp.prepare(request)
    for event in (
        {"type": "received", "bytes": len(data), "content_type": request.content_type},
        {"type": "query", "force": request.query.get("force")},
        {"type": "head", "sum": sum(data[:4096])},
    ):
        await resp.write(json.dumps(event).encode() + b"\n")
    await resp.write_eof()
    return resp


async def too_large(request: web.Request) -> web.Response:
    """Answers at once, without reading the body (what a size limit does)."""
    return web.json_response(
        {"error": "too_large", "message": "the upload is larger than 1 MiB"}, status=413
    )


async def html_404(request: web.Request) -> web.Response:
    return web.Response(
        status=404, text="<html>\n<body>  Not   Found " + "x" * 5000, content_type="text/html"
    )


async def html_ok(request: web.Request) -> web.Response:
    return web.Response(text="<html>welcome to nginx</html>", content_type="text/html")


async def moved(request: web.Request) -> web.Response:
    raise web.HTTPMovedPermanently("https://plat.example/api/v1/status")


async def broken_stream(request: web.Request) -> web.StreamResponse:
    """Starts an NDJSON answer, then drops the connection in the middle of a line."""
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    await resp.write(b'{"event": "first"}\n{"event": "sec')
    assert request.transport is not None
    request.transport.abort()
    return resp


def make_http_app(prefix: str = "") -> web.Application:
    app = web.Application(middlewares=[bearer_only], client_max_size=64 * 1024**2)
    app[RELEASE] = asyncio.Event()
    app[SEEN] = []
    api = f"{prefix}/api/v1"
    app.router.add_get(f"{api}/status", status)
    app.router.add_route("*", f"{api}/echo", echo)
    app.router.add_route("*", f"{api}/missing", missing)
    app.router.add_post(f"{api}/events", events)
    app.router.add_post(f"{api}/slow-events", slow_events)
    app.router.add_post(f"{api}/upload", upload)
    app.router.add_post(f"{api}/too-large", too_large)
    app.router.add_get(f"{api}/html-404", html_404)
    app.router.add_get(f"{api}/html-ok", html_ok)
    app.router.add_get(f"{api}/moved", moved)
    app.router.add_get(f"{api}/broken", broken_stream)
    return app


async def serve_tcp(app: web.Application, ssl_context: Any = None) -> tuple[web.AppRunner, int]:
    # A connection whose body was left unread lingers (to drain it) 10 s by default.
    runner = web.AppRunner(app, lingering_time=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


@pytest.fixture
async def remote() -> AsyncIterator[tuple[web.Application, str]]:
    """A plat-like API on loopback TCP; yields the app and its base URL."""
    app = make_http_app()
    runner, port = await serve_tcp(app)
    try:
        yield app, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def remote_client(url: str, token: str = TOKEN, tenant: str | None = None) -> DaemonClient:
    return DaemonClient(url=url, token=token, tenant=tenant)


async def test_http_request_goes_to_api_with_bearer_and_tenant(
    remote: tuple[web.Application, str],
) -> None:
    app, url = remote
    client = remote_client(url, tenant="acme")
    got = await asyncio.to_thread(client.request, "POST", "/v1/echo", {"a": 1})
    assert got == {
        "method": "POST",
        "path": "/api/v1/echo",
        "content_type": "application/json",
        "body": {"a": 1},
    }
    path, headers = app[SEEN][-1]
    assert path == "/api/v1/echo"
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["X-Plat-Tenant"] == "acme"
    assert client.remote and client.home is None


async def test_http_without_tenant_sends_no_tenant_header(
    remote: tuple[web.Application, str],
) -> None:
    app, url = remote
    assert await asyncio.to_thread(remote_client(url).ping)
    path, headers = app[SEEN][-1]
    assert path == "/api/v1/status"
    assert "X-Plat-Tenant" not in headers


async def test_http_url_with_a_prefix() -> None:
    app = make_http_app(prefix="/plat/edge")
    runner, port = await serve_tcp(app)
    try:
        client = remote_client(f"http://127.0.0.1:{port}/plat/edge/")
        got = await asyncio.to_thread(client.request, "GET", "/v1/echo")
        assert got["path"] == "/plat/edge/api/v1/echo"
    finally:
        await runner.cleanup()


async def test_socket_door_sends_the_tenant_too(home: Home, server: web.Application) -> None:
    seen: list[str | None] = []

    @web.middleware
    async def record(request: web.Request, handler: Callable) -> web.StreamResponse:  # type: ignore[type-arg]
        seen.append(request.headers.get("X-Plat-Tenant"))
        return await handler(request)

    app = web.Application(middlewares=[record])
    app.router.add_get("/v1/status", status)
    runner = web.AppRunner(app)
    await runner.setup()
    other = Home(home.root.parent / "other")
    other.ensure()
    await web.UnixSite(runner, str(other.socket)).start()
    try:
        await asyncio.to_thread(DaemonClient(other, tenant="acme").request, "GET", "/v1/status")
        await asyncio.to_thread(DaemonClient(other).request, "GET", "/v1/status")
    finally:
        await runner.cleanup()
    assert seen == ["acme", None]


@pytest.mark.parametrize("token", ["wrong", TOKEN + "x"])
async def test_http_refused_token(remote: tuple[web.Application, str], token: str) -> None:
    _, url = remote
    with pytest.raises(PlatError) as info:
        await asyncio.to_thread(remote_client(url, token=token).request, "GET", "/v1/status")
    exc = info.value
    assert exc.message == "the token was refused: check PLAT_TOKEN"
    assert exc.status == 401
    assert exc.code == "unauthorized"
    assert exc.hint is not None and "plat tenant create" in exc.hint


async def test_http_refused_token_on_a_stream(remote: tuple[web.Application, str]) -> None:
    _, url = remote
    client = remote_client(url, token="nope")
    with pytest.raises(PlatError, match="the token was refused"):
        await asyncio.to_thread(lambda: list(client.stream("POST", "/v1/events", {"count": 1})))


async def test_http_json_error_keeps_message_and_hint(remote: tuple[web.Application, str]) -> None:
    _, url = remote
    with pytest.raises(PlatError) as info:
        await asyncio.to_thread(remote_client(url).request, "GET", "/v1/missing")
    assert (info.value.status, info.value.code) == (404, "not_found")
    assert info.value.message == "no function named 'ghost'"
    assert info.value.hint == "see `plat ls`"


async def test_http_stream_yields_events_as_they_arrive(
    remote: tuple[web.Application, str],
) -> None:
    app, url = remote
    it = remote_client(url).stream("POST", "/v1/slow-events", {})
    assert await asyncio.to_thread(next, it) == {"event": "first"}
    app[RELEASE].set()
    assert await asyncio.to_thread(list, it) == [{"event": "last"}]


async def test_http_stream_in_order(remote: tuple[web.Application, str]) -> None:
    _, url = remote
    client = remote_client(url)
    got = await asyncio.to_thread(lambda: list(client.stream("POST", "/v1/events", {"count": 3})))
    assert [e.get("n") for e in got] == [0, 1, 2, None]


async def test_upload_sends_raw_bytes_and_streams_the_answer(
    remote: tuple[web.Application, str],
) -> None:
    app, url = remote
    data = bytes(range(256)) * (5 * 4096 + 7)  # ~5 MiB, not a multiple of the chunk size
    sent: list[int] = []

    def run() -> list[dict[str, object]]:
        body = io.BytesIO(data)
        return list(
            remote_client(url, tenant="acme").upload(
                "POST",
                "/v1/upload?force=1",
                body,
                len(data),
                "application/gzip",
                progress=sent.append,
            )
        )

    got = await asyncio.to_thread(run)
    assert got == [
        {"type": "received", "bytes": len(data), "content_type": "application/gzip"},
        {"type": "query", "force": "1"},
        {"type": "head", "sum": sum(data[:4096])},
    ]
    assert sent == sorted(sent) and sent[-1] == len(data) and len(sent) > 1
    path, headers = app[SEEN][-1]
    assert path == "/api/v1/upload"
    assert headers["Content-Length"] == str(len(data))
    assert headers["X-Plat-Tenant"] == "acme"


async def test_upload_answered_early_raises_the_answer(remote: tuple[web.Application, str]) -> None:
    _, url = remote
    data = b"\0" * (48 * 1024**2)  # more than the server buffers before it answers

    def run() -> None:
        list(
            remote_client(url).upload(
                "POST", "/v1/too-large", io.BytesIO(data), len(data), "application/gzip"
            )
        )

    with pytest.raises(PlatError) as info:
        await asyncio.to_thread(run)
    assert info.value.status == 413
    assert "larger than 1 MiB" in info.value.message


async def test_upload_of_a_short_body_is_an_error(remote: tuple[web.Application, str]) -> None:
    _, url = remote

    def run() -> None:
        list(remote_client(url).upload("POST", "/v1/upload", io.BytesIO(b"abc"), 10, "x/y"))

    with pytest.raises(PlatError, match="ended after 3 of 10 bytes"):
        await asyncio.to_thread(run)


async def test_upload_over_the_socket(home: Home, server: web.Application) -> None:
    # The socket app has no upload route: the answer is a 404 PlatError like any other.
    client = DaemonClient(home)
    with pytest.raises(PlatError) as info:
        await asyncio.to_thread(
            lambda: list(client.upload("POST", "/v1/nope", io.BytesIO(b"x"), 1, "x/y"))
        )
    assert info.value.status == 404


async def test_not_plat_answers(remote: tuple[web.Application, str]) -> None:
    _, url = remote
    client = remote_client(url)
    with pytest.raises(PlatError) as info:
        await asyncio.to_thread(client.request, "GET", "/v1/html-404")
    assert info.value.status == 404
    assert info.value.message.startswith("<html> <body> Not Found x")
    assert len(info.value.message) <= 300
    assert info.value.hint == f"is {url} a plat gateway? (PLAT_URL)"

    with pytest.raises(DaemonError) as garbled:
        await asyncio.to_thread(client.request, "GET", "/v1/html-ok")
    assert "not JSON" in garbled.value.message
    assert garbled.value.hint is not None and "plat gateway" in garbled.value.hint

    with pytest.raises(PlatError) as redirect:
        await asyncio.to_thread(client.request, "GET", "/v1/moved")
    assert "redirects to https://plat.example/api/v1/status" in redirect.value.message


async def test_connection_dropped_mid_stream(remote: tuple[web.Application, str]) -> None:
    _, url = remote
    it = remote_client(url).stream("GET", "/v1/broken")
    assert await asyncio.to_thread(next, it) == {"event": "first"}
    with pytest.raises(DaemonError) as info:
        await asyncio.to_thread(list, it)
    assert info.value.message.startswith(f"the connection to {url} broke")


def test_refused_connection_names_the_url() -> None:
    port = free_port()  # nothing listens there
    url = f"http://127.0.0.1:{port}"
    client = remote_client(url)
    message, hint = daemon_error(lambda: client.request("GET", "/v1/status"))
    assert message == f"nothing answers at {url} (connection refused)"
    assert hint is not None and "PLAT_URL" in hint
    message, _ = daemon_error(lambda: list(client.stream("GET", "/v1/status")))
    assert "connection refused" in message
    assert client.ping() is False


def test_unknown_host_names_the_host() -> None:
    client = remote_client("http://no-such-host.invalid:8080")
    message, hint = daemon_error(lambda: client.request("GET", "/v1/status"))
    assert "no-such-host.invalid" in message
    assert hint is not None and "PLAT_URL" in hint


def test_silent_server_times_out() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # accepts connections, never answers
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        client = DaemonClient(timeout=0.3, url=url, token=TOKEN)
        message, _ = daemon_error(lambda: client.request("GET", "/v1/status"))
    assert message == f"{url} did not answer within 0.3 s"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("127.0.0.1:8080", "has no scheme"),
        ("localhost:8080", "has no scheme"),
        ("ftp://host", "must be http or https"),
        ("http://", "names no host"),
        ("http://host:port", "the port is not a number"),
        ("http://host:99999", "the port is not a number"),
        ("http://admin:pw@host", "holds credentials"),
        ("http://host/?x=1", "no query or fragment"),
        ("   ", "is empty"),
    ],
)
def test_malformed_urls(url: str, says: str) -> None:
    with pytest.raises(PlatError) as info:
        DaemonClient(url=url, token=TOKEN)
    assert says in info.value.message
    assert "PLAT_URL" in info.value.message


def test_no_scheme_hint_shows_the_fix() -> None:
    with pytest.raises(PlatError) as info:
        Endpoint.parse("127.0.0.1:8080")
    assert info.value.hint == "write it as http://127.0.0.1:8080"


@pytest.mark.parametrize(
    ("url", "normal", "prefix", "port", "tls"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080", "", 8080, False),
        ("HTTP://Host:80/plat/", "http://Host:80/plat", "/plat", 80, False),
        ("https://plat.example", "https://plat.example", "", None, True),
        ("http://[::1]:9000/a/b", "http://[::1]:9000/a/b", "/a/b", 9000, False),
    ],
)
def test_endpoints(url: str, normal: str, prefix: str, port: int | None, tls: bool) -> None:
    endpoint = Endpoint.parse(url)
    assert (endpoint.url, endpoint.prefix, endpoint.port) == (normal, prefix, port)
    conn = endpoint.connection(1.0)
    assert isinstance(conn, http.client.HTTPSConnection) is tls


def test_url_without_token_or_with_a_bad_tenant() -> None:
    with pytest.raises(PlatError, match="needs a token"):
        DaemonClient(url="http://127.0.0.1:8080", token=None)
    with pytest.raises(PlatError, match="is not a tenant name"):
        DaemonClient(url="http://127.0.0.1:8080", token=TOKEN, tenant="Acme Corp")
    with pytest.raises(ValueError):
        DaemonClient()


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


async def test_https_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    runner, port = await serve_tcp(make_http_app(), ssl_context=context)
    try:
        client = remote_client(f"https://127.0.0.1:{port}")
        # Not trusted: a clear TLS error.
        with pytest.raises(DaemonError) as info:
            await asyncio.to_thread(client.request, "GET", "/v1/status")
        assert info.value.message.startswith(f"TLS with https://127.0.0.1:{port} failed")
        assert "CERTIFICATE_VERIFY_FAILED" in info.value.message
        # Trusted (the usual variable for an extra CA): it works like http.
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        got = await asyncio.to_thread(client.request, "GET", "/v1/echo")
        assert got["path"] == "/api/v1/echo"
    finally:
        await runner.cleanup()
