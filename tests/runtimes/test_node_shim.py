"""The Node.js shim as a real subprocess (the host's `node`), over real HTTP."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from plat.scaffold import scaffold
from tests.runtimes import NODE_SHIM, ServerProcess, port_open

NODE = shutil.which("node")
pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(NODE is None, reason="node is not installed"),
]

HANDLER = textwrap.dedent(
    """
    'use strict';
    let calls = 0;

    module.exports = async (event, context) => {
      calls += 1;
      const p = event.path;
      if (p === '/calls') return String(calls);
      if (p.startsWith('/echo')) {
        return {
          method: event.method,
          path: event.path,
          query: event.query,
          allA: event.searchParams.getAll('a'),
          header: event.headers['x-test'] || null,
          body: event.body.toString('utf8'),
          isBuffer: Buffer.isBuffer(event.body),
          json: event.json === undefined ? null : event.json,
          function: context.function,
          hostname: context.hostname,
        };
      }
      if (p === '/status') {
        return { statusCode: 201, headers: { 'X-Custom': 'yes' }, body: { ok: true } };
      }
      if (p === '/bytes') return Buffer.from([0, 1, 2]);
      if (p === '/none') return undefined;
      if (p === '/list') return [1, 2, 3];
      if (p === '/text') return 'plain words';
      if (p === '/boom') throw new RangeError('secret detail 1234');
      if (p === '/reject') return Promise.reject(new TypeError('rejected detail'));
      if (p === '/bad-header') {
        return { statusCode: 200, headers: { 'X-Bad': 'a\\r\\nInjected: 1' }, body: 'x' };
      }
      if (p === '/slow') {
        await new Promise((resolve) => setTimeout(resolve, 500));
        return 'slow done';
      }
      return { unknown: p };
    };
    """
)


def start(folder: Path, handler: str = "handler.js", **env: str) -> ServerProcess:
    assert NODE is not None
    return ServerProcess(
        [NODE, str(NODE_SHIM)],
        cwd=folder,
        logs=folder.parent / f"{folder.name}-logs",
        env={"PLAT_HANDLER": handler, "PLAT_FUNCTION": "shimtest", **env},
    )


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = write(tmp_path_factory.mktemp("nodeshim") / "app", {"handler.js": HANDLER})
    server = start(folder)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_shim_parses_on_node(tmp_path: Path) -> None:
    assert NODE is not None
    subprocess.run([NODE, "--check", str(NODE_SHIM)], check=True)


def test_startup_line_on_stdout(shim: ServerProcess) -> None:
    assert "plat-shim: node" in shim.wait_output("plat-shim: node")


def test_scaffolded_handler_greets(tmp_path: Path) -> None:
    scaffold(tmp_path / "hello", "hello", "node")
    server = start(tmp_path / "hello")
    try:
        server.wait_ready()
        resp = server.request("POST", "/", b'{"name": "Ada"}', {"Content-Type": "application/json"})
        assert resp.status == 200
        assert resp.headers["content-type"] == "application/json"
        assert resp.json() == {"message": "Hello, Ada!"}
        assert server.request("POST", "/", b"").json() == {"message": "Hello, world!"}
        assert server.request("POST", "/", b"not json").json() == {"message": "Hello, world!"}
    finally:
        server.stop()


def test_event_fields_reach_the_handler(shim: ServerProcess) -> None:
    resp = shim.request("PUT", "/echo/sub/x%20y?a=1&a=2&b=3", b'{"k": "v"}', {"X-Test": "yes"})
    assert resp.status == 200
    data = resp.json()
    assert data["method"] == "PUT"
    assert data["path"] == "/echo/sub/x y"
    assert data["query"] == {"a": "1", "b": "3"}
    assert data["allA"] == ["1", "2"]
    assert data["header"] == "yes"
    assert data["body"] == '{"k": "v"}'
    assert data["isBuffer"] is True
    assert data["json"] == {"k": "v"}
    assert data["function"] == "shimtest"
    assert data["hostname"] == socket.gethostname()


def test_status_code_dict(shim: ServerProcess) -> None:
    resp = shim.request("GET", "/status")
    assert resp.status == 201
    assert resp.headers["x-custom"] == "yes"
    assert resp.json() == {"ok": True}


def test_return_value_types(shim: ServerProcess) -> None:
    resp = shim.request("GET", "/bytes")
    assert (resp.status, resp.body) == (200, b"\x00\x01\x02")
    assert resp.headers["content-type"] == "application/octet-stream"
    resp = shim.request("GET", "/none")
    assert (resp.status, resp.body) == (204, b"")
    resp = shim.request("GET", "/list")
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == [1, 2, 3]
    resp = shim.request("GET", "/text")
    assert resp.text == "plain words"
    assert resp.headers["content-type"] == "text/plain; charset=utf-8"


@pytest.mark.parametrize(
    ("path", "kind", "detail"),
    [
        ("/boom", "RangeError", "secret detail 1234"),
        ("/reject", "TypeError", "rejected detail"),
    ],
)
def test_handler_error_is_a_500_without_stack(
    shim: ServerProcess, path: str, kind: str, detail: str
) -> None:
    resp = shim.request("GET", path)
    assert resp.status == 500
    assert resp.json() == {
        "error": "handler_error",
        "message": f"the function raised {kind}; see `plat logs`",
    }
    assert detail.encode() not in resp.body
    stderr = shim.wait_output(f"{kind}: {detail}", stream="stderr")
    assert f"{kind}: {detail}" in stderr
    assert "handler.js" in stderr  # the stack trace


def test_invalid_header_is_a_500(shim: ServerProcess) -> None:
    resp = shim.request("GET", "/bad-header")
    assert resp.status == 500
    assert resp.json()["error"] == "invalid_response"
    assert "injected" not in resp.headers


def test_probe_is_answered_without_calling_the_handler(shim: ServerProcess) -> None:
    before = int(shim.request("GET", "/calls").text)
    for path in ("/", "/boom", "/slow"):
        resp = shim.request("GET", path, headers={"X-Plat-Probe": "1"})
        assert resp.status == 200
        assert resp.json() == {"status": "ready"}
    assert int(shim.request("GET", "/calls").text) == before + 1


def test_keep_alive_two_requests_on_one_connection(shim: ServerProcess) -> None:
    conn = shim.connection()
    try:
        conn.request("GET", "/text")
        assert conn.getresponse().read() == b"plain words"
        sock = conn.sock
        assert sock is not None
        conn.request("POST", "/echo", body=b"second")
        resp = conn.getresponse()
        assert b"second" in resp.read()
        assert conn.sock is sock
    finally:
        conn.close()


def test_chunked_request_body(shim: ServerProcess) -> None:
    conn = shim.connection()
    try:
        conn.request(
            "POST", "/echo", body=iter([b"hello ", b"chunked ", b"world"]), encode_chunked=True
        )
        resp = conn.getresponse()
        assert json.loads(resp.read())["body"] == "hello chunked world"
    finally:
        conn.close()


def test_twenty_concurrent_requests(shim: ServerProcess) -> None:
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda _: shim.request("GET", "/slow"), range(20)))
    elapsed = time.monotonic() - started
    assert all(r.status == 200 and r.text == "slow done" for r in results)
    assert elapsed < 4.0, f"20 x 0.5 s handlers took {elapsed:.2f} s: not concurrent"


def test_handle_export_and_es_module(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "esm",
        {
            "package.json": json.dumps({"name": "esm", "type": "module"}),
            "handler.js": "export async function handle(event) { return {esm: true}; }\n",
        },
    )
    server = start(folder)
    try:
        server.wait_ready()
        assert server.request("GET", "/").json() == {"esm": True}
    finally:
        server.stop()


def test_named_export_in_handler_spec(tmp_path: Path) -> None:
    folder = write(tmp_path / "named", {"fn.js": "exports.greet = async () => 'hi';\n"})
    server = start(folder, handler="fn.js:greet")
    try:
        server.wait_ready()
        assert server.request("GET", "/").text == "hi"
    finally:
        server.stop()


def test_import_error_exits_non_zero_without_binding(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "broken",
        {
            "handler.js": "const end = Date.now() + 600; while (Date.now() < end) {}\n"
            "throw new Error('broken at import');\n"
        },
    )
    server = start(folder)
    try:
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            assert not port_open(server.port)
            time.sleep(0.05)
        assert server.wait_exit(timeout=10) != 0
        assert "broken at import" in server.stderr
        assert "plat-shim: node" not in server.stdout
    finally:
        server.stop()


def test_module_without_function_exits_non_zero(tmp_path: Path) -> None:
    folder = write(tmp_path / "nofn", {"handler.js": "module.exports = {answer: 42};\n"})
    server = start(folder)
    try:
        assert server.wait_exit(timeout=10) != 0
        assert "does not export" in server.stderr
    finally:
        server.stop()


def test_sigterm_finishes_in_flight_requests_and_exits_zero(tmp_path: Path) -> None:
    folder = write(tmp_path / "term", {"handler.js": HANDLER})
    server = start(folder)
    try:
        server.wait_ready()
        idle = server.connection()
        idle.request("GET", "/text")
        idle.getresponse().read()
        outcome: dict[str, object] = {}

        def slow() -> None:
            resp = server.request("GET", "/slow")
            outcome.update(status=resp.status, body=resp.text)

        thread = threading.Thread(target=slow)
        thread.start()
        time.sleep(0.15)
        server.signal(signal.SIGTERM)
        thread.join(timeout=10)
        assert outcome == {"status": 200, "body": "slow done"}
        assert server.wait_exit(timeout=10) == 0
        idle.close()
    finally:
        server.stop()
