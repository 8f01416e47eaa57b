"""Tenants through the control API's two doors: the admin's (the socket's routes)
and the gateway's ``/api`` door with tokens. Real aiohttp servers on loopback and a
real HTTP client; the controller runs on the in-memory backend."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from plat.api import Status
from plat.archive import pack_bytes
from plat.credentials import basic_header
from plat.daemon.control import Services, api_app, control_routes
from plat.daemon.control.errors import error_middleware
from plat.daemon.control.scope import socket_scope
from plat.daemon.functions import Functions
from plat.daemon.journal import Journal
from plat.daemon.metrics import Metrics
from plat.daemon.secrets.sealing import Sealer
from plat.daemon.secrets.service import SecretsService
from plat.daemon.serving.controller import Controller
from plat.daemon.store import Store
from plat.daemon.tasks import TaskGroup
from plat.daemon.tenants import Tenants
from tests.daemon.control.test_routes import function_folder
from tests.daemon.fakes import (
    FakeArtifacts,
    FakeBackend,
    backend_fixture,
    make_controller,
    make_deployer,
    store_fixture,
)

__all__ = ["backend_fixture", "store_fixture"]

pytestmark = pytest.mark.timeout(30)

ADMIN_TOKEN = "plat_admin_test-token"
ADMIN_BASIC = basic_header("admin-password")


@dataclass
class Doors:
    admin_url: str  # the socket's routes (the caller is the admin)
    api_url: str  # the gateway's /api door (tokens)
    http: aiohttp.ClientSession
    controller: Controller
    tenants: Tenants
    uploads: Path

    async def admin(
        self, method: str, path: str, body: Any = None, tenant: str | None = None
    ) -> tuple[int, Any]:
        headers = {"X-Plat-Tenant": tenant} if tenant else {}
        data = None if body is None else json.dumps(body)
        async with self.http.request(
            method, self.admin_url + path, data=data, headers=headers
        ) as resp:
            return resp.status, await resp.json()

    async def api(
        self,
        method: str,
        path: str,
        token: str | None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        headers = dict(headers or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data: Any = body if isinstance(body, bytes) or body is None else json.dumps(body)
        if isinstance(data, bytes) and len(data) > 512 * 1024:
            data = io.BytesIO(data)
        async with self.http.request(
            method, self.api_url + "/api" + path, data=data, headers=headers
        ) as resp:
            text = await resp.text()
            if resp.content_type == "application/x-ndjson":
                return resp.status, [json.loads(line) for line in text.splitlines()]
            return resp.status, json.loads(text)

    async def upload(self, folder_or_bytes: Path | bytes, token: str) -> tuple[int, Any]:
        body = (
            folder_or_bytes if isinstance(folder_or_bytes, bytes) else pack_bytes(folder_or_bytes)
        )
        return await self.api(
            "POST", "/v1/functions", token, body, {"Content-Type": "application/gzip"}
        )


@pytest.fixture
async def doors(store: Store, backend: FakeBackend, tmp_path: Path) -> AsyncIterator[Doors]:
    tenants = Tenants(store, ADMIN_TOKEN)
    await tenants.load()
    controller = make_controller(store, backend, limits_of=tenants.limits_of)
    deployer = make_deployer(store, controller, FakeArtifacts())
    metrics = Metrics(controller.instance_states)
    uploads = tmp_path / "uploads"
    functions = Functions(
        store,
        controller,
        deployer,
        metrics,
        url_of=lambda key: f"http://gw/function/{key}",
        uploads=uploads,
    )
    journal = Journal(store, trim_interval=3600)
    await journal.start()
    tasks = TaskGroup(logging.getLogger(__name__))
    secrets = SecretsService(store, Sealer.from_home(tmp_path), {})
    services = Services(functions, store, journal, tasks, tenants, uploads=uploads, secrets=secrets)

    def status() -> Status:
        return {"pid": 1}  # type: ignore[typeddict-item]

    routes = control_routes(services, status=status, shutdown=lambda: None)
    socket_app = web.Application(middlewares=[error_middleware, socket_scope(tenants)])
    socket_app.add_routes(routes)
    gateway_app = web.Application()
    gateway_app.add_subapp("/api", api_app(routes, tenants, ADMIN_BASIC))
    servers = [TestServer(socket_app, host="127.0.0.1"), TestServer(gateway_app, host="127.0.0.1")]
    for server in servers:
        await server.start_server()
    async with aiohttp.ClientSession() as http:
        yield Doors(
            str(servers[0].make_url("")),
            str(servers[1].make_url("")),
            http,
            controller,
            tenants,
            uploads,
        )
    for server in servers:
        await server.close()
    await tasks.close()
    await controller.close()
    await journal.close()


async def new_tenant(doors: Doors, name: str, **quota: Any) -> str:
    status, body = await doors.admin("POST", "/v1/tenants", {"name": name, **quota})
    assert status == 201, body
    return str(body["token"])


# tokens


async def test_the_api_door_refuses_calls_without_a_valid_token(doors: Doors) -> None:
    for token in (None, "", "nonsense", "plat_acme_guess", ADMIN_TOKEN + "x"):
        status, body = await doors.api("GET", "/v1/functions", token)
        assert status == 401 and body["error"] == "unauthorized", token
    status, _ = await doors.api("GET", "/v1/functions", ADMIN_TOKEN)
    assert status == 200


async def test_a_tenant_token_is_shown_once_stored_as_a_hash_and_rotation_ends_it_at_once(
    doors: Doors, store: Store
) -> None:
    token = await new_tenant(doors, "acme")
    assert (await doors.api("GET", "/v1/functions", token))[0] == 200
    raw = store.path.read_bytes() + Path(str(store.path) + "-wal").read_bytes()
    assert token.encode() not in raw
    status, listed = await doors.admin("GET", "/v1/tenants")
    assert status == 200 and token not in json.dumps(listed) and "token_hash" not in str(listed)
    status, rotated = await doors.admin("POST", "/v1/tenants/acme/token")
    assert status == 200 and rotated["token"] != token
    assert (await doors.api("GET", "/v1/functions", token))[0] == 401
    assert (await doors.api("GET", "/v1/functions", rotated["token"]))[0] == 200


async def test_tenant_names_and_quotas_are_checked(doors: Doors) -> None:
    for body, message in [
        ({"name": "Acme"}, "not a valid tenant name"),
        ({"name": "a" * 40}, "not a valid tenant name"),
        ({"name": "default"}, "reserved"),
        ({"name": "acme", "max_memory": "lots"}, "max_memory"),
        ({"name": "acme", "max_instances": -1}, "max_instances"),
        ({"name": "acme", "max_instances": True}, "max_instances"),
        ({}, "needs a 'name'"),
    ]:
        status, answer = await doors.admin("POST", "/v1/tenants", body)
        assert status == 400 and message in answer["message"], body
    await new_tenant(doors, "acme")
    status, answer = await doors.admin("POST", "/v1/tenants", {"name": "acme"})
    assert status == 409


async def test_tenant_routes_are_the_admins_only(doors: Doors) -> None:
    token = await new_tenant(doors, "acme")
    for method, path in [
        ("GET", "/v1/tenants"),
        ("POST", "/v1/tenants/acme/token"),
        ("DELETE", "/v1/tenants/acme"),
        ("POST", "/v1/shutdown"),
    ]:
        status, body = await doors.api(method, path, token, {"name": "x"})
        assert status == 403 and body["error"] == "forbidden", path


# isolation


async def test_a_tenant_sees_and_changes_only_its_own_functions(
    doors: Doors, tmp_path: Path
) -> None:
    acme = await new_tenant(doors, "acme")
    beta = await new_tenant(doors, "beta")
    folder = function_folder(tmp_path, name="hello")
    for token in (acme, beta):
        status, events = await doors.upload(folder, token)
        assert status == 200 and events[-1]["type"] == "function", events
    assert {"hello.acme", "hello.beta"} <= set(doors.controller.functions)

    status, listed = await doors.api("GET", "/v1/functions", acme)
    assert [(f["name"], f["tenant"]) for f in listed] == [("hello", "acme")]
    assert listed[0]["url"] == "http://gw/function/hello.acme"
    status, every = await doors.admin("GET", "/v1/functions")
    assert {(f["name"], f["tenant"]) for f in every} == {("hello", "acme"), ("hello", "beta")}
    status, only = await doors.admin("GET", "/v1/functions", tenant="beta")
    assert [f["tenant"] for f in only] == ["beta"]

    # beta names acme: a 404, never a 403, whatever the route
    for method, path in [
        ("GET", "/v1/functions/hello"),
        ("GET", "/v1/functions/hello/logs"),
        ("GET", "/v1/functions/hello/builds/latest"),
    ]:
        status, _body = await doors.api(method, path, beta, headers={"X-Plat-Tenant": "acme"})
        assert status == 404, path
    status, _ = await doors.api("GET", "/v1/functions/hello.acme", beta)
    assert status == 404
    status, _ = await doors.api("DELETE", "/v1/functions/hello", beta)
    assert status == 200
    assert "hello.acme" in doors.controller.functions
    assert "hello.beta" not in doors.controller.functions


async def test_a_removed_tenant_takes_its_functions_only_when_forced(
    doors: Doors, tmp_path: Path
) -> None:
    acme = await new_tenant(doors, "acme")
    await doors.upload(function_folder(tmp_path, name="hello"), acme)
    status, body = await doors.admin("DELETE", "/v1/tenants/acme")
    assert status == 409 and body["error"] == "tenant_in_use" and "hello" in body["message"]
    status, body = await doors.admin("DELETE", "/v1/tenants/acme?force=1")
    assert status == 200 and body["functions"] == ["hello"]
    assert "hello.acme" not in doors.controller.functions
    assert (await doors.api("GET", "/v1/functions", acme))[0] == 401
    assert (await doors.admin("DELETE", "/v1/tenants/acme"))[0] == 404


# quotas


async def test_a_deploy_over_the_tenants_quota_is_refused_before_it_builds(
    doors: Doors, tmp_path: Path
) -> None:
    acme = await new_tenant(doors, "acme", max_instances=2)
    folder = function_folder(tmp_path, name="big")
    (folder / "plat.yaml").write_text("name: big\nruntime: python\nscale: {min: 3, max: 4}\n")
    _, events = await doors.upload(folder, acme)
    assert events[-1]["type"] == "error" and events[-1]["error"] == "quota_exceeded"
    assert "may run 2 instance(s)" in events[-1]["message"]
    assert not any(e["type"] == "log" for e in events)
    memory = await new_tenant(doors, "mem", max_memory="300Mi")
    (folder / "plat.yaml").write_text(
        "name: big\nruntime: python\nscale: {min: 2, max: 4}\nresources: {memory: 256Mi}\n"
    )
    _status, events = await doors.upload(folder, memory)
    assert events[-1]["error"] == "quota_exceeded" and "memory" in events[-1]["message"]


# uploads


def tar_gz(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


MANIFEST = (member("plat.yaml"), b"name: hello\nruntime: python\n")


@pytest.mark.parametrize(
    ("archive", "what"),
    [
        (tar_gz(MANIFEST, (member("/etc/evil"), b"x")), "/etc/evil"),
        (tar_gz(MANIFEST, (member("../evil"), b"x")), "../evil"),
        (tar_gz(MANIFEST, (member("dev", tarfile.CHRTYPE), None)), "dev"),
        (tar_gz(MANIFEST, (member("fifo", tarfile.FIFOTYPE), None)), "fifo"),
        (tar_gz(MANIFEST, (member("out", tarfile.SYMTYPE, "/etc/passwd"), None)), "out"),
        (tar_gz(MANIFEST, (member("up", tarfile.SYMTYPE, "../../x"), None)), "up"),
        (tar_gz(MANIFEST, (member("hard", tarfile.LNKTYPE, "/etc/shadow"), None)), "/etc/shadow"),
        (b"not a tarball at all", "tar.gz"),
    ],
)
async def test_a_hostile_upload_is_a_400_naming_the_member_and_leaves_nothing(
    doors: Doors, archive: bytes, what: str
) -> None:
    token = await new_tenant(doors, "acme")
    status, body = await doors.upload(archive, token)
    assert status == 400 and what in body["message"], body
    assert not doors.controller.functions
    assert not doors.uploads.exists() or not any(doors.uploads.iterdir())


async def test_over_http_a_deploy_must_upload_and_an_oversized_one_is_413(
    doors: Doors, tmp_path: Path
) -> None:
    token = await new_tenant(doors, "acme")
    status, body = await doors.api("POST", "/v1/functions", token, {"path": str(tmp_path)})
    assert status == 400 and "uploads the folder" in body["message"]
    status, body = await doors.upload(b"", token)
    assert status == 400 and "empty" in body["message"]
    headers = {"Content-Type": "application/gzip", "Content-Length": str(300 * 1024**2)}
    async with doors.http.post(
        doors.api_url + "/api/v1/functions",
        headers={**headers, "Authorization": f"Bearer {token}"},
        data=b"x",
    ) as resp:
        assert resp.status == 413


async def test_an_uploaded_folder_is_kept_while_it_serves_and_goes_with_the_function(
    doors: Doors, tmp_path: Path
) -> None:
    token = await new_tenant(doors, "acme")
    folder = function_folder(tmp_path, name="hello")
    await doors.upload(folder, token)
    (folder / "handler.py").write_text("def handle(event, context):\n    return 'v2'\n")
    await doors.upload(folder, token)
    kept = list(doors.uploads.iterdir())
    assert len(kept) == 1 and (kept[0] / "handler.py").read_text().endswith("'v2'\n")
    await doors.api("DELETE", "/v1/functions/hello", token)
    assert not list(doors.uploads.iterdir())


async def test_an_upload_cut_off_midway_leaves_nothing_and_the_door_serves_on(
    doors: Doors, tmp_path: Path
) -> None:
    token = await new_tenant(doors, "acme")
    archive = pack_bytes(function_folder(tmp_path, name="hello"))
    host, port = doors.api_url.removeprefix("http://").rstrip("/").split(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /api/v1/functions HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {token}\r\n".encode()
        + b"Content-Type: application/gzip\r\n"
        + f"Content-Length: {len(archive) + 100_000}\r\n\r\n".encode()
        + archive[: len(archive) // 2]
    )
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()
    await writer.wait_closed()
    await asyncio.sleep(0.2)
    assert not doors.uploads.exists() or not list(doors.uploads.iterdir())
    assert not doors.controller.functions
    status, events = await doors.upload(function_folder(tmp_path, name="hello"), token)
    assert status == 200 and events[-1]["type"] == "function"


async def test_concurrent_uploads_of_one_function_end_with_one_serving_version(
    doors: Doors, tmp_path: Path
) -> None:
    token = await new_tenant(doors, "acme")
    folders = [function_folder(tmp_path / str(i), answer=f"v{i}", name="hello") for i in range(4)]
    results = await asyncio.gather(*(doors.upload(folder, token) for folder in folders))
    assert all(status == 200 and events[-1]["type"] == "function" for status, events in results)
    fs = doors.controller.get("hello.acme")
    assert len(fs.ready_instances()) == 1
    assert len(list(doors.uploads.iterdir())) == 1  # only the serving version's folder


async def test_many_tenants_created_at_once_each_get_one_working_token(doors: Doors) -> None:
    names = [f"t{i}" for i in range(20)]
    tokens = await asyncio.gather(*(new_tenant(doors, name) for name in names))
    assert len(set(tokens)) == len(names)
    for name, token in zip(names, tokens, strict=True):
        assert doors.tenants.authenticate(token) is not None
        assert doors.tenants.token_tenant(token) == name
    status, _again = await doors.admin("POST", "/v1/tenants", {"name": "t0"})
    assert status == 409


async def test_a_secret_put_over_the_door_is_bounded_and_never_echoed(doors: Doors) -> None:
    token = await new_tenant(doors, "acme")
    big = b"x" * (1024 * 1024 + 1)
    status, body = await doors.api(
        "PUT", "/v1/secrets/db", token, big, {"Content-Type": "application/octet-stream"}
    )
    assert status == 413 and "x" * 100 not in json.dumps(body)


async def test_a_tenants_secrets_are_its_own(doors: Doors) -> None:
    acme, beta = await new_tenant(doors, "acme"), await new_tenant(doors, "beta")
    octet = {"Content-Type": "application/octet-stream"}
    status, body = await doors.api("PUT", "/v1/secrets/db", acme, b"acme-value", octet)
    assert status == 200 and body["created"] and body["revision"] == 1
    status, listed = await doors.api("GET", "/v1/secrets", beta)
    assert status == 200 and listed["secrets"] == []
    assert (await doors.api("DELETE", "/v1/secrets/db", beta))[0] == 404
    status, listed = await doors.api("GET", "/v1/secrets", acme)
    assert [s["name"] for s in listed["secrets"]] == ["db"]
    assert "acme-value" not in json.dumps(listed)
