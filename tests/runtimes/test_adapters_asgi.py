"""ASGI apps served by the Python shim: a real FastAPI app (path parameters, a
pydantic body, a lifespan whose state the requests see, url_for under the
function's prefix), the http scope, streamed bodies, the lifespan's startup
(before the port opens; a failure stops the start with the app's message) and
shutdown (on SIGTERM), and apps that misbehave: a clear 500 or a cut body,
never a dead instance."""

from __future__ import annotations

import signal
import socket
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtimes import ServerProcess, port_open
from tests.runtimes.adapters import raw_request, read_head, serve_app, timed_chunks

pytestmark = pytest.mark.timeout(60)

FASTAPI_APP = textwrap.dedent(
    """
    import asyncio
    from contextlib import asynccontextmanager

    from fastapi import BackgroundTasks, FastAPI, Request
    from fastapi.responses import StreamingResponse
    from pydantic import BaseModel


    @asynccontextmanager
    async def lifespan(app):
        await asyncio.sleep(0.5)  # the port must not open before this is done
        print("lifespan startup done", flush=True)
        yield {"greeting": "set at startup"}
        print("lifespan shutdown done", flush=True)


    app = FastAPI(lifespan=lifespan)


    class Order(BaseModel):
        item: str
        quantity: int


    @app.get("/items/{item_id}")
    async def read_item(item_id: int, request: Request):
        return {
            "id": item_id,
            "greeting": request.state.greeting,
            "url": str(request.url_for("read_item", item_id=item_id)),
            "client": request.client.host if request.client else None,
        }


    @app.post("/orders")
    async def order(order: Order):
        return {"item": order.item, "total": order.quantity * 2}


    def later(word: str) -> None:
        print(f"background {word}", flush=True)


    @app.get("/background")
    async def background(tasks: BackgroundTasks):
        tasks.add_task(later, "ran")
        return "answered"


    @app.get("/stream")
    async def stream():
        async def chunks():
            for word in ("first", "second", "third"):
                yield word + "\\n"
                await asyncio.sleep(0.4)
        return StreamingResponse(chunks(), media_type="text/plain")


    @app.get("/endless")
    async def endless():
        async def chunks():
            sent = 0
            while True:
                yield b"x" * 1024
                sent += 1
                print(f"sent {sent}", flush=True)
                await asyncio.sleep(0.02)
        return StreamingResponse(chunks())
    """
)

# A bare ASGI app without lifespan support: each path one part of the contract.
RAW_APP = textwrap.dedent(
    """
    import asyncio
    import json


    async def app(scope, receive, send):
        assert scope["type"] == "http", "no lifespan here"
        path = scope["path"].removeprefix(scope["root_path"])
        if path.startswith("/scope"):
            message = await receive()
            body = {k: scope[k] for k in ("http_version", "method", "scheme", "path",
                    "root_path", "client", "server")}
            body["raw_path"] = scope["raw_path"].decode("latin-1")
            body["query_string"] = scope["query_string"].decode()
            body["headers"] = [[n.decode(), v.decode()] for n, v in scope["headers"]]
            body["body"] = message["body"].decode("latin-1")
            body["spec"] = scope["asgi"]["spec_version"]
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": json.dumps(body).encode()})
            return
        if path == "/binary":
            message = await receive()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": message["body"][::-1]})
            return
        if path == "/disconnect":
            await receive()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"done"})
            after = await receive()
            print(f"after the response: {after['type']}", flush=True)
            return
        if path == "/endless":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            try:
                while True:
                    await send({"type": "http.response.body", "body": b"x" * 1024,
                                "more_body": True})
                    await asyncio.sleep(0.01)
            except OSError as exc:
                message = await receive()
                print(f"send raised {type(exc).__name__}, receive: {message['type']}",
                      flush=True)
            return
        if path == "/raise":
            raise ValueError("the app broke 9876")
        if path == "/raise-midway":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"part", "more_body": True})
            raise RuntimeError("failed in the middle of the body")
        if path == "/nothing":
            return
        if path == "/body-first":
            await send({"type": "http.response.body", "body": b"x"})
            return
        if path == "/bad-status":
            await send({"type": "http.response.start", "status": 1000, "headers": []})
            return
        if path == "/str-headers":
            await send({"type": "http.response.start", "status": 200, "headers": [("a", "b")]})
            return
        if path == "/bad-header":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"x-bad", b"a\\r\\ninjected: 1")]})
            return
        if path == "/no-body":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            return
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": path.encode()})
    """
)


@pytest.fixture(scope="module")
def fastapi_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("fastapi") / "app"
    with serve_app(folder, {"main.py": FASTAPI_APP}, "main:app", PLAT_FUNCTION="shop") as s:
        yield s


@pytest.fixture(scope="module")
def raw_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("asgi") / "app"
    with serve_app(folder, {"asgi.py": RAW_APP}, "asgi:app") as server:
        yield server


def test_fastapi_path_parameter_lifespan_state_and_url_for(fastapi_app: ServerProcess) -> None:
    res = fastapi_app.request(
        "GET",
        "/items/7",
        headers={"X-Forwarded-Host": "127.0.0.1:8080", "X-Forwarded-For": "192.0.2.5"},
    )
    assert res.status == 200, res.text
    assert res.json() == {
        "id": 7,
        "greeting": "set at startup",
        "url": "http://127.0.0.1:8080/function/shop/items/7",
        "client": "192.0.2.5",
    }
    assert fastapi_app.request("GET", "/items/seven").status == 422


def test_fastapi_pydantic_body(fastapi_app: ServerProcess) -> None:
    body = '{"item": "tea", "quantity": 3}'
    res = fastapi_app.request("POST", "/orders", body, {"Content-Type": "application/json"})
    assert res.json() == {"item": "tea", "total": 6}
    bad = fastapi_app.request(
        "POST", "/orders", '{"item": 1}', {"Content-Type": "application/json"}
    )
    assert bad.status == 422
    assert "quantity" in bad.text
    assert fastapi_app.request("POST", "/orders", b"not json").status == 422
    # FastAPI itself fails to report undecodable bytes (its own 500); the instance lives on.
    assert fastapi_app.request("POST", "/orders", b"\xff" * 10_000).status in (422, 500)
    again = fastapi_app.request("POST", "/orders", body, {"Content-Type": "application/json"})
    assert again.status == 200


def test_fastapi_background_task_runs_after_the_answer(fastapi_app: ServerProcess) -> None:
    assert fastapi_app.request("GET", "/background").json() == "answered"
    assert "background ran" in fastapi_app.wait_output("background ran")


def test_a_streamed_body_comes_as_it_is_made(fastapi_app: ServerProcess) -> None:
    started = time.monotonic()
    with raw_request(fastapi_app.port, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n") as sock:
        chunks, complete = timed_chunks(sock)
    assert complete
    assert b"".join(c for _, c in chunks) == b"first\nsecond\nthird\n"
    assert chunks[0][0] - started < 0.35
    assert chunks[-1][0] - chunks[0][0] > 0.6


def test_a_client_gone_midway_stops_the_stream(fastapi_app: ServerProcess) -> None:
    sock = raw_request(fastapi_app.port, "GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
    read_head(sock)
    sock.recv(4096)
    sock.close()

    def sent() -> int:
        return sum(line.startswith("sent ") for line in fastapi_app.stdout.splitlines())

    time.sleep(1.0)  # the next send after the hang-up raises: the stream stops
    stopped_at = sent()
    time.sleep(0.5)
    assert sent() == stopped_at < 100
    assert fastapi_app.request("GET", "/items/1").status == 200


def test_send_raises_once_the_client_is_gone(raw_app: ServerProcess) -> None:
    sock = raw_request(raw_app.port, "GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
    read_head(sock)
    sock.recv(4096)
    sock.close()
    out = raw_app.wait_output("send raised", timeout=10)
    assert "send raised ClientDisconnected, receive: http.disconnect" in out
    assert raw_app.request("GET", "/scope").status == 200


def test_the_http_scope(raw_app: ServerProcess) -> None:
    res = raw_app.request(
        "PUT",
        "/scope/a%20b?x=1&y=%2F",
        body="sent",
        headers={
            "X-Forwarded-For": "198.51.100.7",
            "X-Forwarded-Host": "example.test:8443",
            "X-Forwarded-Proto": "https",
            "X-Twice": "one",
        },
    )
    scope = res.json()
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "PUT"
    assert scope["scheme"] == "https"
    assert scope["root_path"] == "/function/shimtest"
    assert scope["path"] == "/function/shimtest/scope/a b"
    assert scope["raw_path"] == "/function/shimtest/scope/a%20b"
    assert scope["query_string"] == "x=1&y=%2F"
    assert scope["client"] == ["198.51.100.7", 0]
    assert scope["server"] == ["example.test", 8443]
    assert ["x-twice", "one"] in scope["headers"]
    assert ["host", "example.test:8443"] in scope["headers"]
    assert scope["body"] == "sent"
    assert scope["spec"] == "2.4"


def test_binary_bodies_both_ways(raw_app: ServerProcess) -> None:
    data = bytes(range(256)) * 2048
    assert raw_app.request("POST", "/binary", body=data).body == data[::-1]


def test_receive_says_disconnect_once_the_response_is_sent(raw_app: ServerProcess) -> None:
    assert raw_app.request("GET", "/disconnect").body == b"done"
    assert "after the response: http.disconnect" in raw_app.wait_output("after the response")


def test_huge_headers(raw_app: ServerProcess) -> None:
    headers = {f"X-H-{i}": "v" * 500 for i in range(100)}
    assert len(raw_app.request("GET", "/scope", headers=headers).json()["headers"]) > 100
    assert raw_app.request("GET", "/scope", headers={"X-Huge": "v" * 70_000}).status == 431


@pytest.mark.parametrize(
    ("path", "error", "logged"),
    [
        ("/raise", "handler_error", "the app broke 9876"),
        ("/nothing", "invalid_response", "returned without sending a response"),
        ("/no-body", "invalid_response", "returned without sending its body"),
        ("/body-first", "invalid_response", "expected http.response.start"),
        ("/bad-status", "invalid_response", "from 100 to 599"),
        ("/str-headers", "invalid_response", "(bytes, bytes) pairs"),
        ("/bad-header", "invalid_response", "contains a line break"),
    ],
)
def test_misbehaving_apps_get_a_clear_500(
    raw_app: ServerProcess, path: str, error: str, logged: str
) -> None:
    res = raw_app.request("GET", path)
    assert res.status == 500
    assert res.json()["error"] == error
    assert "injected" not in res.headers
    assert logged in raw_app.wait_output(logged, stream="stderr")
    assert raw_app.request("GET", "/scope").status == 200


def test_an_app_that_fails_midway_is_cut(raw_app: ServerProcess) -> None:
    with raw_request(raw_app.port, "GET /raise-midway HTTP/1.1\r\nHost: x\r\n\r\n") as sock:
        chunks, complete = timed_chunks(sock)
    assert not complete
    assert b"".join(c for _, c in chunks) == b"part"
    assert "failed in the middle" in raw_app.wait_output("failed in the middle", stream="stderr")
    assert raw_app.request("GET", "/scope").status == 200


def test_an_app_without_lifespan_is_served_without(raw_app: ServerProcess) -> None:
    assert "does not support lifespan" in raw_app.wait_output("does not support lifespan")


def test_the_port_opens_after_startup_and_shutdown_runs_on_sigterm(tmp_path: Path) -> None:
    with serve_app(tmp_path / "app", {"main.py": FASTAPI_APP}, "main:app", ready=False) as server:
        deadline = time.monotonic() + 15
        while not port_open(server.port) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "lifespan startup done" in server.stdout  # done before anyone could connect
        assert server.request("GET", "/items/1").json()["greeting"] == "set at startup"
        server.signal(signal.SIGTERM)
        assert server.wait_exit() == 0
        assert "lifespan shutdown done" in server.stdout


FAILING_STARTUP = textwrap.dedent(
    """
    from contextlib import asynccontextmanager
    from fastapi import FastAPI


    @asynccontextmanager
    async def lifespan(app):
        raise RuntimeError("database unreachable: 10.9.8.7")
        yield


    app = FastAPI(lifespan=lifespan)
    """
)


def test_a_failing_startup_fails_the_start_with_the_apps_message(tmp_path: Path) -> None:
    with serve_app(tmp_path / "app", {"main.py": FAILING_STARTUP}, "main:app", ready=False) as s:
        assert s.wait_exit() == 1
        assert not port_open(s.port)
        assert "startup failed" in s.stderr
        assert "database unreachable: 10.9.8.7" in s.stderr


def test_a_pool_instance_runs_the_lifespan_at_specialisation(tmp_path: Path) -> None:
    folder = tmp_path / "app"
    with serve_app(folder, {"main.py": FASTAPI_APP}, "handler.handle", PLAT_POOL_TOKEN="t0k") as s:
        assert "lifespan startup done" not in s.stdout
        payload = '{"function": "shop", "version": "v1", "handler": "main:app", "env": {}}'
        res = s.request("POST", "/.plat/specialize", payload, {"X-Plat-Pool-Token": "t0k"})
        assert res.status == 200, res.text
        assert "lifespan startup done" in s.stdout  # before the answer
        assert s.request("GET", "/items/2").json()["greeting"] == "set at startup"


def test_a_pool_instance_whose_startup_fails_answers_500(tmp_path: Path) -> None:
    folder = tmp_path / "app"
    with serve_app(folder, {"main.py": FAILING_STARTUP}, "x.y", PLAT_POOL_TOKEN="t0k") as s:
        payload = '{"function": "shop", "version": "v1", "handler": "main:app", "env": {}}'
        res = s.request("POST", "/.plat/specialize", payload, {"X-Plat-Pool-Token": "t0k"})
        assert res.status == 500
        assert "database unreachable" in res.json()["message"]
        assert s.request("GET", "/items/2").status == 503  # still serves nothing


def test_the_port_is_closed_while_a_slow_startup_runs(tmp_path: Path) -> None:
    source = FASTAPI_APP.replace("asyncio.sleep(0.5)", "asyncio.sleep(2)")
    with serve_app(tmp_path / "app", {"main.py": source}, "main:app", ready=False) as server:
        time.sleep(1.0)
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", server.port)) != 0
        server.wait_ready(timeout=15)
        assert "lifespan startup done" in server.stdout
