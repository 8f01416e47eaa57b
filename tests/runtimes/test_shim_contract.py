"""The instance contract, held by each runtime's shim: a real subprocess over real HTTP.

Each test runs once per shim (tests/runtimes/shims.py); what only one runtime
has is tested in its own file (test_python_shim.py, test_node_shim.py).
"""

from __future__ import annotations

import email.utils
import http.client
import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from plat.scaffold import scaffold
from tests.runtimes import ServerProcess, port_open
from tests.runtimes.shims import KINDS, NODE, ShimKind, running, served

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(
    scope="module",
    params=[
        "python",
        pytest.param(
            "node", marks=pytest.mark.skipif(NODE is None, reason="node is not installed")
        ),
    ],
)
def kind(request: pytest.FixtureRequest) -> ShimKind:
    return KINDS[request.param]


@pytest.fixture(scope="module")
def shim(kind: ShimKind, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from served(kind, tmp_path_factory, kind.handler)


@pytest.fixture(scope="module")
def logshim(kind: ShimKind, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from served(kind, tmp_path_factory, kind.log_handler)


def test_startup_line_on_stdout(kind: ShimKind, shim: ServerProcess) -> None:
    stdout = shim.wait_output(f"plat-shim: {kind.name}")
    assert f"plat-shim: {kind.name}" in stdout
    assert "shimtest" in stdout


def test_scaffolded_handler_greets(kind: ShimKind, tmp_path: Path) -> None:
    scaffold(tmp_path / "hello", "hello", kind.name)
    with running(kind, tmp_path / "hello") as server:
        resp = server.request("POST", "/", b'{"name": "Ada"}', {"Content-Type": "application/json"})
        assert resp.status == 200
        assert resp.headers["content-type"] == "application/json"
        assert resp.json() == {"message": "Hello, Ada!"}
        assert server.request("POST", "/", b"").json() == {"message": "Hello, world!"}
        assert server.request("POST", "/", b"not json").json() == {"message": "Hello, world!"}
        assert server.request("GET", "/").json() == {"message": "Hello, world!"}
        assert server.request("POST", "/", b"[1, 2]").json() == {"message": "Hello, world!"}


def test_event_fields_reach_the_handler(kind: ShimKind, shim: ServerProcess) -> None:
    resp = shim.request(
        "PUT", "/echo/sub/x%20y?a=1&a=2&b=3", b'{"k": "v"}', {"X-Test": "yes", "X-Other": "o"}
    )
    assert resp.status == 200
    data = resp.json()
    assert data["method"] == "PUT"
    assert data["path"] == "/echo/sub/x y"
    assert data["query"] == {"a": "1", "b": "3"}
    assert data["all_a"] == ["1", "2"]
    assert data["header"] == "yes"
    assert data["body"] == '{"k": "v"}'
    assert data["json"] == {"k": "v"}
    assert data["function"] == "shimtest"
    assert data["hostname"] == socket.gethostname()
    for name, value in kind.echo_extras.items():
        assert data[name] == value, name


def test_root_path_is_slash(shim: ServerProcess) -> None:
    assert shim.request("GET", "/echo").json()["path"] == "/echo"
    assert shim.request("GET", "/?x=1").json() == {"unknown": "/"}


def test_status_code_dict(shim: ServerProcess) -> None:
    resp = shim.request("GET", "/status")
    assert resp.status == 201
    assert resp.headers["x-custom"] == "yes"
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == {"ok": True}
    resp = shim.request("GET", "/status-text")
    assert resp.status == 418
    assert resp.text == "teapot"
    assert resp.headers["content-type"].startswith("text/plain")


def test_return_value_types(shim: ServerProcess) -> None:
    resp = shim.request("GET", "/bytes")
    assert (resp.status, resp.body) == (200, b"\x00\x01\x02")
    assert resp.headers["content-type"] == "application/octet-stream"

    resp = shim.request("GET", "/none")
    assert (resp.status, resp.body) == (204, b"")

    resp = shim.request("GET", "/list")
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == [1, 2, 3]

    assert shim.request("GET", "/number").json() == 42

    resp = shim.request("GET", "/text")
    assert resp.text == "plain words"
    assert resp.headers["content-type"] == "text/plain; charset=utf-8"


@pytest.mark.parametrize(
    ("path", "detail"), [("/boom", "secret detail 1234"), ("/reject", "rejected detail")]
)
def test_handler_error_is_a_500_without_stack(
    kind: ShimKind, shim: ServerProcess, path: str, detail: str
) -> None:
    error = kind.errors[path]
    resp = shim.request("GET", path)
    assert resp.status == 500
    assert resp.json() == {
        "error": "handler_error",
        "message": f"the function raised {error}; see `plat logs`",
    }
    assert detail.encode() not in resp.body
    assert b"Traceback" not in resp.body
    stderr = shim.wait_output(f"{error}: {detail}", stream="stderr")
    assert kind.stack_marker in stderr
    assert f"{error}: {detail}" in stderr
    # the server is still fine afterwards
    assert shim.request("GET", "/text").status == 200


def test_invalid_return_values_are_500s(shim: ServerProcess) -> None:
    resp = shim.request("GET", "/bad-header")
    assert resp.status == 500
    assert resp.json()["error"] == "invalid_response"
    assert "injected" not in resp.headers
    resp = shim.request("GET", "/unserializable")
    assert resp.status == 500
    assert resp.json()["error"] == "invalid_response"


def test_probe_is_answered_without_calling_the_handler(shim: ServerProcess) -> None:
    before = int(shim.request("GET", "/calls").text)
    for path in ("/", "/boom", "/slow"):
        resp = shim.request("GET", path, headers={"X-Plat-Probe": "1"})
        assert resp.status == 200
        assert resp.json() == {"status": "ready"}
    after = int(shim.request("GET", "/calls").text)
    assert after == before + 1


def test_date_header_is_an_imf_fixdate_of_now(shim: ServerProcess) -> None:
    before = time.time()
    date = shim.request("GET", "/").headers["date"]
    after = time.time()
    parsed = email.utils.parsedate_to_datetime(date).timestamp()
    assert int(before) <= parsed <= after
    assert date == email.utils.formatdate(parsed, usegmt=True)


def test_keep_alive_two_requests_on_one_connection(kind: ShimKind, shim: ServerProcess) -> None:
    conn = shim.connection()
    try:
        conn.request("GET", "/text")
        first = conn.getresponse()
        assert first.read() == b"plain words"
        assert first.getheader("Connection") == kind.keep_alive_connection
        sock = conn.sock
        assert sock is not None
        conn.request("POST", "/echo", body=b"second")
        second = conn.getresponse()
        assert second.status == 200
        assert b"second" in second.read()
        assert conn.sock is sock  # http.client would have reconnected if the server closed
    finally:
        conn.close()


def _exchange(shim: ServerProcess, raw: bytes) -> bytes:
    """Everything the shim answers to ``raw`` until it closes the connection."""
    with socket.create_connection(("127.0.0.1", shim.port), timeout=5) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_pipelined_requests_are_answered_in_order(shim: ServerProcess) -> None:
    data = _exchange(
        shim,
        b"GET /text HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /bytes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert data.index(b"plain words") < data.index(b"\x00\x01\x02")
    assert b"Connection: close" in data


def test_chunked_request_body(shim: ServerProcess) -> None:
    conn = shim.connection()
    try:
        conn.request(
            "POST", "/echo", body=iter([b"hello ", b"chunked ", b"world"]), encode_chunked=True
        )
        resp = conn.getresponse()
        assert resp.status == 200
        assert json.loads(resp.read())["body"] == "hello chunked world"
    finally:
        conn.close()


def test_expect_100_continue(shim: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", shim.port), timeout=5) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        interim = sock.recv(1024)
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b"12345")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    # What came after the interim answer: the final one, whose body echoes ours.
    final = (interim + data).split(b"\r\n\r\n", 1)[1]
    assert json.loads(final.split(b"\r\n\r\n", 1)[1])["body"] == "12345"


def test_malformed_request_is_a_400(shim: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", shim.port), timeout=5) as sock:
        sock.sendall(b"NONSENSE\r\n\r\n")
        data = sock.recv(65536)
    assert data.startswith(b"HTTP/1.1 400 ")


def test_head_request_has_no_body(shim: ServerProcess) -> None:
    conn = shim.connection()
    try:
        conn.request("HEAD", "/text")
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("Content-Length") == str(len(b"plain words"))
        assert resp.read() == b""
    finally:
        conn.close()


def test_twenty_concurrent_requests(shim: ServerProcess) -> None:
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda _: shim.request("GET", "/slow"), range(20)))
    elapsed = time.monotonic() - started
    assert [r.status for r in results] == [200] * 20
    assert all(r.text == "slow done" for r in results)
    assert elapsed < 4.0, f"20 x 0.5 s handlers took {elapsed:.2f} s: not concurrent"


def test_handler_output_goes_to_the_process_streams(shim: ServerProcess) -> None:
    assert shim.request("GET", "/print").text == "printed"
    assert "to stdout from the handler" in shim.wait_output("to stdout from the handler")
    stderr = shim.wait_output("to stderr from the handler", stream="stderr")
    assert "to stderr from the handler" in stderr


def test_import_error_exits_non_zero_without_binding(kind: ShimKind, tmp_path: Path) -> None:
    folder = kind.write(tmp_path / "app", kind.broken_module)
    with running(kind, folder, ready=False) as server:
        # While the module is importing, nothing listens.
        deadline = time.monotonic() + 0.4
        while time.monotonic() < deadline:
            assert not port_open(server.port)
            time.sleep(0.05)
        assert server.wait_exit(timeout=10) != 0
        assert not port_open(server.port)
        assert "TypeError: broken at import" in server.stderr
        assert kind.stack_marker in server.stderr
        assert f"plat-shim: {kind.name}" not in server.stdout


def test_missing_handler_function_exits_non_zero(kind: ShimKind, tmp_path: Path) -> None:
    folder = kind.write(tmp_path / "app", kind.no_function_module)
    with running(kind, folder, ready=False) as server:
        assert server.wait_exit(timeout=10) != 0
        assert kind.no_function_message in server.stderr


def test_sigterm_finishes_in_flight_requests_and_exits_zero(kind: ShimKind, tmp_path: Path) -> None:
    with running(kind, kind.write(tmp_path / "app", kind.handler)) as server:
        idle = server.connection()  # an idle keep-alive connection must not hold up exit
        idle.request("GET", "/text")
        idle.getresponse().read()
        outcome: dict[str, object] = {}

        def slow() -> None:
            resp = server.request("GET", "/slow")
            outcome["status"] = resp.status
            outcome["body"] = resp.text
            outcome["connection"] = resp.headers.get("connection")

        thread = threading.Thread(target=slow)
        thread.start()
        time.sleep(0.15)
        server.signal(signal.SIGTERM)
        thread.join(timeout=10)
        assert outcome == {"status": 200, "body": "slow done", "connection": "close"}
        assert server.wait_exit(timeout=10) == 0
        assert not port_open(server.port)
        idle.close()


def test_connection_refused_after_sigterm_on_idle_shim(kind: ShimKind, tmp_path: Path) -> None:
    with running(kind, kind.write(tmp_path / "app", kind.handler)) as server:
        server.signal(signal.SIGTERM)
        assert server.wait_exit(timeout=5) == 0
        with pytest.raises(OSError):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=2)
            try:
                conn.request("GET", "/")
            finally:
                conn.close()


# --- call ids on log lines -----------------------------------------------------------------


def test_call_id_and_request_id_in_context(logshim: ServerProcess) -> None:
    def context(headers: dict[str, str]) -> Any:
        data = logshim.request("GET", "/context", headers=headers).json()
        return {"call_id": data["call_id"], "request_id": data["request_id"]}

    assert context({"X-Call-Id": "abc-123"}) == {"call_id": "abc-123", "request_id": "abc-123"}
    both = {"X-Call-Id": "c.1_x", "X-Request-Id": "req-9"}
    assert context(both) == {"call_id": "c.1_x", "request_id": "req-9"}
    assert context({}) == {"call_id": "", "request_id": ""}
    # Not a call id plat would send: ignored (and nothing is tagged with it).
    assert context({"X-Call-Id": "no spaces/allowed"}) == {"call_id": "", "request_id": ""}
    assert context({"X-Call-Id": "x" * 129}) == {"call_id": "", "request_id": ""}


def test_startup_line_is_untagged(kind: ShimKind, logshim: ServerProcess) -> None:
    lines = logshim.wait_lines(f"plat-shim: {kind.name}", 1)
    assert lines[0].startswith(f"plat-shim: {kind.name} ")


def test_output_of_a_call_is_tagged(logshim: ServerProcess) -> None:
    resp = logshim.request("GET", "/lines?m=t1", headers={"X-Call-Id": "abc-123"})
    assert resp.text == "ok"
    stdout = logshim.wait_lines("line2 t1", 1)
    assert "[call:abc-123] line1 t1" in stdout
    assert "[call:abc-123] line2 t1" in stdout
    assert "[call:abc-123] err t1" in logshim.wait_lines("err t1", 1, stream="stderr")


def test_output_without_call_id_is_untagged(logshim: ServerProcess) -> None:
    assert logshim.request("GET", "/lines?m=u1").text == "ok"
    assert logshim.request("GET", "/lines?m=u2", headers={"X-Call-Id": "bad id"}).text == "ok"
    stdout = logshim.wait_lines("line2 u2", 1)
    for line in ("line1 u1", "line2 u1", "line1 u2", "line2 u2"):
        assert line in stdout
    stderr = logshim.wait_lines("err u2", 1, stream="stderr")
    assert "err u1" in stderr
    assert "err u2" in stderr


def test_partial_and_multi_line_writes(kind: ShimKind, logshim: ServerProcess) -> None:
    assert logshim.request("GET", "/partial?m=p1", headers={"X-Call-Id": "p-1"}).text == "ok"
    # The line left unfinished is ended when the call returns: later output starts afresh.
    assert logshim.request("GET", "/lines?m=p2").text == "ok"
    stdout = logshim.wait_lines("line1 p2", 1)
    start = stdout.index("[call:p-1] multi1 p1")
    assert stdout[start : start + 7] == [
        "[call:p-1] multi1 p1",
        "[call:p-1] multi2 p1",
        "[call:p-1] held p1 joined",
        "[call:p-1] " + kind.partial_line.format(m="p1"),
        "[call:p-1] unfinished p1",
        "line1 p2",
        "line2 p2",
    ]
