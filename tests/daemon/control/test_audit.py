"""The audit middleware and routes through both doors, on real servers: the socket
door on a real unix socket (the peer's uid), the gateway's /api door over loopback
with tokens; the controller runs on the in-memory backend."""

from __future__ import annotations

import asyncio
import json
import logging
import os
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
from plat.daemon.audit import AuditLog
from plat.daemon.control import Services, api_app, control_routes, control_runner
from plat.daemon.functions import Functions
from plat.daemon.journal import Journal
from plat.daemon.metrics import Metrics
from plat.daemon.secrets.sealing import Sealer
from plat.daemon.secrets.service import SecretsService
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

ADMIN_TOKEN = "plat_admin_audit-test"
SECRET_VALUE = "s3cr3t-value-never-recorded"


@dataclass
class Doors:
    socket: aiohttp.ClientSession  # over the unix socket
    api_url: str
    http: aiohttp.ClientSession
    audit: AuditLog
    artifacts: FakeArtifacts

    async def admin(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body)
        async with self.socket.request(method, "http://plat" + path, data=data, **kw) as resp:
            text = await resp.text()
            if resp.content_type == "application/x-ndjson":
                return resp.status, [json.loads(line) for line in text.splitlines()]
            return resp.status, json.loads(text)

    async def api(
        self, method: str, path: str, token: str | None, body: Any = None, **kw: Any
    ) -> tuple[int, Any]:
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = body if isinstance(body, bytes) or body is None else json.dumps(body)
        async with self.http.request(
            method, self.api_url + "/api" + path, data=data, headers=headers, **kw
        ) as resp:
            text = await resp.text()
            if resp.content_type == "application/x-ndjson":
                return resp.status, [json.loads(line) for line in text.splitlines()]
            return resp.status, json.loads(text)

    async def records(self, **query: str) -> list[dict[str, Any]]:
        status, body = await self.admin("GET", "/v1/audit?limit=10000", params=query)
        assert status == 200, body
        return list(body["records"])


@pytest.fixture
async def doors(store: Store, backend: FakeBackend, tmp_path: Path) -> AsyncIterator[Doors]:
    audit = AuditLog(store.path, head_file=tmp_path / "audit.head")
    await audit.start()
    tenants = Tenants(store, ADMIN_TOKEN)
    await tenants.load()
    controller = make_controller(store, backend, limits_of=tenants.limits_of)
    artifacts = FakeArtifacts()
    deployer = make_deployer(store, controller, artifacts)
    uploads = tmp_path / "uploads"
    functions = Functions(
        store,
        controller,
        deployer,
        Metrics(controller.instance_states),
        url_of=lambda key: f"http://gw/function/{key}",
        uploads=uploads,
    )
    journal = Journal(store, trim_interval=3600)
    await journal.start()
    tasks = TaskGroup(logging.getLogger(__name__))
    secrets = SecretsService(store, Sealer.from_home(tmp_path), {})
    services = Services(
        functions, store, journal, tasks, tenants, uploads=uploads, secrets=secrets, audit=audit
    )

    def status() -> Status:
        return {"pid": 1}  # type: ignore[typeddict-item]

    routes = control_routes(services, status=status, shutdown=lambda: None)
    runner = control_runner(routes, tenants, audit)
    await runner.setup()
    sock = tmp_path / "plat.sock"
    await web.UnixSite(runner, str(sock)).start()
    gateway_app = web.Application()
    gateway_app.add_subapp("/api", api_app(routes, tenants, basic_header("pw"), audit))
    server = TestServer(gateway_app, host="127.0.0.1")
    await server.start_server()
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock))) as over_socket,
        aiohttp.ClientSession() as http,
    ):
        yield Doors(over_socket, str(server.make_url("")), http, audit, artifacts)
    await server.close()
    await runner.cleanup()
    await tasks.close()
    await controller.close()
    await journal.close()
    await audit.close()


async def test_changes_through_the_socket_are_the_admins_from_its_uid(
    doors: Doors, tmp_path: Path
) -> None:
    folder = function_folder(tmp_path / "src", name="hello")
    status, events = await doors.admin("POST", "/v1/functions", {"path": str(folder)})
    assert status == 200 and events[-1]["type"] == "function"
    assert (await doors.admin("PATCH", "/v1/functions/hello/scale", {"max": 3, "min": 0}))[0] == 200
    assert (await doors.admin("GET", "/v1/functions/hello"))[0] == 200  # reads: no record
    assert (await doors.admin("DELETE", "/v1/functions/hello"))[0] == 200
    assert (await doors.admin("DELETE", "/v1/functions/hello"))[0] == 404
    rows = await doors.records()
    assert [(r["action"], r["target"], r["outcome"]) for r in rows] == [
        ("function.deploy", "hello", "ok"),
        ("function.scale", "hello", "ok"),
        ("function.rm", "hello", "ok"),
        ("function.rm", "hello", "not_found"),
    ]
    assert {(r["actor"], r["origin"], r["tenant"]) for r in rows} == {
        ("admin", f"uid:{os.getuid()}", "default")
    }
    assert rows[0]["params"]["force"] is False and len(rows[0]["params"]["version"]) > 0
    assert rows[1]["params"] == {"max": 3, "min": 0}


async def test_a_failed_deploy_is_recorded_with_its_error_though_the_answer_was_200(
    doors: Doors, tmp_path: Path
) -> None:
    doors.artifacts.failure = "the build broke"
    folder = function_folder(tmp_path / "src", name="broken")
    status, events = await doors.admin("POST", "/v1/functions", {"path": str(folder)})
    assert status == 200 and events[-1]["type"] == "error"
    (row,) = await doors.records(action="function.deploy")
    assert (row["target"], row["outcome"]) == ("broken", events[-1]["error"])
    assert row["outcome"] != "ok"


async def test_tenant_and_secret_changes_record_names_never_values_or_tokens(
    doors: Doors,
) -> None:
    status, created = await doors.admin("POST", "/v1/tenants", {"name": "acme", "max_instances": 3})
    assert status == 201
    token = created["token"]
    status, rotated = await doors.admin("POST", "/v1/tenants/acme/token")
    new_token = rotated["token"]
    assert (await doors.api("PUT", "/v1/secrets/db", new_token, SECRET_VALUE.encode()))[0] == 200
    assert (await doors.api("DELETE", "/v1/secrets/db", new_token))[0] == 200
    assert (await doors.admin("DELETE", "/v1/tenants/acme?force=1"))[0] == 200
    rows = await doors.records()
    assert [(r["action"], r["actor"], r["target"], r["tenant"]) for r in rows] == [
        ("tenant.create", "admin", "acme", "acme"),
        ("tenant.token.rotate", "admin", "acme", "acme"),
        ("secret.set", "tenant:acme", "db", "acme"),
        ("secret.rm", "tenant:acme", "db", "acme"),
        ("tenant.rm", "admin", "acme", "acme"),
    ]
    assert rows[0]["params"] == {"max_instances": 3}
    assert rows[2]["origin"] == "127.0.0.1"
    everything = json.dumps(rows)
    for value in (SECRET_VALUE, token, new_token):
        assert value not in everything


async def test_refused_tokens_are_recorded_bounded_and_a_tenant_sees_only_its_records(
    doors: Doors,
) -> None:
    _, created = await doors.admin("POST", "/v1/tenants", {"name": "acme"})
    token = created["token"]
    assert (await doors.admin("POST", "/v1/tenants", {"name": "beta"}))[0] == 201
    assert (await doors.api("GET", "/v1/functions", None))[0] == 401  # no credentials: no record
    results = await asyncio.gather(
        *(doors.api("GET", "/v1/functions", f"forged-{i}") for i in range(60))
    )
    assert {status for status, _ in results} == {401}
    failed = await doors.records(action="auth.failed")
    assert len(failed) == 10  # the share of one origin per window
    assert {(r["actor"], r["outcome"], r["target"]) for r in failed} == {
        ("anonymous", "unauthorized", "/api/v1/functions")
    }
    assert all("forged" not in json.dumps(r) for r in failed)

    status, body = await doors.api("GET", "/v1/audit", token)
    assert status == 200
    assert {r["tenant"] for r in body["records"]} == {"acme"}
    assert [r["action"] for r in body["records"]] == ["tenant.create"]
    status, lines = await doors.api("GET", "/v1/audit/export", token)
    assert status == 200 and [r["target"] for r in lines] == ["acme"]
    status, body = await doors.api("GET", "/v1/audit/verify", token)
    assert (status, body["error"]) == (403, "forbidden")
    status, body = await doors.api(
        "GET", "/v1/audit", ADMIN_TOKEN, headers={"X-Plat-Tenant": "beta"}
    )
    assert [r["target"] for r in body["records"]] == ["beta"]


async def test_the_routes_refuse_malformed_queries(doors: Doors) -> None:
    for query in ("limit=0", "limit=10001", "limit=x", "since=yesterday", "since=" + "9" * 400):
        status, body = await doors.admin("GET", f"/v1/audit?{query}")
        assert status == 400 and body["error"] == "bad_request", (query, body)
    assert (await doors.admin("GET", "/v1/audit?since=2999-01-01T00:00:00Z"))[1]["records"] == []
    assert (await doors.admin("GET", "/v1/audit?since=1h&action=x%00"))[0] == 200


async def test_verify_and_export_over_the_socket(doors: Doors) -> None:
    for name in ("t1", "t2", "t3"):
        await doors.admin("POST", "/v1/tenants", {"name": name})
    status, verdict = await doors.admin("GET", "/v1/audit/verify")
    assert status == 200 and verdict["ok"] and verdict["records"] == 3
    status, lines = await doors.admin("GET", "/v1/audit/export")
    assert [r["seq"] for r in lines] == [1, 2, 3]
    assert lines[1]["prev"] == lines[0]["hash"]


async def test_an_upload_whose_client_leaves_midway_is_still_recorded(
    doors: Doors, tmp_path: Path
) -> None:
    _, created = await doors.admin("POST", "/v1/tenants", {"name": "acme"})
    gate = asyncio.Event()
    doors.artifacts.gate = gate
    body = pack_bytes(function_folder(tmp_path / "src", name="slow"))
    request = asyncio.ensure_future(
        doors.api(
            "POST",
            "/v1/functions",
            created["token"],
            body,
            headers={"Content-Type": "application/gzip"},
        )
    )
    building = asyncio.ensure_future(doors.artifacts.waiting.wait())
    await asyncio.wait({building, request}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    # The deploy must be building, its client still waiting (else say what it got).
    assert building.done(), request.result() if request.done() else "no build within 30 s"
    request.cancel()  # the client hangs up while its deploy builds
    await asyncio.gather(request, return_exceptions=True)
    gate.set()

    async def recorded() -> list[dict[str, Any]]:
        while not (rows := await doors.records(action="function.deploy")):
            await asyncio.sleep(0.05)
        return rows

    (row,) = await asyncio.wait_for(recorded(), 10)
    assert (row["target"], row["tenant"], row["actor"]) == ("slow", "acme", "tenant:acme")
    assert row["outcome"] == "ok" and row["params"]["uploaded"] is True
