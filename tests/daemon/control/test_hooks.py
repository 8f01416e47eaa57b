"""Git hooks through real HTTP on loopback: the control routes (the admin's door)
and the receiver, ``POST /hooks/git/<id>``, with deliveries in each provider's
format signed as the provider would; commits from a real git repository; the
deploys run through the real functions service on the in-memory backend.

Forged, replayed, oversized, malformed and concurrent deliveries change nothing.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
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
from plat.daemon.hooks.service import HookService
from plat.daemon.hooks.signatures import Provider, sign
from plat.daemon.journal import Journal
from plat.daemon.metrics import Metrics
from plat.daemon.secrets.sealing import Sealer
from plat.daemon.store import Store
from plat.daemon.store.hooks import DeliveryRecord
from plat.daemon.tasks import TaskGroup
from plat.daemon.tenants import Tenants
from tests.daemon.fakes import (
    FakeArtifacts,
    FakeBackend,
    backend_fixture,
    eventually,
    make_controller,
    make_deployer,
    store_fixture,
)
from tests.daemon.hooks.gitrepo import Repo, git

__all__ = ["backend_fixture", "store_fixture"]

pytestmark = pytest.mark.timeout(60)

MANIFEST = "name: web\nruntime: python\nhandler: handler.handle\nscale: {min: 1}\n"
FINAL = {"done", "failed", "ignored", "duplicate", "rejected"}
ZERO = "0" * 40


@dataclass
class Rig:
    admin_url: str
    hook_url: str
    http: aiohttp.ClientSession
    hooks: HookService
    functions: Functions
    artifacts: FakeArtifacts
    repo: Repo
    audit: list[dict[str, Any]] = field(default_factory=list)

    async def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body)
        async with self.http.request(method, self.admin_url + path, data=data) as resp:
            return resp.status, await resp.json()

    async def add(self, **extra: Any) -> dict[str, Any]:
        body = {"function": "web", "repo": str(self.repo.bare), **extra}
        status, hook = await self.admin("POST", "/v1/hooks", body)
        assert status == 201, hook
        return dict(hook)

    async def deliver(
        self,
        hook: dict[str, Any],
        payload: dict[str, Any] | bytes,
        *,
        provider: Provider = "github",
        event: str = "push",
        delivery: str | None = None,
        secret: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        sent = event_headers(provider, event, delivery or str(uuid.uuid4()))
        sent.update(sign(provider, (secret or hook["secret"]).encode(), body))
        sent.update(headers or {})
        url = f"{self.hook_url}/hooks/git/{hook['id']}"
        async with self.http.post(url, data=body, headers=sent) as resp:
            return resp.status, await resp.json()

    async def settled(self, hook: dict[str, Any], count: int) -> list[dict[str, Any]]:
        """The hook's deliveries once the newest ``count`` have ended."""
        got: list[dict[str, Any]] = []

        async def check() -> bool:
            nonlocal got
            _, got = await self.admin("GET", f"/v1/hooks/{hook['id']}/deliveries")
            return len(got) >= count and all(d["state"] in FINAL for d in got[:count])

        deadline = time.monotonic() + 30
        while not await check():
            assert time.monotonic() < deadline, got
            await asyncio.sleep(0.05)
        return got

    def version(self, key: str) -> str | None:
        fs = self.functions.controller.functions.get(key)
        return fs.version if fs is not None else None


def event_headers(provider: Provider, event: str, delivery: str) -> dict[str, str]:
    if provider == "github":
        return {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery}
    if provider == "gitlab":
        return {"X-Gitlab-Event": event, "X-Gitlab-Event-UUID": delivery}
    name = provider.capitalize()
    return {f"X-{name}-Event": event, f"X-{name}-Delivery": delivery}


def push(branch: str, after: str, before: str = ZERO) -> dict[str, Any]:
    return {"ref": f"refs/heads/{branch}", "before": before, "after": after}


@pytest.fixture
async def rig(store: Store, backend: FakeBackend, tmp_path: Path) -> AsyncIterator[Rig]:
    tenants = Tenants(store, "plat_admin_test")
    await tenants.load()
    controller = make_controller(store, backend)
    await controller.start()
    artifacts = FakeArtifacts()
    deployer = make_deployer(store, controller, artifacts)
    metrics = Metrics(controller.instance_states)
    functions = Functions(
        store, controller, deployer, metrics, url_of=lambda key: f"http://gw/function/{key}"
    )
    journal = Journal(store, trim_interval=3600)
    await journal.start()
    tasks = TaskGroup(logging.getLogger(__name__))
    audit: list[dict[str, Any]] = []
    hooks = HookService(
        store,
        functions,
        Sealer.from_home(tmp_path),
        tmp_path / "hooks",
        dict(os.environ),
        gateway_url=lambda: "http://127.0.0.1:8080",
        audit=lambda **record: audit.append(record),
        reap_every=3600,
    )
    services = Services(
        functions, store, journal, tasks, tenants, uploads=tmp_path / "u", hooks=hooks
    )

    def status() -> Status:
        return {"pid": 1}  # type: ignore[typeddict-item]

    routes = control_routes(services, status=status, shutdown=lambda: None)
    admin_app = web.Application(middlewares=[error_middleware, socket_scope(tenants)])
    admin_app.add_routes(routes)
    gateway_app = web.Application()
    gateway_app.add_routes(hooks.routes)
    servers = [TestServer(admin_app, host="127.0.0.1"), TestServer(gateway_app, host="127.0.0.1")]
    for server in servers:
        await server.start_server()
    await hooks.start()
    repo = Repo.create(
        tmp_path / "repo",
        {"plat.yaml": MANIFEST, "handler.py": "def handle(e, c):\n    return 'v1'\n"},
    )
    async with aiohttp.ClientSession() as http:
        yield Rig(
            str(servers[0].make_url("")),
            str(servers[1].make_url("")),
            http,
            hooks,
            functions,
            artifacts,
            repo,
            audit,
        )
    await hooks.close()
    for server in servers:
        await server.close()
    await tasks.close()
    await controller.close()
    await journal.close()


def head(repo: Repo) -> str:
    return git("rev-parse", "HEAD", cwd=repo.work).strip()


async def test_a_push_deploys_and_forgeries_replays_and_floods_change_nothing(rig: Rig) -> None:
    hook = await rig.add()
    assert hook["url"] == f"http://127.0.0.1:8080/hooks/git/{hook['id']}"
    status, body = await rig.deliver(hook, push("main", head(rig.repo)), delivery="gh-1")
    assert status == 202 and body["status"] == "queued" and body["function"] == "web", body
    [done] = await rig.settled(hook, 1)
    assert done["state"] == "done" and done["commit"] == head(rig.repo), done
    version = rig.version("web")
    assert version is not None

    sha = rig.repo.commit({"handler.py": "def handle(e, c):\n    return 'v2'\n"}, "v2")
    rig.repo.push("main")
    payload = push("main", sha)
    body_bytes = json.dumps(payload).encode()
    forged = await rig.deliver(hook, body_bytes, secret="not-the-secret")
    unsigned = await rig.deliver(hook, body_bytes, headers={"X-Hub-Signature-256": ""})
    assert forged[0] == unsigned[0] == 401
    assert forged[1] == {"error": "bad_signature", "message": "the signature does not match"}
    # A replay of the first delivery: by its id, or its body under a new id.
    replay = await rig.deliver(hook, push("main", head(rig.repo)), delivery="gh-1")
    assert replay == (200, {"status": "duplicate", "delivery": "gh-1"})
    again = await rig.deliver(hook, json.dumps(push("main", done["commit"])).encode())
    assert again[0] == 200 and again[1]["status"] == "duplicate"
    # Oversized, by its length or by what it sends (chunked).
    big = b"{" + b" " * (1024**2) + b"}"
    url = f"{rig.hook_url}/hooks/git/{hook['id']}"
    signed = sign("github", b"x", big)
    async with rig.http.post(url, data=io.BytesIO(big), headers=signed) as resp:
        assert resp.status == 413

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b" " * 65536

    async with rig.http.post(url, data=chunks()) as resp:
        assert resp.status == 413
    # Unknown hooks, and other methods.
    for path in ("/hooks/git/0123456789abcdef", "/hooks/git/%20x", "/hooks/git/" + "a" * 500):
        async with rig.http.post(rig.hook_url + path, data=body_bytes) as resp:
            assert resp.status == 404 and await resp.json() == {
                "error": "not_found",
                "message": "no such hook",
            }
    async with rig.http.get(url) as resp:
        assert resp.status == 405 and resp.headers["Allow"] == "POST"
    await asyncio.sleep(0.2)
    assert rig.version("web") == version  # nothing deployed
    states = [d["state"] for d in await rig.settled(hook, 1)]
    assert states[:4] == ["duplicate", "duplicate", "rejected", "rejected"]
    outcomes = [a["outcome"] for a in rig.audit if a["action"] == "hook.delivery"]
    assert outcomes == [
        "ok",
        "rejected-signature",
        "rejected-signature",
        "duplicate",
        "duplicate",
        "oversized",
        "oversized",
    ]
    assert all(a["actor"] == f"hook:{hook['id']}" for a in rig.audit)
    assert hook["secret"] not in json.dumps(rig.audit)

    status, _ = await rig.deliver(hook, payload)
    assert status == 202
    assert (await rig.settled(hook, 1))[0]["state"] == "done"
    assert rig.version("web") != version


async def test_the_same_delivery_many_times_at_once_runs_once(rig: Rig) -> None:
    hook = await rig.add()
    payload = push("main", head(rig.repo))
    answers = await asyncio.gather(*(rig.deliver(hook, payload, delivery="d") for _ in range(20)))
    assert sorted(status for status, _ in answers) == [200] * 19 + [202]
    deliveries = await rig.settled(hook, 20)
    assert [d["state"] for d in deliveries].count("done") == 1
    assert rig.artifacts.builds == 1


async def test_signed_but_malformed_payloads_fail_clearly(rig: Rig) -> None:
    hook = await rig.add()
    for payload in (b"{oops", b"[]", json.dumps(push("a..b", "a" * 40)).encode()):
        status, body = await rig.deliver(hook, payload)
        assert status == 400 and body["error"] == "bad_payload", body
    status, body = await rig.deliver(hook, b"{}", event="ping")
    assert (status, body["status"]) == (200, "pong")
    status, body = await rig.deliver(hook, b'{"zen": 1}', event="issues")
    assert (status, body["status"]) == (202, "ignored")
    states = [d["state"] for d in await rig.settled(hook, 5)]
    assert states == ["ignored", "done", "failed", "failed", "failed"]
    assert rig.version("web") is None


async def test_a_broken_commit_fails_and_production_keeps_serving(rig: Rig) -> None:
    hook = await rig.add()
    await rig.deliver(hook, push("main", head(rig.repo)))
    await rig.settled(hook, 1)
    version = rig.version("web")
    broken = rig.repo.commit({"plat.yaml": "name: web\nruntime: cobol\n"}, "broken")
    rig.repo.push("main")
    await rig.deliver(hook, push("main", broken))
    failed = (await rig.settled(hook, 1))[0]
    assert failed["state"] == "failed" and "cobol" in failed["error"]
    rig.artifacts.failure = "SyntaxError: nope"
    fixed = rig.repo.commit({"plat.yaml": MANIFEST, "handler.py": "def handle(:"}, "bad code")
    rig.repo.push("main")
    await rig.deliver(hook, push("main", fixed))
    failed = (await rig.settled(hook, 1))[0]
    assert failed["state"] == "failed"
    status, detail = await rig.admin("GET", f"/v1/hooks/web/deliveries/{failed['seq']}")
    assert status == 200 and "SyntaxError: nope" in detail["log"]
    assert rig.version("web") == version
    # Checkouts of failed deliveries do not pile up.
    checkouts = rig.hooks.fetcher.root / hook["id"] / "checkouts"
    assert len(list(checkouts.iterdir())) == 1


async def test_previews_from_branches_and_requests_in_each_format(rig: Rig) -> None:
    hook = await rig.add(preview_ttl="1h")
    sha = rig.repo.commit({"handler.py": "def handle(e, c):\n    return 'f'\n"}, "f")
    rig.repo.push("HEAD:refs/heads/feature/x")
    for provider, event in (("gitlab", "Push Hook"), ("gitea", "push")):
        payload = push("feature/x", sha, before="b" * 40)
        payload["n"] = provider  # a body of its own, or it is a replay
        status, body = await rig.deliver(hook, payload, provider=provider, event=event)
        assert status == 202 and body["function"] == "web--feature-x", body
        delivery = (await rig.settled(hook, 1))[0]
        assert delivery["state"] == "done" and delivery["url"] == (
            "http://feature-x--web.localhost:8080/"
        )
    fs = rig.functions.controller.functions["web--feature-x"]
    assert fs.manifest.scale.min == 0
    [listed] = [f for f in await rig.functions.summaries() if f["name"] == "web--feature-x"]
    assert listed["preview"]["branch"] == "feature/x"
    assert 3500 < listed["preview"]["expires_at"] - time.time() <= 3600

    # A GitLab merge request closing ends the preview; production is never removed.
    closed = {
        "object_attributes": {"action": "close", "iid": 1, "source_branch": "feature/x"},
    }
    await rig.deliver(hook, closed, provider="gitlab", event="Merge Request Hook")
    assert (await rig.settled(hook, 1))[0]["action"] == "remove"
    assert "web--feature-x" not in rig.functions.controller.functions
    await rig.deliver(hook, push("main", ZERO), provider="gitea", event="push")
    ignored = (await rig.settled(hook, 1))[0]
    assert ignored["state"] == "ignored" and "production" in ignored["error"]

    # A GitHub pull request opens one; the reaper removes it after its TTL.
    opened = {
        "action": "opened",
        "number": 4,
        "pull_request": {"head": {"ref": "feature/x", "sha": sha}},
    }
    await rig.deliver(hook, opened, event="pull_request")
    assert (await rig.settled(hook, 1))[0]["state"] == "done"
    assert await rig.hooks.reap(now=time.time() + 60) == []
    assert await rig.hooks.reap(now=time.time() + 7200) == ["web--feature-x"]
    assert "web--feature-x" not in rig.functions.controller.functions
    removals = [a for a in rig.audit if a["action"] == "function.rm"]
    assert [a["params"]["reason"] for a in removals] == ["branch", "expired"]


async def test_a_preview_whose_hook_went_meanwhile_is_reaped(rig: Rig, store: Store) -> None:
    hook = await rig.add()
    sha = rig.repo.commit({"handler.py": "def handle(e, c):\n    return 'f'\n"}, "f")
    rig.repo.push("HEAD:refs/heads/orphan")
    rig.artifacts.gate = asyncio.Event()
    await rig.deliver(hook, push("orphan", sha))
    await asyncio.wait_for(rig.artifacts.waiting.wait(), 10)
    assert (await rig.admin("DELETE", f"/v1/hooks/{hook['id']}"))[0] == 200
    rig.artifacts.gate.set()
    await eventually(lambda: "web--orphan" in rig.functions.controller.functions, timeout=10)
    await eventually(lambda: not rig.hooks.lanes.busy((hook["id"], "orphan")), timeout=10)
    assert await rig.hooks.reap(now=time.time() + 4 * 86400) == ["web--orphan"]
    assert "web--orphan" not in rig.functions.controller.functions
    assert await store.list_previews() == []


async def test_previews_off_and_a_function_not_its_own(rig: Rig) -> None:
    hook = await rig.add(previews=False)
    status, body = await rig.deliver(hook, push("other", head(rig.repo)))
    assert (status, body["status"]) == (202, "ignored")
    status, _ = await rig.admin("DELETE", "/v1/hooks/web")
    assert status == 200
    hook = await rig.add()
    # A function that happens to have the preview's name is not the hook's to replace.
    other = rig.repo.root / "other"
    other.mkdir()
    (other / "plat.yaml").write_text("name: web--mine\nruntime: python\nhandler: h.handle\n")
    (other / "h.py").write_text("def handle(e, c):\n    return 'mine'\n")
    manifest = await rig.functions.load(other)
    await rig.functions.deploy(manifest, other, lambda e: None, force=False, dev=False)
    await rig.deliver(hook, push("mine", head(rig.repo)))
    failed = (await rig.settled(hook, 1))[0]
    assert failed["state"] == "failed" and "not a preview of this hook" in failed["error"]


async def test_a_newer_push_supersedes_a_waiting_one(rig: Rig) -> None:
    hook = await rig.add()
    rig.artifacts.gate = asyncio.Event()
    shas = []
    for n in range(3):
        shas.append(rig.repo.commit({"n.txt": str(n)}, f"c{n}"))
    rig.repo.push("main")
    await rig.deliver(hook, push("main", shas[0]))
    await asyncio.wait_for(rig.artifacts.waiting.wait(), 10)
    await rig.deliver(hook, push("main", shas[1]))
    await rig.deliver(hook, push("main", shas[2]))
    _, listed = await rig.admin("GET", "/v1/hooks/web/deliveries")
    assert [d["state"] for d in listed] == ["queued", "ignored", "building"]
    rig.artifacts.gate.set()
    deliveries = await rig.settled(hook, 3)
    assert [d["state"] for d in deliveries] == ["done", "ignored", "done"]
    assert deliveries[1]["error"] == f"superseded by #{deliveries[0]['seq']}"
    assert rig.artifacts.builds == 2


async def test_deliveries_left_open_by_a_stopped_daemon_run_at_the_next_start(
    rig: Rig, store: Store
) -> None:
    hook = await rig.add()
    record = DeliveryRecord(
        hook["id"],
        "left-open",
        "digest",
        "github",
        "push",
        "127.0.0.1",
        action="deploy",
        state="building",
        branch="main",
        sha=head(rig.repo),
        ref="refs/heads/main",
        target="web",
    )
    assert await store.add_delivery(record, counted=True)
    await rig.hooks.close()
    await rig.hooks.start()
    assert (await rig.settled(hook, 1))[0]["state"] == "done"
    assert rig.version("web") is not None


async def test_hooks_routes_speak_json_errors(rig: Rig) -> None:
    cases: list[tuple[Any, str]] = [
        ({}, "needs 'function'"),
        ({"function": "web"}, "needs 'repo'"),
        ({"function": "Web!", "repo": "/r"}, "not a function name"),
        ({"function": "web", "repo": 5}, "'repo' must be a string"),
        ({"function": "web", "repo": "/r", "previews": "yes"}, "true or false"),
        ({"function": "web", "repo": "/r", "preview_ttl": "soon"}, "preview_ttl"),
        ({"function": "web", "repo": "/r", "branch": "a..b"}, "--branch"),
        ({"function": "web", "repo": "/r", "path": "../up"}, "leaves the repository"),
    ]
    for body, message in cases:
        status, answer = await rig.admin("POST", "/v1/hooks", body)
        assert status == 400 and message in answer["message"], (body, answer)
    status, answer = await rig.admin("GET", "/v1/hooks/nope/deliveries")
    assert status == 404
    hook = await rig.add()
    status, answer = await rig.admin("GET", f"/v1/hooks/{hook['id']}/deliveries/999")
    assert status == 404 and "no delivery" in answer["message"]
    status, answer = await rig.admin("GET", "/v1/hooks/web/deliveries?limit=x")
    assert status == 400
