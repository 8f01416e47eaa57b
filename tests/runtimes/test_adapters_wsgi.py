"""WSGI apps served by the Python shim: a real Flask app with a blueprint and
``url_for``, the PEP 3333 environ, whole and streamed bodies, ``close()``, and
apps that misbehave (raise, answer what HTTP cannot carry, fail midway, are cut
off by their client): each a clear 500 or a cut body, never a dead instance."""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.runtimes import ServerProcess
from tests.runtimes.adapters import raw_request, read_head, serve_app, timed_chunks

pytestmark = pytest.mark.timeout(60)

FLASK_APP = textwrap.dedent(
    """
    from flask import Blueprint, Flask, request, url_for

    items = Blueprint("items", __name__, url_prefix="/items")


    @items.get("/<int:item_id>")
    def item(item_id):
        return {
            "id": item_id,
            "link": url_for("items.item", item_id=item_id),
            "external": url_for("items.item", item_id=item_id, _external=True),
            "remote": request.remote_addr,
            "tags": request.args.getlist("tag"),
        }


    app = Flask(__name__)
    app.register_blueprint(items)


    @app.post("/upload")
    def upload():
        data = request.get_data()
        return app.response_class(data[::-1], mimetype="application/octet-stream")
    """
)

# A bare WSGI app: each path exercises one part of the contract.
RAW_APP = textwrap.dedent(
    """
    import json
    import sys
    import time

    CLOSED = []


    class Body:
        def __init__(self, chunks, name):
            self.chunks, self.name = chunks, name

        def __iter__(self):
            for chunk in self.chunks:
                if chunk == "FAIL":
                    raise RuntimeError("failed in the middle of the body")
                if isinstance(chunk, float):
                    time.sleep(chunk)
                    continue
                yield chunk

        def close(self):
            print(f"closed {self.name}", flush=True)


    def app(environ, start_response):
        path = environ["PATH_INFO"]
        if path.startswith("/environ"):
            keys = [k for k in environ if k.isupper()]
            body = json.dumps({k: environ[k] for k in keys} | {
                "input": environ["wsgi.input"].read().decode("latin-1"),
                "scheme": environ["wsgi.url_scheme"],
                "multithread": environ["wsgi.multithread"],
                "call_id": environ["plat.context"].call_id,
            }).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        if path == "/stream":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return Body([b"first\\n", 0.4, b"second\\n", 0.4, b"third\\n"], "stream")
        if path == "/endless":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return Body([b"x" * 1024, 0.05] * 10_000, "endless")
        if path == "/fail-midway":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return Body([b"part one\\n", "FAIL"], "fail-midway")
        if path == "/sized":
            start_response("200 OK", [("Content-Length", "6")])
            return Body([b"abc", b"def"], "sized")
        if path == "/write":
            write = start_response("200 OK", [])
            write(b"written ")
            return [b"returned"]
        if path == "/raise":
            raise ValueError("the app broke 5678")
        if path == "/no-start":
            return [b"nobody called start_response"]
        if path == "/bad-status":
            start_response("OK", [])
            return [b""]
        if path == "/bad-header":
            start_response("200 OK", [("X-Bad", "a\\r\\nInjected: 1")])
            return [b""]
        if path == "/str-body":
            start_response("200 OK", [])
            return ["text, not bytes"]
        if path == "/slow":
            time.sleep(0.3)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [path.encode("latin-1")]
    """
)


@pytest.fixture(scope="module")
def flask_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("flask") / "app"
    with serve_app(folder, {"app.py": FLASK_APP}, "app:app", PLAT_FUNCTION="hello.acme") as s:
        yield s


@pytest.fixture(scope="module")
def raw_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("wsgi") / "app"
    with serve_app(folder, {"wsgi.py": RAW_APP}, "wsgi:app", PLAT_WORKERS="8") as server:
        yield server


def test_flask_url_for_points_back_through_the_gateway(flask_app: ServerProcess) -> None:
    res = flask_app.request(
        "GET",
        "/items/42?tag=a&tag=b",
        headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Host": "127.0.0.1:8080"},
    )
    assert res.status == 200, res.text
    assert res.json() == {
        "id": 42,
        "link": "/function/hello.acme/items/42",
        "external": "http://127.0.0.1:8080/function/hello.acme/items/42",
        "remote": "203.0.113.9",
        "tags": ["a", "b"],
    }
    assert flask_app.request("GET", "/items/nope").status == 404


def test_flask_under_host_routing_has_no_prefix(flask_app: ServerProcess) -> None:
    res = flask_app.request(
        "GET", "/items/1", headers={"X-Forwarded-Host": "hello.acme.localhost:8080"}
    )
    assert res.json()["external"] == "http://hello.acme.localhost:8080/items/1"


def test_flask_in_a_cluster_is_mounted_at_the_root(tmp_path: Path) -> None:
    """On Kubernetes nothing strips /function/<name>: the rendered PLAT_PREFIX=/
    mounts the app at the root, so its links carry no prefix."""
    folder = tmp_path / "app"
    with serve_app(
        folder, {"app.py": FLASK_APP}, "app:app", PLAT_FUNCTION="hello", PLAT_PREFIX="/"
    ) as server:
        res = server.request("GET", "/items/7", headers={"X-Forwarded-Host": "hello.example"})
    assert res.status == 200, res.text
    assert res.json()["link"] == "/items/7"
    assert res.json()["external"] == "http://hello.example/items/7"


def test_flask_binary_body_arrives_intact(flask_app: ServerProcess) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB, every byte value
    res = flask_app.request(
        "POST", "/upload", body=data, headers={"Content-Type": "application/octet-stream"}
    )
    assert res.status == 200
    assert res.body == data[::-1]
    assert res.headers["content-length"] == str(len(data))


def test_the_environ(raw_app: ServerProcess) -> None:
    res = raw_app.request(
        "POST",
        "/environ/%C3%A9?a=1&b=%20",
        body=b"payload",
        headers={
            "Content-Type": "text/plain",
            "X-Thing": "one",
            "X_Spoof": "underscored",
            "X-Forwarded-For": "198.51.100.7, 10.0.0.1",
            "X-Forwarded-Host": "example.test:8443",
            "X-Forwarded-Proto": "https",
            "X-Call-Id": "call-1",
        },
    )
    env = res.json()
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SCRIPT_NAME"] == "/function/shimtest"
    assert env["PATH_INFO"] == "/environ/\u00c3\u00a9"  # PEP 3333: bytes as latin-1
    assert env["QUERY_STRING"] == "a=1&b=%20"
    assert env["CONTENT_TYPE"] == "text/plain"
    assert env["CONTENT_LENGTH"] == "7"
    assert env["HTTP_X_THING"] == "one"
    assert "HTTP_X_SPOOF" not in env  # could pass for X-Spoof: dropped
    assert env["REMOTE_ADDR"] == "198.51.100.7"
    assert (env["HTTP_HOST"], env["SERVER_NAME"], env["SERVER_PORT"]) == (
        "example.test:8443",
        "example.test",
        "8443",
    )
    assert env["scheme"] == "https"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["input"] == "payload"
    assert env["multithread"] is True
    assert env["call_id"] == "call-1"


def test_many_large_headers_reach_the_app(raw_app: ServerProcess) -> None:
    headers = {f"X-Big-{i}": "v" * 500 for i in range(100)}  # ~50 KiB of headers
    env = raw_app.request("GET", "/environ", headers=headers).json()
    assert env["HTTP_X_BIG_99"] == "v" * 500
    too_big = {f"X-Big-{i}": "v" * 1000 for i in range(100)}
    assert raw_app.request("GET", "/environ", headers=too_big).status == 431
    assert raw_app.request("GET", "/environ").status == 200


def test_a_streamed_body_comes_chunk_by_chunk_then_close(raw_app: ServerProcess) -> None:
    started = time.monotonic()
    sock = raw_request(raw_app.port, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    with sock:
        chunks, complete = timed_chunks(sock)
    assert complete
    assert b"".join(c for _, c in chunks) == b"first\nsecond\nthird\n"
    assert chunks[0][0] - started < 0.35  # the first chunk did not wait for the rest
    assert chunks[-1][0] - chunks[0][0] > 0.6
    assert "closed stream" in raw_app.wait_output("closed stream")


def test_a_body_with_content_length_is_sent_whole(raw_app: ServerProcess) -> None:
    res = raw_app.request("GET", "/sized")
    assert (res.body, res.headers["content-length"]) == (b"abcdef", "6")
    assert "transfer-encoding" not in res.headers
    assert "closed sized" in raw_app.wait_output("closed sized")
    assert raw_app.request("GET", "/write").body == b"written returned"


def test_a_client_gone_midway_closes_the_iterable(raw_app: ServerProcess) -> None:
    sock = raw_request(raw_app.port, "GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
    read_head(sock)
    sock.recv(4096)
    sock.close()  # midway through an endless body
    assert "closed endless" in raw_app.wait_output("closed endless", timeout=10)
    assert raw_app.request("GET", "/environ").status == 200


def test_a_body_that_fails_midway_is_cut_and_logged(raw_app: ServerProcess) -> None:
    sock = raw_request(raw_app.port, "GET /fail-midway HTTP/1.1\r\nHost: x\r\n\r\n")
    with sock:
        chunks, complete = timed_chunks(sock)
    assert not complete  # no last chunk: the client knows the body is incomplete
    assert b"".join(c for _, c in chunks) == b"part one\n"
    stderr = raw_app.wait_output("failed in the middle", stream="stderr")
    assert "failed midway" in stderr
    assert "closed fail-midway" in raw_app.wait_output("closed fail-midway")
    assert raw_app.request("GET", "/environ").status == 200


@pytest.mark.parametrize(
    ("path", "error", "logged"),
    [
        ("/raise", "handler_error", "the app broke 5678"),
        ("/no-start", "invalid_response", "without calling start_response"),
        ("/bad-status", "invalid_response", "from 100 to 599"),
        ("/bad-header", "invalid_response", "contains a line break"),
        ("/str-body", "handler_error", "TypeError"),
    ],
)
def test_misbehaving_apps_get_a_clear_500(
    raw_app: ServerProcess, path: str, error: str, logged: str
) -> None:
    res = raw_app.request("GET", path)
    assert res.status == 500
    assert res.json()["error"] == error
    assert "Injected" not in json.dumps(res.headers)
    assert logged in raw_app.wait_output(logged, stream="stderr")
    assert raw_app.request("GET", "/environ").status == 200


def test_requests_run_in_parallel_threads(raw_app: ServerProcess) -> None:
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda _: raw_app.request("GET", "/slow").status, range(8)))
    assert statuses == [404] * 8
    assert time.monotonic() - started < 2.0  # 8 x 0.3 s one after another would be 2.4 s


def test_explicit_kind_serves_a_wsgi_app_detection_would_not_see(tmp_path: Path) -> None:
    source = "def make(env, respond):\n    respond('200 OK', [])\n    return [b'explicit']\n"
    with serve_app(tmp_path / "app", {"odd.py": source}, "odd:make", PLAT_ADAPTER="wsgi") as s:
        assert s.request("GET", "/").body == b"explicit"


def test_a_flask_app_is_never_imported_by_plain_functions(tmp_path: Path) -> None:
    source = (
        "import sys\n\ndef handle(event, context):\n"
        "    return sorted(m for m in ('flask', 'platshim.adapters.wsgi') if m in sys.modules)\n"
    )
    with serve_app(tmp_path / "app", {"handler.py": source}, "handler.handle") as s:
        assert s.request("GET", "/").json() == []
