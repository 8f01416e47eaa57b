"""plat.connect: which daemon a command talks to and as whom (PLAT_URL, PLAT_TOKEN,
PLAT_TENANT), and how the CLI reaches functions on the gateway.

The environment is passed in as a mapping; the servers are real aiohttp apps (loopback
TCP for a remote daemon, a unix socket for the local one).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from plat.connect import Target, connect, gateway, tenant_of_function
from plat.credentials import ensure_password
from plat.errors import PlatError
from plat.paths import Home

TOKEN = "plat_t_0123456789"


def test_url_without_token_is_a_clear_error(tmp_path: Path) -> None:
    env = {"PLAT_URL": "http://10.0.0.5:8080", "PLAT_HOME": str(tmp_path / "h")}
    with pytest.raises(PlatError) as info:
        connect(env=env)
    assert "PLAT_URL is set (http://10.0.0.5:8080) but PLAT_TOKEN is not" in info.value.message
    assert info.value.hint is not None
    assert "export PLAT_TOKEN" in info.value.hint
    assert "plat tenant create" in info.value.hint
    assert not (tmp_path / "h").exists()  # nothing was started or written


@pytest.mark.parametrize("token", ["two words", "tab\there", "line\nbreak", "ünïcode"])
def test_token_with_what_no_token_holds(token: str) -> None:
    with pytest.raises(PlatError, match="PLAT_TOKEN holds spaces or characters"):
        Target.from_env({"PLAT_URL": "http://h:1", "PLAT_TOKEN": token})


def test_blank_values_are_unset() -> None:
    assert Target.from_env({"PLAT_URL": "  ", "PLAT_TOKEN": "", "PLAT_TENANT": " "}) == Target(
        None, None, None
    )
    assert Target.from_env({"PLAT_URL": " http://h:1 ", "PLAT_TOKEN": f" {TOKEN}\n"}) == Target(
        "http://h:1", TOKEN, None
    )


def test_url_without_scheme_is_a_clear_error(tmp_path: Path) -> None:
    env = {"PLAT_URL": "127.0.0.1:8080", "PLAT_TOKEN": TOKEN, "PLAT_HOME": str(tmp_path / "h")}
    with pytest.raises(PlatError) as info:
        connect(env=env)
    assert info.value.message == "PLAT_URL '127.0.0.1:8080' has no scheme"
    assert info.value.hint == "write it as http://127.0.0.1:8080"


def test_remote_connect_starts_nothing_and_needs_no_home(tmp_path: Path) -> None:
    home = tmp_path / "never"
    env = {
        "PLAT_URL": "http://127.0.0.1:1/edge/",
        "PLAT_TOKEN": TOKEN,
        "PLAT_TENANT": "acme",
        "PLAT_HOME": str(home),
    }
    client = connect(env=env)
    assert client.remote
    assert client.home is None
    assert client.endpoint is not None and client.endpoint.url == "http://127.0.0.1:1/edge"
    assert client.tenant == "acme"
    assert not home.exists()


def test_remote_with_a_backend_is_refused() -> None:
    env = {"PLAT_URL": "http://127.0.0.1:1", "PLAT_TOKEN": TOKEN}
    with pytest.raises(PlatError, match="--backend chooses how the local daemon runs"):
        connect(env=env, backend="process")


def test_bad_tenant_is_refused_before_anything_starts(tmp_path: Path) -> None:
    env = {"PLAT_TENANT": "../etc", "PLAT_HOME": str(tmp_path / "h")}
    with pytest.raises(PlatError, match="is not a tenant name"):
        connect(env=env)
    assert not (tmp_path / "h").exists()


def test_remote_gateway_is_the_url_with_the_token() -> None:
    client = connect(env={"PLAT_URL": "https://plat.example/edge", "PLAT_TOKEN": TOKEN})
    gw = gateway(client)
    assert gw.authorization == f"Bearer {TOKEN}"
    assert gw.function_path("hello", None) == "/edge/function/hello"
    assert gw.function_path("hello", "default") == "/edge/function/hello"
    assert gw.function_path("hello", "acme") == "/edge/function/hello.acme"
    assert gw.function_url("hello", "acme") == "https://plat.example/edge/function/hello.acme"


async def status(request: web.Request) -> web.Response:
    return web.json_response({"gateway_url": "http://127.0.0.1:18080", "backend": "process"})


async def describe(request: web.Request) -> web.Response:
    """A tenant's token sees its own function; anything else is 404."""
    tenant = request.headers.get("X-Plat-Tenant") or (
        "acme" if request.headers.get("Authorization") == f"Bearer {TOKEN}" else "default"
    )
    if request.match_info["name"] != "hello":
        return web.json_response({"error": "not_found", "message": "no function"}, status=404)
    return web.json_response({"name": "hello", "tenant": tenant})


@pytest.fixture
async def local_home(tmp_path: Path) -> AsyncIterator[Home]:
    """A home with credentials and a daemon-like app answering on its socket."""
    home = Home(tmp_path / "home")
    home.ensure()
    ensure_password(home)
    app = web.Application()
    app.router.add_get("/v1/status", status)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.UnixSite(runner, str(home.socket)).start()
    try:
        yield home
    finally:
        await runner.cleanup()


async def test_local_gateway_is_the_daemons_with_admin_basic(local_home: Home) -> None:
    env = {"PLAT_HOME": str(local_home.root), "PLAT_TENANT": "acme"}
    client = await asyncio.to_thread(connect, None, env)
    assert not client.remote
    assert client.tenant == "acme"
    gw = await asyncio.to_thread(gateway, client)
    assert gw.endpoint.url == "http://127.0.0.1:18080"
    user, _, password = base64.b64decode(gw.authorization.split()[1]).decode().partition(":")
    assert user == "admin"
    assert f"admin:{password}" == local_home.credentials.read_text().strip()
    # The chosen tenant is the function's; nothing is asked of the daemon.
    assert tenant_of_function(client, "hello") == "acme"


@pytest.fixture
async def remote_api() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/api/v1/functions/{name}", describe)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert site._server is not None
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_remote_tenant_of_a_function_is_the_tokens(remote_api: str) -> None:
    client = connect(env={"PLAT_URL": remote_api, "PLAT_TOKEN": TOKEN})
    assert await asyncio.to_thread(tenant_of_function, client, "hello") == "acme"
    chosen = connect(env={"PLAT_URL": remote_api, "PLAT_TOKEN": TOKEN, "PLAT_TENANT": "beta"})
    assert await asyncio.to_thread(tenant_of_function, chosen, "hello") == "beta"
    with pytest.raises(PlatError) as info:
        await asyncio.to_thread(tenant_of_function, client, "ghost")
    assert info.value.status == 404
