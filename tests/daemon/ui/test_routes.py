"""The dashboard's routes (plat.daemon.ui) over a real loopback socket: the page and
its files with a strict Content-Security-Policy, and hostile paths (traversal, plain
and encoded, symlinks, unknown files, very long paths) that must reach nothing but
the shipped files. Requests are written raw so no client tidies a path first."""

from __future__ import annotations

import asyncio
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from plat.daemon.ui import CSP, STATIC, shipped, ui_routes

AiohttpClient = Any  # pytest-aiohttp's factory fixture
SECRET = "top secret outside the static folder"


async def raw(client: TestClient, method: str, target: str) -> tuple[int, dict[str, str], bytes]:
    """One request with ``target`` sent byte for byte; (status, headers, body)."""
    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A static folder like the shipped one, beside a secret file, with a symlink to
    the secret and to a folder outside, and a file of a type the dashboard never serves."""
    (tmp_path / "secret.txt").write_text(SECRET)
    (tmp_path / "secret.js").write_text(SECRET)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.js").write_text(SECRET)
    static = tmp_path / "static"
    (static / "js").mkdir(parents=True)
    (static / "index.html").write_text("<!doctype html><title>t</title>")
    (static / "js" / "app.js").write_text("export {};\n")
    (static / "notes.py").write_text(SECRET)
    (static / "linked.js").symlink_to(tmp_path / "secret.js")
    (static / "far").symlink_to(outside)
    return static


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, root: Path) -> TestClient:
    app = web.Application()
    app.add_routes(ui_routes(root))
    result: TestClient = await aiohttp_client(app)
    return result


@pytest.fixture
async def shipped_client(aiohttp_client: AiohttpClient) -> TestClient:
    app = web.Application()
    app.add_routes(ui_routes())
    result: TestClient = await aiohttp_client(app)
    return result


def test_only_regular_files_of_known_types_are_shipped(root: Path) -> None:
    assert sorted(shipped(root)) == ["index.html", "js/app.js"]


async def test_the_page_and_each_shipped_file_carry_the_policy(shipped_client: TestClient) -> None:
    files = shipped(STATIC)
    assert {"index.html", "style.css", "favicon.svg", "js/app.js"} <= set(files)
    page = await shipped_client.get("/ui/")
    assert page.status == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert page.headers["Content-Security-Policy"] == CSP
    assert "default-src 'self'" in CSP and "script-src 'self'" in CSP
    assert "unsafe-inline" not in CSP and "unsafe-eval" not in CSP
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert await page.text() == (STATIC / "index.html").read_text()
    types = {
        ".js": "text/javascript",
        ".css": "text/css",
        ".svg": "image/svg+xml",
        ".html": "text/html",
    }
    for name, path in files.items():
        answer = await shipped_client.get(f"/ui/static/{name}")
        assert answer.status == 200, name
        assert answer.headers["Content-Type"].startswith(types[path.suffix]), name
        assert answer.headers["Content-Security-Policy"] == CSP, name
        assert answer.headers["X-Content-Type-Options"] == "nosniff", name
        assert await answer.read() == path.read_bytes(), name
    bare = await shipped_client.get("/ui", allow_redirects=False)
    assert bare.status == 302 and bare.headers["Location"] == "/ui/"
    assert bare.headers["Content-Security-Policy"] == CSP


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.inline: list[str] = []
        self.attributes: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.attributes += [name for name, _ in attrs]
        if tag == "script":
            self.scripts.append(dict(attrs))
            self._in_script = True
        if tag == "style":
            self.inline.append("<style>")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(data)


def test_the_page_has_no_inline_script_or_style_and_loads_nothing_from_elsewhere() -> None:
    page = _Page()
    text = (STATIC / "index.html").read_text()
    page.feed(text)
    assert page.scripts
    assert all((s.get("src") or "").startswith("/ui/static/") for s in page.scripts)
    assert page.inline == []
    assert not [a for a in page.attributes if a.startswith("on") or a == "style"]
    for path in STATIC.rglob("*"):
        if path.is_file():
            assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", path.read_text()), path


def test_the_scripts_never_parse_data_as_markup() -> None:
    """Every string from the API becomes text (textContent, attributes), so none of
    the ways that parse a string as HTML or code may appear."""
    banned = re.compile(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function"
    )
    for path in (STATIC / "js").rglob("*.js"):
        assert not banned.search(path.read_text()), path


@pytest.mark.parametrize(
    "target",
    [
        "/ui/static/../secret.txt",
        "/ui/static/../../secret.txt",
        "/ui/static/js/../../secret.txt",
        "/ui/static/%2e%2e/secret.txt",
        "/ui/static/%2E%2E%2Fsecret.txt",
        "/ui/static/..%2fsecret.txt",
        "/ui/static/..%5csecret.txt",
        "/ui/static/..\\secret.txt",
        "/ui/static/%252e%252e/secret.txt",
        "/ui/static/.%2e/.%2e/secret.txt",
        "/ui/static//etc/passwd",
        "/ui/static/%2fetc%2fpasswd",
        "/ui/static/linked.js",
        "/ui/static/far/x.js",
        "/ui/static/notes.py",
        "/ui/static/js/app.js%00.html",
        "/ui/static/index.html/",
        "/ui/static/",
        "/ui/static",
        "/ui/static/nope.js",
        "/ui/../ui/static/../secret.txt",
    ],
)
async def test_hostile_paths_reach_only_shipped_files(client: TestClient, target: str) -> None:
    status, headers, body = await raw(client, "GET", target)
    assert status in (400, 404), (target, status)
    assert SECRET.encode() not in body
    assert b"export" not in body
    if status == 404 and target.startswith("/ui/static/"):
        assert headers["content-security-policy"] == CSP
        assert headers["x-content-type-options"] == "nosniff"


async def test_head_answers_like_get_without_a_body(client: TestClient) -> None:
    for target in ("/ui/", "/ui/static/js/app.js"):
        got = await client.get(target)
        status, headers, body = await raw(client, "HEAD", target)
        assert status == 200 and body == b""
        assert int(headers["content-length"]) == len(await got.read())
        assert headers["content-security-policy"] == CSP
    status, _, body = await raw(client, "HEAD", "/ui/static/../secret.txt")
    assert status == 404 and body == b""


async def test_very_long_and_odd_paths_are_refused_and_the_server_keeps_serving(
    client: TestClient,
) -> None:
    for target in (
        "/ui/static/" + "a/" * 3000 + "app.js",
        "/ui/static/" + "%2e%2e/" * 1000 + "secret.txt",
        "/ui/static/" + "x" * 7000 + ".js",
    ):
        status, _, body = await raw(client, "GET", target)
        assert status in (400, 404, 414), status
        assert SECRET.encode() not in body
    status, _, body = await raw(client, "GET", "/ui/static/" + "y" * 100_000)
    assert status in (400, 414, 431)
    assert (await client.get("/ui/static/js/app.js")).status == 200


async def test_other_methods_are_refused(client: TestClient) -> None:
    for method in ("POST", "PUT", "DELETE"):
        status, _, body = await raw(client, method, "/ui/static/js/app.js")
        assert status == 405, method
        assert b"export" not in body


async def test_a_missing_page_is_a_404_not_a_crash(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    app = web.Application()
    app.add_routes(ui_routes(tmp_path / "nothing-here"))
    client: TestClient = await aiohttp_client(app)
    page = await client.get("/ui/")
    assert page.status == 404
    assert page.headers["Content-Security-Policy"] == CSP
