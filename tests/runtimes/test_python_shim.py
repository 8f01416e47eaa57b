"""The Python shim as a real subprocess, exercised over real HTTP on loopback."""

from __future__ import annotations

import email.utils
import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from plat.scaffold import scaffold
from tests.runtimes import PYTHON_SHIM, ServerProcess, port_open, split_call_tag

pytestmark = pytest.mark.timeout(60)

HANDLER = textwrap.dedent(
    """
    import json
    import sys
    import time

    CALLS = 0


    def handle(event, context):
        global CALLS
        CALLS += 1
        path = event.path
        if path == "/calls":
            return str(CALLS)
        if path.startswith("/echo"):
            return {
                "method": event.method,
                "path": event.path,
                "query": dict(event.query),
                "all_a": event.query.getlist("a"),
                "header": event.headers.get("x-test"),
                "header_item": event.headers["X-TEST"] if "x-test" in event.headers else None,
                "missing": event.headers.get("x-missing", "default"),
                "body": event.body.decode(),
                "json": event.json,
                "function": context.function,
                "hostname": context.hostname,
            }
        if path == "/status":
            return {"statusCode": 201, "headers": {"X-Custom": "yes"}, "body": {"ok": True}}
        if path == "/status-text":
            return {"statusCode": "418", "body": "teapot"}
        if path == "/bytes":
            return b"\\x00\\x01\\x02"
        if path == "/none":
            return None
        if path == "/list":
            return [1, 2, 3]
        if path == "/number":
            return 42
        if path == "/text":
            return "plain words"
        if path == "/boom":
            raise ValueError("secret detail 1234")
        if path == "/bad-header":
            return {"statusCode": 200, "headers": {"X-Bad": "a\\r\\nInjected: 1"}, "body": "x"}
        if path == "/unserializable":
            return {"when": object()}
        if path == "/slow":
            time.sleep(0.5)
            return "slow done"
        if path == "/print":
            print("to stdout from the handler", flush=True)
            print("to stderr from the handler", file=sys.stderr, flush=True)
            return "printed"
        return {"unknown": path}
    """
)

ASYNC_HANDLER = textwrap.dedent(
    """
    import asyncio


    async def handle(event, context):
        await asyncio.sleep(0.2)
        return {"async": True, "path": event.path}
    """
)


def start(folder: Path, handler: str = "handler.handle", **env: str) -> ServerProcess:
    server = ServerProcess(
        [sys.executable, str(PYTHON_SHIM)],
        cwd=folder,
        logs=folder.parent / f"{folder.name}-logs",
        env={"PLAT_HANDLER": handler, "PLAT_FUNCTION": "shimtest", **env},
    )
    return server


def write_handler(folder: Path, source: str, name: str = "handler.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(source)
    return folder


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = write_handler(tmp_path_factory.mktemp("pyshim") / "app", HANDLER)
    server = start(folder)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_startup_line_on_stdout(shim: ServerProcess) -> None:
    stdout = shim.wait_output("plat-shim: python")
    assert "plat-shim: python" in stdout
    assert "shimtest" in stdout


def test_scaffolded_handler_greets(tmp_path: Path) -> None:
    scaffold(tmp_path / "hello", "hello", "python")
    server = start(tmp_path / "hello")
    try:
        server.wait_ready()
        resp = server.request("POST", "/", b'{"name": "Ada"}', {"Content-Type": "application/json"})
        assert resp.status == 200
        assert resp.headers["content-type"] == "application/json"
        assert resp.json() == {"message": "Hello, Ada!"}
        assert server.request("POST", "/", b"").json() == {"message": "Hello, world!"}
        assert server.request("POST", "/", b"not json").json() == {"message": "Hello, world!"}
        assert server.request("GET", "/").json() == {"message": "Hello, world!"}
        assert server.request("POST", "/", b"[1, 2]").json() == {"message": "Hello, world!"}
    finally:
        server.stop()


def test_event_fields_reach_the_handler(shim: ServerProcess) -> None:
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
    assert data["header_item"] == "yes"
    assert data["missing"] == "default"
    assert data["body"] == '{"k": "v"}'
    assert data["json"] == {"k": "v"}
    assert data["function"] == "shimtest"
    assert data["hostname"] == socket.gethostname()


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


def test_handler_exception_is_a_500_without_traceback(shim: ServerProcess) -> None:
    resp = shim.request("GET", "/boom")
    assert resp.status == 500
    assert resp.json() == {
        "error": "handler_error",
        "message": "the function raised ValueError; see `plat logs`",
    }
    assert b"secret detail" not in resp.body
    assert b"Traceback" not in resp.body
    stderr = shim.wait_output("ValueError: secret detail 1234", stream="stderr")
    assert "Traceback (most recent call last)" in stderr
    assert "ValueError: secret detail 1234" in stderr
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


HANGING_HANDLER = textwrap.dedent(
    """
    import threading

    RELEASE = threading.Event()

    def handle(event, context):
        if event.path == "/hang":
            RELEASE.wait()
        return "done"
    """
)


def test_probe_says_busy_once_every_worker_is_stuck(tmp_path: Path) -> None:
    """Calls whose clients gave up keep their threads; once none is free, the probe
    says so (503 busy), so the daemon can replace the instance."""
    folder = write_handler(tmp_path / "app", HANGING_HANDLER)
    server = start(folder, PLAT_WORKERS="2")
    try:
        server.wait_ready()
        probe = {"X-Plat-Probe": "1"}
        assert server.request("GET", "/", headers=probe).status == 200
        for _ in range(2):  # two callers that hang, then give up
            conn = server.connection()
            conn.timeout = 0.3
            conn.request("GET", "/hang")
            with pytest.raises(TimeoutError):
                conn.getresponse()
            conn.close()
        deadline = time.monotonic() + 5
        resp = server.request("GET", "/", headers=probe)
        while resp.status == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
            resp = server.request("GET", "/", headers=probe)
        assert resp.status == 503
        assert resp.headers["x-plat-status"] == "busy"
        assert resp.json()["status"] == "busy"
    finally:
        server.stop()


def test_date_header_is_an_imf_fixdate_of_now(shim: ServerProcess) -> None:
    before = time.time()
    date = shim.request("GET", "/").headers["date"]
    after = time.time()
    parsed = email.utils.parsedate_to_datetime(date).timestamp()
    assert int(before) <= parsed <= after
    assert date == email.utils.formatdate(parsed, usegmt=True)


def test_shim_import_leaves_out_email_utils() -> None:
    # email.utils costs ~12 ms of every cold start; the shim writes its Date itself.
    code = "import sys, plat_shim; print('email' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-P", "-S", "-c", code],
        cwd=PYTHON_SHIM.parent,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(PYTHON_SHIM.parent)},
    )
    assert out.stdout.strip() == "False"


def test_keep_alive_two_requests_on_one_connection(shim: ServerProcess) -> None:
    conn = shim.connection()
    try:
        conn.request("GET", "/text")
        first = conn.getresponse()
        assert first.read() == b"plain words"
        assert first.getheader("Connection") is None
        sock = conn.sock
        assert sock is not None
        conn.request("POST", "/echo", body=b"second")
        second = conn.getresponse()
        assert second.status == 200
        assert b"second" in second.read()
        assert conn.sock is sock  # http.client would have reconnected if the server closed
    finally:
        conn.close()


def test_pipelined_requests_are_answered_in_order(shim: ServerProcess) -> None:
    raw = (
        b"GET /text HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /list HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", shim.port), timeout=5) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert data.index(b"plain words") < data.index(b"[1, 2, 3]")
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
    assert b'"body": "12345"' in data


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


def test_async_handler(tmp_path: Path) -> None:
    folder = write_handler(tmp_path / "app", ASYNC_HANDLER, "fn.py")
    server = start(folder, handler="fn.handle")
    try:
        server.wait_ready()
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=10) as pool:
            results = list(pool.map(lambda _: server.request("GET", "/a"), range(10)))
        assert all(r.json() == {"async": True, "path": "/a"} for r in results)
        assert time.monotonic() - started < 1.8
    finally:
        server.stop()


def test_import_error_exits_non_zero_without_binding(tmp_path: Path) -> None:
    folder = write_handler(
        tmp_path / "app", "import time\ntime.sleep(0.6)\nraise RuntimeError('broken at import')\n"
    )
    server = start(folder)
    try:
        # While the module is importing, nothing listens.
        deadline = time.monotonic() + 0.4
        while time.monotonic() < deadline:
            assert not port_open(server.port)
            time.sleep(0.05)
        assert server.wait_exit(timeout=10) != 0
        assert not port_open(server.port)
        assert "RuntimeError: broken at import" in server.stderr
        assert "Traceback" in server.stderr
        assert "plat-shim: python" not in server.stdout
    finally:
        server.stop()


def test_missing_handler_function_exits_non_zero(tmp_path: Path) -> None:
    folder = write_handler(tmp_path / "app", "def other(event, context):\n    return 1\n")
    server = start(folder)
    try:
        assert server.wait_exit(timeout=10) != 0
        assert "has no attribute 'handle'" in server.stderr
    finally:
        server.stop()


def test_sigterm_finishes_in_flight_requests_and_exits_zero(tmp_path: Path) -> None:
    folder = write_handler(tmp_path / "app", HANDLER)
    server = start(folder)
    try:
        server.wait_ready()
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
    finally:
        server.stop()


def test_connection_refused_after_sigterm_on_idle_shim(tmp_path: Path) -> None:
    folder = write_handler(tmp_path / "app", HANDLER)
    server = start(folder)
    try:
        server.wait_ready()
        server.signal(signal.SIGTERM)
        assert server.wait_exit(timeout=5) == 0
        with pytest.raises(OSError):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=2)
            try:
                conn.request("GET", "/")
            finally:
                conn.close()
    finally:
        server.stop()


# --- call ids on log lines -----------------------------------------------------------------

LOG_HANDLER = textwrap.dedent(
    """
    import logging
    import sys
    import time

    # A handler made at import time must write through the shim's tagging too.
    logging.basicConfig(format="%(levelname)s %(message)s")
    log = logging.getLogger("fn")
    # No handler and no propagation: logging's last-resort handler writes to sys.stderr.
    quiet = logging.getLogger("quiet")
    quiet.propagate = False


    def handle(event, context):
        path = event.path
        m = event.query.get("m", "")
        if path == "/context":
            return {"call_id": context.call_id, "request_id": context.request_id}
        if path == "/lines":
            print(f"line1 {m}")
            print(f"line2 {m}")
            sys.stderr.write(f"err {m}\\n")
            return "ok"
        if path == "/whoami":
            me = context.call_id or "none"
            for n in range(3):
                sys.stdout.write(f"who={me} ")
                time.sleep(0.005)
                print("n", n, "id", me)
            return me
        if path == "/partial":
            sys.stdout.write(f"multi1 {m}\\nmulti2 {m}\\n")
            sys.stdout.write(f"held {m} ")
            sys.stdout.write("joined\\n")
            sys.stdout.writelines([f"flushed {m} "])
            sys.stdout.flush()
            sys.stdout.write("continued\\n")
            sys.stdout.write(f"unfinished {m}")
            return "ok"
        if path == "/logging":
            log.warning("configured %s", m)
            quiet.warning("last resort %s", m)
            return "ok"
        if path == "/boom":
            raise ValueError(f"boom {m}")
        if path == "/streams":
            return {
                name: {
                    "fileno": stream.fileno(),
                    "isatty": stream.isatty(),
                    "encoding": stream.encoding,
                    "buffer": stream.buffer is not None,
                }
                for name, stream in (("stdout", sys.stdout), ("stderr", sys.stderr))
            }
        return {"unknown": path}
    """
)

ASYNC_LOG_HANDLER = textwrap.dedent(
    """
    import asyncio


    async def handle(event, context):
        me = context.call_id or "none"
        print(f"before id={me}")
        await asyncio.sleep(0.05)
        await asyncio.to_thread(print, f"thread id={me}")
        print(f"after id={me}")
        return me
    """
)

_IDS_IN_TEXT = re.compile(r"(?:who=|id[= ])(\S+)")


def check_own_tags(lines: list[str], *markers: str) -> list[tuple[str | None, str]]:
    """(tag, text) of the lines containing a marker, after checking that a tagged line
    names only its own call, and an untagged one only calls without an id ("none").

    Untagged output of concurrent calls may interleave as it always could; only
    complete lines of calls with an id are promised to stay whole.
    """
    found = []
    for line in lines:
        if not any(marker in line for marker in markers):
            continue
        call_id, text = split_call_tag(line)
        ids = set(_IDS_IN_TEXT.findall(text))
        if call_id is None:
            assert all(name.startswith("none") for name in ids), f"untagged: {line!r}"
        else:
            assert ids == {call_id}, f"line tagged {call_id!r}: {line!r}"
        found.append((call_id, text))
    return found


@pytest.fixture(scope="module")
def logshim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = write_handler(tmp_path_factory.mktemp("pylogs") / "app", LOG_HANDLER)
    # As in the image: unbuffered, so each write is a system call and threads interleave.
    server = start(folder, PYTHONUNBUFFERED="1")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_call_id_and_request_id_in_context(logshim: ServerProcess) -> None:
    def context(headers: dict[str, str]) -> Any:
        return logshim.request("GET", "/context", headers=headers).json()

    assert context({"X-Call-Id": "abc-123"}) == {"call_id": "abc-123", "request_id": "abc-123"}
    both = {"X-Call-Id": "c.1_x", "X-Request-Id": "req-9"}
    assert context(both) == {"call_id": "c.1_x", "request_id": "req-9"}
    assert context({}) == {"call_id": "", "request_id": ""}
    # Not a call id plat would send: ignored (and nothing is tagged with it).
    assert context({"X-Call-Id": "no spaces/allowed"}) == {"call_id": "", "request_id": ""}
    assert context({"X-Call-Id": "x" * 129}) == {"call_id": "", "request_id": ""}


def test_startup_line_is_untagged(logshim: ServerProcess) -> None:
    lines = logshim.wait_lines("plat-shim: python", 1)
    assert lines[0].startswith("plat-shim: python ")


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


def test_partial_and_multi_line_writes(logshim: ServerProcess) -> None:
    assert logshim.request("GET", "/partial?m=p1", headers={"X-Call-Id": "p-1"}).text == "ok"
    # The line left unfinished is ended when the call returns: later output starts afresh.
    assert logshim.request("GET", "/lines?m=p2").text == "ok"
    stdout = logshim.wait_lines("line1 p2", 1)
    start = stdout.index("[call:p-1] multi1 p1")
    assert stdout[start : start + 7] == [
        "[call:p-1] multi1 p1",
        "[call:p-1] multi2 p1",
        "[call:p-1] held p1 joined",
        "[call:p-1] flushed p1 continued",
        "[call:p-1] unfinished p1",
        "line1 p2",
        "line2 p2",
    ]


def test_logging_during_a_call_is_tagged(logshim: ServerProcess) -> None:
    assert logshim.request("GET", "/logging?m=l1", headers={"X-Call-Id": "log-1"}).text == "ok"
    stderr = logshim.wait_lines("last resort l1", 1, stream="stderr")
    assert "[call:log-1] WARNING configured l1" in stderr
    assert "[call:log-1] last resort l1" in stderr


def test_handler_traceback_is_tagged(logshim: ServerProcess) -> None:
    resp = logshim.request("GET", "/boom?m=b1", headers={"X-Call-Id": "boom-1"})
    assert resp.status == 500
    stderr = logshim.wait_lines("ValueError: boom b1", 1, stream="stderr")
    first = stderr.index("[call:boom-1] plat-shim: the handler raised ValueError on GET /boom")
    last = stderr.index("[call:boom-1] ValueError: boom b1")
    report = stderr[first : last + 1]
    assert "[call:boom-1] Traceback (most recent call last):" in report
    assert len(report) >= 4
    assert all(split_call_tag(line)[0] == "boom-1" for line in report), report


def test_concurrent_sync_calls_tag_their_own_lines(logshim: ServerProcess) -> None:
    ids = [f"conc-{n}" for n in range(10)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        calls = [*ids, "", ""]  # two calls without a call id among them
        results = list(
            pool.map(
                lambda call_id: logshim.request(
                    "GET", "/whoami", headers={"X-Call-Id": call_id} if call_id else {}
                ),
                calls,
            )
        )
    assert [r.text for r in results] == [*ids, "none", "none"]
    lines = logshim.wait_lines("who=conc-", 30)
    # The untagged calls' partial lines may be cut by tagged lines (and their rest go on
    # a line of its own); the lines of the tagged calls stay whole.
    found = check_own_tags(lines, "who=", " id ")
    for call_id in ids:
        mine = sorted(text for tag, text in found if tag == call_id)
        assert mine == [f"who={call_id} n {n} id {call_id}" for n in range(3)]


def test_stream_attributes_are_the_real_streams(logshim: ServerProcess) -> None:
    data = logshim.request("GET", "/streams", headers={"X-Call-Id": "s-1"}).json()
    assert data["stdout"]["fileno"] == 1
    assert data["stderr"]["fileno"] == 2
    assert data["stdout"]["isatty"] is False
    assert data["stdout"]["buffer"] is True
    assert data["stdout"]["encoding"]


def test_async_handler_calls_tag_their_own_lines(tmp_path: Path) -> None:
    folder = write_handler(tmp_path / "app", ASYNC_LOG_HANDLER)
    server = start(folder)
    try:
        server.wait_ready()
        ids = [f"async-{n}" for n in range(10)]
        with ThreadPoolExecutor(max_workers=12) as pool:
            results = list(
                pool.map(
                    lambda call_id: server.request(
                        "GET", "/", headers={"X-Call-Id": call_id} if call_id else {}
                    ),
                    [*ids, "", ""],
                )
            )
        assert [r.text for r in results] == [*ids, "none", "none"]
        lines = server.wait_lines("after id=async-", 10)
        assert lines[0].startswith("plat-shim: python ")
        found = check_own_tags(lines, "id=")
        for call_id in ids:
            texts = sorted(text for tag, text in found if tag == call_id)
            assert texts == [f"after id={call_id}", f"before id={call_id}", f"thread id={call_id}"]
    finally:
        server.stop()
