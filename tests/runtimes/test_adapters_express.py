"""Express apps served by the Node shim: a real Express (from npm) with a router
under the function's prefix (req.baseUrl, redirects, 404 texts), bodies read by
the app itself, streaming, and errors the app raises or leaves unhandled: a 500
and a log line, never a dead instance."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtimes import ServerProcess
from tests.runtimes.adapters import raw_request, read_head, timed_chunks
from tests.runtimes.shims import NODE_KIND, running, write_files

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("npm") is None, reason="needs node and npm"),
]

APP = textwrap.dedent(
    """
    const express = require('express');

    const app = express();
    const items = express.Router();
    items.get('/:id', (req, res) => {
      res.json({ id: req.params.id, baseUrl: req.baseUrl, originalUrl: req.originalUrl,
                 ip: req.ip, hostname: req.hostname, protocol: req.protocol, q: req.query });
    });
    items.post('/', express.json(), (req, res) => res.status(201).json({ got: req.body }));
    app.use('/items', items);
    app.post('/binary', express.raw({ type: '*/*', limit: '10mb' }), (req, res) => {
      res.type('application/octet-stream').send(Buffer.from(req.body).reverse());
    });
    app.get('/go', (req, res) => res.redirect(`${req.baseUrl}/items/1`));
    app.get('/stream', (req, res) => {
      res.type('text/plain');
      let n = 0;
      const timer = setInterval(() => {
        n += 1;
        res.write(`part${n}\\n`);
        if (n === 3) { clearInterval(timer); res.end(); }
      }, 400);
    });
    app.get('/endless', (req, res) => {
      const timer = setInterval(() => res.write('x'.repeat(1024)), 10);
      req.on('close', () => { clearInterval(timer); console.log('endless: client gone'); });
    });
    app.get('/throw', () => { throw new Error('sync failure 1357'); });
    app.get('/reject', async () => { throw new Error('async failure 2468'); });
    app.get('/timer', () => { setTimeout(() => { throw new Error('timer failure 3579'); }, 5); });
    app.get('/call', (req, res) => { console.log('inside the call'); res.send('ok'); });
    module.exports = app;
    """
)


@pytest.fixture(scope="module")
def express_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("express") / "app"
    write_files(folder, {"handler.js": APP, "package.json": '{"name": "app", "private": true}'})
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", "express@5"],
        cwd=folder,
        check=True,
        capture_output=True,
        timeout=100,
    )
    with running(NODE_KIND, folder, PLAT_FUNCTION="shop", NODE_ENV="production") as server:
        yield server


def test_a_router_sees_the_functions_prefix(express_app: ServerProcess) -> None:
    res = express_app.request(
        "GET",
        "/items/42?a=1",
        headers={
            "X-Forwarded-For": "203.0.113.4",
            "X-Forwarded-Host": "127.0.0.1:8080",
            "X-Forwarded-Proto": "http",
        },
    )
    assert res.status == 200, res.text
    assert res.json() == {
        "id": "42",
        "baseUrl": "/function/shop/items",
        "originalUrl": "/function/shop/items/42?a=1",
        "ip": "203.0.113.4",
        "hostname": "127.0.0.1",
        "protocol": "http",
        "q": {"a": "1"},
    }
    assert express_app.request("GET", "/go").headers["location"] == "/function/shop/items/1"
    missing = express_app.request("GET", "/nowhere")
    assert missing.status == 404
    assert "/function/shop/nowhere" in missing.text


def test_host_routing_has_no_prefix(express_app: ServerProcess) -> None:
    res = express_app.request(
        "GET", "/items/1", headers={"X-Forwarded-Host": "shop.localhost:8080"}
    )
    assert res.json()["baseUrl"] == "/items"


def test_the_app_reads_its_own_bodies(express_app: ServerProcess) -> None:
    res = express_app.request("POST", "/items", '{"n": 5}', {"Content-Type": "application/json"})
    assert (res.status, res.json()) == (201, {"got": {"n": 5}})
    data = bytes(range(256)) * 4096
    octets = {"Content-Type": "application/octet-stream"}
    assert express_app.request("POST", "/binary", data, octets).body == data[::-1]
    bad = express_app.request("POST", "/items", "{not json", {"Content-Type": "application/json"})
    assert bad.status == 400


def test_a_streamed_body_comes_as_it_is_written(express_app: ServerProcess) -> None:
    started = time.monotonic()
    with raw_request(express_app.port, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n") as sock:
        chunks, complete = timed_chunks(sock)
    assert complete
    assert b"".join(c for _, c in chunks) == b"part1\npart2\npart3\n"
    assert chunks[0][0] - started < 0.7
    assert chunks[-1][0] - chunks[0][0] > 0.6


def test_a_client_gone_midway_is_seen_by_the_app(express_app: ServerProcess) -> None:
    sock = raw_request(express_app.port, "GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
    read_head(sock)
    sock.recv(1024)
    sock.close()
    assert "endless: client gone" in express_app.wait_output("client gone", timeout=10)
    assert express_app.request("GET", "/items/1").status == 200


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/throw", "sync failure 1357"),
        ("/reject", "async failure 2468"),
        ("/timer", "timer failure 3579"),
    ],
)
def test_errors_are_a_500_and_a_log_line(
    express_app: ServerProcess, path: str, logged: str
) -> None:
    res = express_app.request("GET", path)
    assert res.status == 500
    assert logged not in res.text  # production: no stack in the answer
    assert logged in express_app.wait_output(logged, stream="stderr")
    assert express_app.proc.poll() is None
    assert express_app.request("GET", "/items/1").status == 200


def test_huge_headers(express_app: ServerProcess) -> None:
    headers = {f"X-H-{i}": "v" * 100 for i in range(100)}
    assert express_app.request("GET", "/items/1", headers=headers).status == 200
    # Node's limit is 16 KiB: it answers 431 and closes, which may reset a client still sending.
    try:
        status = express_app.request("GET", "/items/1", headers={"X-Huge": "v" * 70_000}).status
    except ConnectionResetError:
        status = 431
    assert status == 431
    assert express_app.request("GET", "/items/1").status == 200


def test_output_of_a_call_carries_its_id(express_app: ServerProcess) -> None:
    assert express_app.request("GET", "/call", headers={"X-Call-Id": "exp-1"}).body == b"ok"
    assert "[call:exp-1] inside the call" in express_app.wait_output("inside the call")


def test_plat_kind_keeps_an_app_a_plain_handler(tmp_path: Path) -> None:
    source = "const f = async (event) => ({ path: event.path });\nf.handle = f; f.use = f;\n"
    source += "module.exports = f;\n"
    folder = write_files(tmp_path / "app", {"handler.js": source})
    with running(NODE_KIND, folder, PLAT_ADAPTER="plat") as server:
        assert server.request("GET", "/p").json() == {"path": "/p"}
    with running(NODE_KIND, folder, ready=False, PLAT_ADAPTER="wsgi") as server:
        assert server.wait_exit() == 1
        assert 'no handler adapter for "wsgi"' in server.stderr
