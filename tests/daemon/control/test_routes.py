"""The control API's routes over the functions service, served by aiohttp on
loopback and driven by a real HTTP client; the controller runs on the in-memory
backend and the deployer on fake artifacts, so no container engine is involved."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from plat.api import Status
from plat.daemon.control import Services, control_routes
from plat.daemon.control.errors import error_middleware
from plat.daemon.control.scope import socket_scope
from plat.daemon.functions import Functions
from plat.daemon.journal import Journal
from plat.daemon.metrics import Metrics
from plat.daemon.serving.controller import Controller
from plat.daemon.store import Store
from plat.daemon.tasks import TaskGroup
from plat.daemon.tenants import Tenants
from plat.manifest import Scale
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


@dataclass
class Api:
    """The routes on a loopback port, and what stands behind them."""

    url: str
    http: aiohttp.ClientSession
    controller: Controller
    artifacts: FakeArtifacts
    tasks: TaskGroup
    shutdowns: list[bool]

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body))
        async with self.http.request(method, self.url + path, data=data) as resp:
            return resp.status, await resp.json()

    async def deploy(self, folder: Path, **options: Any) -> list[dict[str, Any]]:
        """The NDJSON events of one deploy."""
        body = json.dumps({"path": str(folder), **options})
        async with self.http.post(self.url + "/v1/functions", data=body) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "application/x-ndjson"
            return [json.loads(line) for line in (await resp.text()).splitlines()]


def function_folder(root: Path, answer: str = "hi", name: str = "fn") -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plat.yaml").write_text(f"name: {name}\nruntime: python\n")
    (folder / "handler.py").write_text(f"def handle(event, context):\n    return {answer!r}\n")
    return folder


@pytest.fixture
async def api(store: Store, backend: FakeBackend, tmp_path: Path) -> AsyncIterator[Api]:
    controller = make_controller(store, backend)
    artifacts = FakeArtifacts()
    deployer = make_deployer(store, controller, artifacts)
    metrics = Metrics(controller.instance_states)
    functions = Functions(
        store, controller, deployer, metrics, url_of=lambda n: f"http://gw/function/{n}"
    )
    journal = Journal(store, trim_interval=3600)
    await journal.start()
    tasks = TaskGroup(logging.getLogger(__name__))
    shutdowns: list[bool] = []

    def status() -> Status:
        return {"pid": 1, "functions": len(functions)}  # type: ignore[typeddict-item]

    tenants = Tenants(store, "admin-token")
    await tenants.load()
    services = Services(functions, store, journal, tasks, tenants, uploads=tmp_path / "uploads")
    app = web.Application(middlewares=[error_middleware, socket_scope(tenants)])
    app.add_routes(control_routes(services, status=status, shutdown=lambda: shutdowns.append(True)))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as http:
        yield Api(str(server.make_url("")), http, controller, artifacts, tasks, shutdowns)
    await server.close()
    await tasks.close()
    await controller.close()
    await journal.close()


# listing and describing


async def test_nothing_deployed_lists_nothing_and_describes_nothing(api: Api) -> None:
    assert await api.call("GET", "/v1/functions") == (200, [])
    status, body = await api.call("GET", "/v1/functions/nope")
    assert status == 404
    assert body["error"] == "not_found" and body["message"] == "no function named 'nope'"
    assert "plat ls" in body["hint"]


async def test_a_deploy_streams_its_events_in_order_and_the_function_is_listed(
    api: Api, tmp_path: Path
) -> None:
    events = await api.deploy(function_folder(tmp_path))
    kinds = [e["type"] for e in events]
    assert kinds[0] == "phase" and events[0]["phase"] == "build"
    assert kinds.index("log") < kinds.index("built") < kinds.index("done") < kinds.index("function")
    function = events[-1]["function"]
    assert function["url"] == "http://gw/function/fn" and function["instances"] == 1
    status, listed = await api.call("GET", "/v1/functions")
    assert status == 200 and [f["name"] for f in listed] == ["fn"]
    status, described = await api.call("GET", "/v1/functions/fn")
    assert status == 200
    assert described["version"] == events[-2]["version"]
    assert described["admission"] == {"inflight": 0, "held": 0, "waiting": 0, "ok": True}
    assert [i["state"] for i in described["instance_list"]] == ["ready"]
    assert described["versions"][0]["status"] == "built"


async def test_a_failed_build_ends_the_stream_with_its_error_and_the_old_version_serves(
    api: Api, tmp_path: Path
) -> None:
    folder = function_folder(tmp_path)
    first = await api.deploy(folder)
    api.artifacts.failure = "error: no such package"
    (folder / "handler.py").write_text("broken")
    events = await api.deploy(folder)
    assert events[-1]["type"] == "error" and events[-1]["error"] == "build_failed"
    assert "no such package" in events[-1]["log_tail"]
    assert api.controller.get("fn").version == first[-2]["version"]


# hostile input


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "the request body must be JSON"),
        (b"[1, 2]", "the request body must be a JSON object"),
        (b"\xff\xfe\x00", "the request body must be JSON"),
        (b"[" * 100_000, "the request body must be JSON"),
        (json.dumps({"path": 7}).encode(), "deploy needs 'path'"),
        (json.dumps({}).encode(), "deploy needs 'path'"),
    ],
)
async def test_a_malformed_deploy_is_a_400_naming_what_is_wrong(
    api: Api, body: bytes, message: str
) -> None:
    status, answer = await api.call("POST", "/v1/functions", body)
    assert status == 400 and message in answer["message"]


async def test_a_deploy_of_a_folder_without_a_manifest_names_the_file(
    api: Api, tmp_path: Path
) -> None:
    status, answer = await api.call("POST", "/v1/functions", {"path": str(tmp_path)})
    assert 400 <= status < 500 and "plat.yaml" in answer["message"]


async def test_unknown_routes_and_methods_answer_json(api: Api) -> None:
    status, body = await api.call("GET", "/v1/nowhere")
    assert status == 404 and "no such control API route" in body["message"]
    async with api.http.put(api.url + "/v1/functions") as resp:
        assert resp.status == 405 and "GET" in resp.headers["Allow"]
        assert "not allowed" in (await resp.json())["message"]


# scaling


async def test_scale_applies_now_and_is_kept_as_an_override_until_reset(
    api: Api, tmp_path: Path
) -> None:
    await api.deploy(function_folder(tmp_path))
    status, body = await api.call("PATCH", "/v1/functions/fn/scale", {"min": 2, "max": 3})
    assert status == 200 and body["override"] == {"min": 2, "max": 3}
    assert api.controller.get("fn").target == 2
    status, body = await api.call("PATCH", "/v1/functions/fn/scale", {"reset": True})
    assert status == 200 and body["override"] is None
    assert body["scale"] == Scale().model_dump()  # what plat.yaml declares: the defaults


@pytest.mark.parametrize(
    ("change", "problem"),
    [({"min": 5, "max": 2}, "invalid scale settings"), ({"concurrency": 0}, "concurrency")],
)
async def test_impossible_scale_settings_are_a_400_and_change_nothing(
    api: Api, tmp_path: Path, change: dict[str, int], problem: str
) -> None:
    await api.deploy(function_folder(tmp_path))
    before = api.controller.get("fn").manifest.scale
    status, body = await api.call("PATCH", "/v1/functions/fn/scale", change)
    assert status == 400 and problem in body["message"]
    assert api.controller.get("fn").manifest.scale == before


async def test_scaling_an_unknown_function_is_a_404(api: Api) -> None:
    status, body = await api.call("PATCH", "/v1/functions/nope/scale", {"min": 1})
    assert status == 404 and body["message"] == "no function named 'nope'"


# removal, builds, logs, stats


async def test_remove_then_everything_about_the_function_is_a_404(api: Api, tmp_path: Path) -> None:
    await api.deploy(function_folder(tmp_path))
    assert await api.call("DELETE", "/v1/functions/fn") == (200, {"removed": "fn"})
    for method, path in [
        ("GET", "/v1/functions/fn"),
        ("DELETE", "/v1/functions/fn"),
        ("GET", "/v1/functions/fn/logs"),
        ("GET", "/v1/stats?function=fn"),
    ]:
        status, body = await api.call(method, path)
        assert (status, body["error"]) == (404, "not_found"), path


async def test_the_latest_build_log_and_an_unknown_build(api: Api, tmp_path: Path) -> None:
    events = await api.deploy(function_folder(tmp_path))
    version = events[-2]["version"]
    status, body = await api.call("GET", "/v1/functions/fn/builds/latest")
    assert status == 200 and body["version"] == version and version in body["log"]
    status, body = await api.call("GET", "/v1/functions/fn/builds/nope")
    assert status == 404 and "no build nope" in body["message"]


async def test_stats_of_a_deployed_function_with_no_calls_are_zero(
    api: Api, tmp_path: Path
) -> None:
    await api.deploy(function_folder(tmp_path))
    status, body = await api.call("GET", "/v1/stats?function=fn&since=5m")
    assert status == 200 and body["since"] == "5m"
    assert body["functions"][0]["invocations"] == 0
    status, body = await api.call("GET", "/v1/stats?since=yesterday")
    assert status == 400 and "bad --since" in body["message"]


# the daemon itself


async def test_status_and_shutdown_reach_what_the_daemon_gave(api: Api) -> None:
    assert await api.call("GET", "/v1/status") == (200, {"pid": 1, "functions": 0})
    assert await api.call("POST", "/v1/shutdown") == (200, {"stopping": True})
    assert api.shutdowns == [True]


# concurrency and clients that leave


async def test_concurrent_deploys_of_one_function_take_turns_and_the_last_one_serves(
    api: Api, tmp_path: Path
) -> None:
    folders = [function_folder(tmp_path / str(n), answer=str(n)) for n in range(4)]
    results = await asyncio.gather(*(api.deploy(f) for f in folders))
    assert all(r[-1]["type"] == "function" for r in results)
    versions = {r[-2]["version"] for r in results}
    assert len(versions) == 4 and api.controller.get("fn").version in versions
    assert len(api.controller.get("fn").ready_instances()) == 1


async def test_a_deploy_whose_client_leaves_midway_carries_on_to_its_end(
    api: Api, tmp_path: Path
) -> None:
    api.artifacts.gate = asyncio.Event()
    body = json.dumps({"path": str(function_folder(tmp_path))})
    async with api.http.post(api.url + "/v1/functions", data=body) as resp:
        await resp.content.readline()  # the first event; then the client goes
    await api.artifacts.waiting.wait()
    api.artifacts.gate.set()
    deadline = asyncio.get_running_loop().time() + 5
    while "fn" not in api.controller.functions:
        assert asyncio.get_running_loop().time() < deadline, "the deploy did not finish"
        await asyncio.sleep(0.02)
    assert api.controller.get("fn").ready_instances()
