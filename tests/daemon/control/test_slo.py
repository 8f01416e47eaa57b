"""GET /v1/slo and /v1/slo/rules through both doors of the control API: real aiohttp
servers on loopback, a real HTTP client, the real store holding the invocation
records (some written through the journal); the controller runs on the in-memory
backend, so no engine is involved."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from plat.api import Status
from plat.credentials import basic_header
from plat.daemon.control import Services, api_app, control_routes
from plat.daemon.control.errors import error_middleware
from plat.daemon.control.scope import socket_scope
from plat.daemon.functions import Functions
from plat.daemon.journal import Journal, Retention
from plat.daemon.metrics import Metrics
from plat.daemon.store import Invocation, Store
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

ADMIN_TOKEN = "plat_admin_slo-test"
DAY = 86400.0
HELLO_SLO = "slo: {availability: 99.9, latency: {p95: 300ms}}\n"


@dataclass
class Door:
    admin_url: str
    api_url: str
    http: aiohttp.ClientSession
    store: Store
    journal: Journal

    async def get(
        self, path: str, *, token: str | None = None, tenant: str | None = None
    ) -> tuple[int, Any]:
        """GET on the socket's routes (the admin), or on the /api door with ``token``."""
        headers = {"X-Plat-Tenant": tenant} if tenant else {}
        url = self.admin_url + path
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
            url = self.api_url + "/api" + path
        async with self.http.get(url, headers=headers) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, (resp.content_type, await resp.text())

    async def deploy(self, root: Path, name: str, slo: str = "", tenant: str | None = None) -> None:
        folder = function_folder(root / (tenant or "default"), name=name)
        with (folder / "plat.yaml").open("a") as fh:
            fh.write(slo)
        headers = {"X-Plat-Tenant": tenant} if tenant else {}
        body = json.dumps({"path": str(folder)})
        async with self.http.post(
            self.admin_url + "/v1/functions", data=body, headers=headers
        ) as resp:
            events = [json.loads(line) for line in (await resp.text()).splitlines()]
        assert events[-1]["type"] == "function", events

    async def tenant(self, name: str) -> str:
        async with self.http.post(
            self.admin_url + "/v1/tenants", data=json.dumps({"name": name})
        ) as resp:
            assert resp.status == 201
            return str((await resp.json())["token"])

    async def record(self, key: str, *rows: tuple[float, int, float]) -> None:
        """Invocation records of ``key``: (age in seconds, status, duration)."""
        now = time.time()
        await self.store.insert_invocations(
            [Invocation(now - age, key, "v1", st, d, 0, 0, False, "c") for age, st, d in rows]
        )


async def serve(store: Store, backend: FakeBackend, tmp_path: Path, retention: Retention) -> Any:
    tenants = Tenants(store, ADMIN_TOKEN)
    await tenants.load()
    controller = make_controller(store, backend, limits_of=tenants.limits_of)
    deployer = make_deployer(store, controller, FakeArtifacts())
    functions = Functions(
        store, controller, deployer, Metrics(controller.instance_states), url_of=lambda k: k
    )
    journal = Journal(store, retention, trim_interval=3600)
    await journal.start()
    tasks = TaskGroup(logging.getLogger(__name__))
    services = Services(functions, store, journal, tasks, tenants, uploads=tmp_path / "uploads")

    def status() -> Status:
        return {"pid": 1}  # type: ignore[typeddict-item]

    routes = control_routes(services, status=status, shutdown=lambda: None)
    socket_app = web.Application(middlewares=[error_middleware, socket_scope(tenants)])
    socket_app.add_routes(routes)
    gateway_app = web.Application()
    gateway_app.add_subapp("/api", api_app(routes, tenants, basic_header("pw")))
    servers = [TestServer(socket_app, host="127.0.0.1"), TestServer(gateway_app, host="127.0.0.1")]
    for server in servers:
        await server.start_server()

    async def close() -> None:
        for server in servers:
            await server.close()
        await tasks.close()
        await controller.close()
        await journal.close()

    urls = [str(server.make_url("")) for server in servers]
    return urls, journal, close


@pytest.fixture
async def door(store: Store, backend: FakeBackend, tmp_path: Path) -> AsyncIterator[Door]:
    urls, journal, close = await serve(store, backend, tmp_path, Retention())
    async with aiohttp.ClientSession() as http:
        yield Door(urls[0], urls[1], http, store, journal)
    await close()


def sli(function: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [s for s in function["slis"] if s["sli"] == name]
    return found


def window(function: dict[str, Any], name: str, span: str) -> dict[str, Any]:
    (found,) = [w for w in sli(function, name)["windows"] if w["window"] == span]
    return found


async def test_without_slos_there_is_nothing_to_show_and_no_rule_groups(door: Door) -> None:
    status, body = await door.get("/v1/slo")
    assert status == 200
    assert body["functions"] == []
    assert (body["invocation_records"], body["invocation_age"]) == (100_000, 7 * DAY)
    status, (content_type, text) = await door.get("/v1/slo/rules")
    assert (status, content_type) == (200, "application/yaml")
    assert yaml.safe_load(text) == {"groups": []}


async def test_slis_budget_and_burn_rates_from_the_records(door: Door, tmp_path: Path) -> None:
    await door.deploy(tmp_path, "hello", HELLO_SLO)
    await door.deploy(tmp_path, "plain")  # no slo: not listed
    await door.record(
        "hello",
        *[(60, 200, 0.1)] * 90,  # the last 5 minutes: 90 fast answers,
        *[(60, 503, 0.01)] * 5,  # 5 errors (fast ones),
        *[(60, 429, 0.01)] * 5,  # 5 refusals, which are not errors
        *[(2 * DAY, 200, 1.0)] * 900,  # two days ago: 900 slow answers
    )
    await door.record("plain", (60, 500, 0.1))
    # Recorded by the gateway but not yet written: the route flushes the journal first.
    door.journal.invocation(Invocation(time.time(), "hello", "v1", 200, 0.2, 0, 0, False, "late"))
    status, body = await door.get("/v1/slo")
    assert status == 200, body
    (hello,) = body["functions"]
    assert (hello["function"], hello["tenant"]) == ("hello", "default")
    five = window(hello, "availability", "5m")
    assert (five["calls"], five["good"]) == (101, 96)
    assert five["burn_rate"] == pytest.approx((5 / 101) / 0.001)
    month = window(hello, "availability", "30d")
    assert (month["calls"], month["good"]) == (1001, 996)
    assert sli(hello, "availability")["budget_left"] == pytest.approx(1 - (5 / 1001) / 0.001)
    assert sli(hello, "availability")["alert"] == "page"  # 5 % errors over 5m and 1h
    latency = sli(hello, "latency")
    assert (latency["percentile"], latency["threshold"], latency["rules_threshold"]) == (
        "p95",
        0.3,
        0.5,
    )
    assert window(hello, "latency", "5m")["good"] == 101  # 0.2 s and below
    assert window(hello, "latency", "30d")["good"] == 101  # the 900 slow ones count
    assert [w["window"] for w in latency["windows"]] == ["5m", "1h", "6h", "1d", "30d"]
    # The default retention keeps 7 days: the 30d window covers less, and says so.
    assert any(n.startswith("the 30d window covers only the last 7d") for n in hello["notes"])
    assert any("300 ms is not a bucket boundary" in n for n in hello["notes"])

    status, one = await door.get("/v1/slo?function=hello")
    assert status == 200 and [f["function"] for f in one["functions"]] == ["hello"]


async def test_a_function_without_an_slo_or_that_does_not_exist_is_a_404(
    door: Door, tmp_path: Path
) -> None:
    await door.deploy(tmp_path, "plain")
    status, body = await door.get("/v1/slo?function=plain")
    assert status == 404
    assert body["error"] == "no_slo"
    assert body["message"] == "function 'plain' has no SLO"
    assert "slo: {availability: 99.9" in body["hint"]
    for name in ("nope", "Bad..Name", "a" * 5000, "hello.acme", "../etc"):
        for path in ("/v1/slo", "/v1/slo/rules"):
            status, body = await door.get(f"{path}?function={name}")
            assert status == 404, (path, name)
            assert body["error"] == "not_found"
            assert len(json.dumps(body)) < 6000


async def test_a_tenant_sees_only_its_own_slos(door: Door, tmp_path: Path) -> None:
    acme = await door.tenant("acme")
    beta = await door.tenant("beta")
    await door.deploy(tmp_path, "hello", HELLO_SLO)
    await door.deploy(tmp_path, "hello", "slo: {availability: 99.5}\n", tenant="acme")
    await door.deploy(tmp_path, "other", "slo: {availability: 99}\n", tenant="beta")
    await door.record("hello.acme", (30, 500, 0.1), (30, 200, 0.1))
    await door.record("hello", (30, 200, 0.1))

    status, body = await door.get("/v1/slo", token=acme)
    assert status == 200
    assert [(f["function"], f["tenant"]) for f in body["functions"]] == [("hello", "acme")]
    assert window(body["functions"][0], "availability", "5m")["calls"] == 2
    # The admin sees every tenant's, or one tenant's when it names one.
    status, body = await door.get("/v1/slo")
    assert {(f["function"], f["tenant"]) for f in body["functions"]} == {
        ("hello", "default"),
        ("hello", "acme"),
        ("other", "beta"),
    }
    status, body = await door.get("/v1/slo", tenant="acme")
    assert [f["tenant"] for f in body["functions"]] == ["acme"]

    # beta asking for acme's hello, however it asks: a 404, never acme's numbers.
    for path in ("/v1/slo?function=hello", "/v1/slo/rules?function=hello"):
        status, _ = await door.get(path, token=beta)
        assert status == 404, path
        status, _ = await door.get(path, token=beta, tenant="acme")
        assert status == 404, path
    status, _ = await door.get("/v1/slo?function=hello.acme", token=beta)
    assert status == 404
    status, body = await door.get("/v1/slo?function=hello", token=beta)
    assert body["message"] == "no function named 'hello'"  # not its key, hello.beta

    status, (_, text) = await door.get("/v1/slo/rules", token=acme)
    assert status == 200
    groups = yaml.safe_load(text)["groups"]
    assert [g["name"] for g in groups] == ["plat-slo:acme/hello"]
    assert 'tenant="default"' not in text and 'tenant="beta"' not in text
    status, answer = await door.get("/v1/slo/rules?format=json", token=acme)
    assert status == 200
    assert (answer["functions"], answer["rules"]) == (1, 12)
    assert answer["yaml"] == text and answer["notes"] == []


async def test_admin_rules_cover_every_tenant_and_note_the_rounding(
    door: Door, tmp_path: Path
) -> None:
    await door.tenant("acme")
    await door.deploy(tmp_path, "hello", HELLO_SLO)
    await door.deploy(tmp_path, "hello", "slo: {latency: {p99: 45s}}\n", tenant="acme")
    status, answer = await door.get("/v1/slo/rules?format=json")
    assert status == 200
    assert (answer["functions"], answer["rules"]) == (1, 24)
    assert answer["notes"][0].startswith("hello (tenant default): latency p95 300 ms")
    assert answer["notes"][1].startswith("hello (tenant acme): latency p99 45 s is above")
    assert [g["name"] for g in yaml.safe_load(answer["yaml"])["groups"]] == [
        "plat-slo:default/hello"
    ]


async def test_a_stored_slo_this_daemon_cannot_read_is_skipped(door: Door, tmp_path: Path) -> None:
    await door.deploy(tmp_path, "hello", HELLO_SLO)
    await door.store.upsert_function(
        "odd", {"name": "odd", "runtime": "python", "slo": {"availability": 120}}, "/x", "v1"
    )
    status, body = await door.get("/v1/slo")
    assert status == 200
    assert [f["function"] for f in body["functions"]] == ["hello"]
    status, body = await door.get("/v1/slo?function=odd")
    assert (status, body["error"]) == (404, "no_slo")


async def test_concurrent_reports_while_calls_are_recorded(door: Door, tmp_path: Path) -> None:
    await door.deploy(tmp_path, "hello", HELLO_SLO)
    await door.record("hello", *[(i % 3000, 200 if i % 10 else 500, 0.1) for i in range(20_000)])

    async def more() -> None:
        for i in range(200):
            door.journal.invocation(
                Invocation(time.time(), "hello", "v1", 200, 0.1, 0, 0, False, f"c{i}")
            )
            await asyncio.sleep(0)

    results = await asyncio.gather(more(), *(door.get("/v1/slo") for _ in range(20)))
    for status, body in results[1:]:
        assert status == 200
        month = window(body["functions"][0], "availability", "30d")
        assert 20_000 <= month["calls"] <= 20_200
        assert month["calls"] - month["good"] == 2000
    status, body = await door.get("/v1/slo")
    assert window(body["functions"][0], "availability", "30d")["calls"] == 20_200


@pytest.fixture
async def short_door(store: Store, backend: FakeBackend, tmp_path: Path) -> AsyncIterator[Door]:
    retention = Retention(invocations=50, invocation_age=40 * DAY)
    urls, journal, close = await serve(store, backend, tmp_path, retention)
    async with aiohttp.ClientSession() as http:
        yield Door(urls[0], urls[1], http, store, journal)
    await close()


async def test_records_kept_by_count_are_said_to_cover_less(
    short_door: Door, tmp_path: Path
) -> None:
    await short_door.deploy(tmp_path, "hello", HELLO_SLO)
    await short_door.record("hello", *[(i * 60.0, 200, 0.1) for i in range(50)])
    status, body = await short_door.get("/v1/slo")
    assert status == 200
    (hello,) = body["functions"]
    assert body["invocation_records"] == 50
    (note,) = [n for n in hello["notes"] if "cover" in n]
    assert note.startswith("the 1h, 6h, 1d, 30d windows cover only the last 49m")
    assert "(invocation_records)" in note
    assert window(hello, "availability", "1d")["covered"] == pytest.approx(49 * 60, abs=5)
