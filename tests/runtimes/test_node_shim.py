"""The Node.js shim as a real subprocess (the host's `node`), over real HTTP."""

from __future__ import annotations

import json
import re
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
from typing import Any

import pytest

from plat.scaffold import scaffold
from tests.runtimes import NODE_SHIM, ServerProcess, port_open, split_call_tag

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


# --- call ids on log lines -----------------------------------------------------------------

LOG_HANDLER = textwrap.dedent(
    """
    'use strict';
    const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

    module.exports = async (event, context) => {
      const p = event.path;
      const m = event.query.m || '';
      if (p === '/context') {
        return { callId: context.callId, call_id: context.call_id, requestId: context.requestId };
      }
      if (p === '/lines') {
        console.log(`line1 ${m}`);
        console.log(`line2 ${m}`);
        console.error(`err ${m}`);
        return 'ok';
      }
      if (p === '/whoami') {
        // Other calls run during every await, between and inside lines.
        const me = context.callId || 'none';
        for (let n = 0; n < 3; n += 1) {
          console.log(`before ${n} id=${me}`);
          await sleep(2 + ((n * 7 + me.length) % 11));
          process.stdout.write(`who=${me} `);
          await sleep(3);
          process.stdout.write(`again=${me}\\n`);
        }
        return me;
      }
      if (p === '/partial') {
        process.stdout.write(`multi1 ${m}\\nmulti2 ${m}\\n`);
        process.stdout.write(`held ${m} `);
        process.stdout.write('joined\\n');
        process.stdout.write(Buffer.from(`bytes ${m} \\u00e9\\n`));
        process.stdout.write(`unfinished ${m}`);
        return 'ok';
      }
      if (p === '/later') {
        setTimeout(() => console.log(`later ${m}`), 50);
        return 'ok';
      }
      if (p === '/boom') throw new RangeError(`boom ${m}`);
      return { unknown: p };
    };
    """
)

_IDS_IN_TEXT = re.compile(r"(?:who=|again=|id=)(\S+)")


@pytest.fixture(scope="module")
def logshim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = write(tmp_path_factory.mktemp("nodelogs") / "app", {"handler.js": LOG_HANDLER})
    server = start(folder)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_call_id_in_context(logshim: ServerProcess) -> None:
    def context(headers: dict[str, str]) -> Any:
        return logshim.request("GET", "/context", headers=headers).json()

    assert context({"X-Call-Id": "abc-123"}) == {
        "callId": "abc-123",
        "call_id": "abc-123",
        "requestId": "abc-123",
    }
    assert context({"X-Call-Id": "c1", "X-Request-Id": "r1"})["requestId"] == "r1"
    assert context({}) == {"callId": "", "call_id": "", "requestId": ""}
    assert context({"X-Call-Id": "no spaces/allowed"})["callId"] == ""


def test_startup_line_is_untagged(logshim: ServerProcess) -> None:
    lines = logshim.wait_lines("plat-shim: node", 1)
    assert lines[0].startswith("plat-shim: node ")


def test_output_of_a_call_is_tagged(logshim: ServerProcess) -> None:
    assert logshim.request("GET", "/lines?m=t1", headers={"X-Call-Id": "abc-123"}).text == "ok"
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
    assert "err u1" in logshim.wait_lines("err u1", 1, stream="stderr")


def test_partial_multi_line_and_binary_writes(logshim: ServerProcess) -> None:
    assert logshim.request("GET", "/partial?m=p1", headers={"X-Call-Id": "p-1"}).text == "ok"
    assert logshim.request("GET", "/lines?m=p2").text == "ok"
    stdout = logshim.wait_lines("line1 p2", 1)
    start = stdout.index("[call:p-1] multi1 p1")
    assert stdout[start : start + 7] == [
        "[call:p-1] multi1 p1",
        "[call:p-1] multi2 p1",
        "[call:p-1] held p1 joined",
        "[call:p-1] bytes p1 \u00e9",
        "[call:p-1] unfinished p1",  # ended when the call returned
        "line1 p2",
        "line2 p2",
    ]


def test_work_started_by_a_call_stays_tagged(logshim: ServerProcess) -> None:
    assert logshim.request("GET", "/later?m=l1", headers={"X-Call-Id": "late-1"}).text == "ok"
    assert "[call:late-1] later l1" in logshim.wait_lines("later l1", 1)


def test_handler_stack_is_tagged(logshim: ServerProcess) -> None:
    resp = logshim.request("GET", "/boom?m=b1", headers={"X-Call-Id": "boom-1"})
    assert resp.status == 500
    stderr = logshim.wait_lines("RangeError: boom b1", 1, stream="stderr")
    first = stderr.index("[call:boom-1] plat-shim: the handler threw RangeError on GET /boom")
    assert stderr[first + 1] == "[call:boom-1] RangeError: boom b1"
    assert stderr[first + 2].startswith("[call:boom-1]     at ")
    assert "handler.js" in stderr[first + 2]


def test_concurrent_async_calls_tag_their_own_lines(logshim: ServerProcess) -> None:
    ids = [f"conc-{n}" for n in range(10)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(
            pool.map(
                lambda call_id: logshim.request(
                    "GET", "/whoami", headers={"X-Call-Id": call_id} if call_id else {}
                ),
                [*ids, "", ""],  # two calls without a call id among them
            )
        )
    assert [r.text for r in results] == [*ids, "none", "none"]
    lines = logshim.wait_lines("again=conc-", 30)
    pieces: dict[str | None, list[str]] = {}
    for line in lines:
        if not _IDS_IN_TEXT.search(line):
            continue
        call_id, text = split_call_tag(line)
        named = set(_IDS_IN_TEXT.findall(text))
        assert named == {call_id or "none"}, f"line tagged {call_id!r}: {line!r}"
        pieces.setdefault(call_id, []).extend(text.split())
    # Nothing is lost: each call's words are all there, under its own tag.
    for call_id in ids:
        words = sorted(pieces[call_id])
        expected = sorted(
            [*(f"{n}" for n in range(3)), *["before", f"id={call_id}"] * 3]
            + [f"who={call_id}", f"again={call_id}"] * 3
        )
        assert words == expected, call_id
