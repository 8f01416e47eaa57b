"""Two tenants on one real daemon with real containers: each rule of tenancy shown
by a test that fails if the rule breaks (tokens, 404s, routing, networks, quotas).
Deploys go through the gateway's /api door as uploads, as a remote user's would."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from plat.archive import pack_bytes
from plat.client import DaemonClient
from plat.paths import Home
from tests.fixtures import HttpResult, PlatRunner, daemon_session, make_runner, wait_for
from tests.functions import write_python_function

pytestmark = pytest.mark.container

WHO = """
import os

def handle(event, context):
    return {"tenant": "%s", "function": os.environ.get("PLAT_FUNCTION")}
"""

# Connects from inside the instance to ?host=&port=: what another tenant could try.
PROBE = """
import socket

def handle(event, context):
    host, port = event.query.get("host"), int(event.query.get("port"))
    try:
        socket.create_connection((host, port), timeout=3).close()
        return "connected"
    except OSError as exc:
        return "failed: %s" % exc
"""


@dataclass
class Tenancy:
    plat: PlatRunner
    tokens: dict[str, str]
    admin: DaemonClient

    def call(
        self, path: str, token: str | None = None, headers: dict[str, str] | None = None
    ) -> HttpResult:
        headers = dict(headers or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.plat.http("GET", path, headers=headers, auth=False)

    def api(
        self,
        method: str,
        path: str,
        token: str,
        body: bytes | None = None,
        content_type: str = "application/json",
    ) -> HttpResult:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type}
        return self.plat.http(method, "/api" + path, body, headers, auth=False, timeout=300)

    def upload(self, folder: Path, token: str) -> list[dict[str, Any]]:
        res = self.api("POST", "/v1/functions", token, pack_bytes(folder), "application/gzip")
        assert res.status == 200, res.body
        return [json.loads(line) for line in res.body.splitlines()]


def instance_ip(plat: PlatRunner, function: str, network: str) -> str:
    names = plat.instances_of(function, "status=running")
    assert names, f"no running instance of {function}"
    out = subprocess.run(
        ["podman", "inspect", names[0], "--format", "{{json .NetworkSettings.Networks}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    networks = json.loads(out)
    assert len(networks) == 1, networks  # on its tenant's network only
    [name] = networks
    assert name.startswith(network + "-"), name
    return str(networks[name]["IPAddress"])


@pytest.fixture(scope="module")
def tenancy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenancy]:
    root = tmp_path_factory.mktemp("tenancy")
    runner = make_runner(root)
    runner.env["PLAT_SCALE_TO_ZERO_AFTER"] = "2s"
    with daemon_session(runner):
        admin = DaemonClient(Home(runner.home))
        tokens = {}
        for name, quota in [("acme", {}), ("beta", {}), ("tight", {"max_instances": 2})]:
            created = admin.request("POST", "/v1/tenants", {"name": name, **quota})
            tokens[name] = created["token"]
        yield Tenancy(runner, tokens, admin)


def test_the_same_name_in_two_tenants_is_two_functions(tenancy: Tenancy, tmp_path: Path) -> None:
    for tenant in ("acme", "beta"):
        folder = write_python_function(tmp_path / tenant, "hello", WHO % tenant)
        events = tenancy.upload(folder, tenancy.tokens[tenant])
        assert events[-1]["type"] == "function", events[-3:]
        assert events[-1]["function"]["url"].endswith(f"/function/hello.{tenant}")
    for tenant in ("acme", "beta"):
        token = tenancy.tokens[tenant]
        by_path = tenancy.call(f"/function/hello.{tenant}", token)
        assert by_path.status == 200 and by_path.json()["tenant"] == tenant  # type: ignore[index]
        by_host = tenancy.call("/", token, {"Host": f"hello.{tenant}.localhost:8080"})
        assert by_host.status == 200 and by_host.json()["tenant"] == tenant  # type: ignore[index]
    # default keeps today's URL: no function hello there
    assert tenancy.plat.http("GET", "/function/hello").status == 404
    labels = subprocess.run(
        [
            "podman",
            "inspect",
            tenancy.plat.instances_of("hello.acme")[0],
            "--format",
            "{{json .Config.Labels}}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(labels)["plat.tenant"] == "acme"


def test_a_basic_function_takes_its_tenants_token_or_the_admin_and_hides_from_others(
    tenancy: Tenancy,
) -> None:
    acme, beta = tenancy.tokens["acme"], tenancy.tokens["beta"]
    assert tenancy.call("/function/hello.acme").status == 401
    assert tenancy.call("/function/hello.acme", acme).status == 200
    basic = "Basic " + base64.b64encode(f"acme:{acme}".encode()).decode()
    assert tenancy.call("/function/hello.acme", headers={"Authorization": basic}).status == 200
    assert tenancy.plat.http("GET", "/function/hello.acme").status == 200  # the admin
    other = tenancy.call("/function/hello.acme", beta)
    assert other.status == 404 and other.json()["error"] == "not_found"  # type: ignore[index]
    assert tenancy.call("/function/hello.acme", acme + "x").status == 401
    # the API, too: beta cannot see acme's function, by any name
    assert tenancy.api("GET", "/v1/functions/hello.acme", beta).status == 404
    listed = json.loads(tenancy.api("GET", "/v1/functions", beta).body)
    assert [(f["name"], f["tenant"]) for f in listed] == [("hello", "beta")]


def test_an_instance_cannot_reach_another_tenants_instance_but_the_gateway_reaches_both(
    tenancy: Tenancy, tmp_path: Path
) -> None:
    acme = tenancy.tokens["acme"]
    probe = write_python_function(tmp_path, "probe", PROBE, extra_manifest="timeout: 10s\n")
    assert tenancy.upload(probe, acme)[-1]["type"] == "function"
    beta_ip = instance_ip(tenancy.plat, "hello.beta", "plat-beta")
    acme_ip = instance_ip(tenancy.plat, "hello.acme", "plat-acme")
    across = tenancy.call(f"/function/probe.acme?host={beta_ip}&port=8080", acme)
    assert across.status == 200 and across.body.startswith(b"failed"), across.body
    # the same probe reaches its own tenant's instance: the test can tell the difference
    within = tenancy.call(f"/function/probe.acme?host={acme_ip}&port=8080", acme)
    assert within.body == b"connected", within.body
    assert tenancy.call("/function/hello.beta", tenancy.tokens["beta"]).status == 200


def test_a_tenants_quota_refuses_deploys_and_starts_but_stops_nothing(
    tenancy: Tenancy, tmp_path: Path
) -> None:
    tight = tenancy.tokens["tight"]
    idle = write_python_function(
        tmp_path, "idle", WHO % "tight", extra_manifest="scale: {min: 0, max: 2}\n"
    )
    assert tenancy.upload(idle, tight)[-1]["type"] == "function"
    busy = write_python_function(
        tmp_path, "busy", WHO % "tight", extra_manifest="scale: {min: 3, max: 4}\n"
    )
    refused = tenancy.upload(busy, tight)[-1]
    assert refused["type"] == "error" and refused["error"] == "quota_exceeded", refused
    assert "may run 2 instance(s)" in refused["message"]
    # idle scales to zero; then busy takes the whole quota
    assert wait_for(lambda: not tenancy.plat.instances_of("idle.tight", "status=running"), 30)
    (busy / "plat.yaml").write_text(
        "name: busy\nruntime: python\nhandler: handler.handle\nscale: {min: 2, max: 4}\n"
    )
    assert tenancy.upload(busy, tight)[-1]["type"] == "function"
    res = tenancy.call("/function/idle.tight", tight)
    assert res.status == 429 and "Retry-After" in res.headers, res.body
    assert res.json()["error"] == "quota_exceeded"  # type: ignore[index]
    time.sleep(1)
    assert len(tenancy.plat.instances_of("busy.tight", "status=running")) == 2


def test_a_remote_user_deploys_and_invokes_with_only_plat_url_and_plat_token(
    tenancy: Tenancy, tmp_path: Path
) -> None:
    """No home, no socket: the CLI in the function's folder, talking to the gateway."""
    folder = write_python_function(tmp_path / "work", "remote", WHO % "beta")
    env = {k: v for k, v in tenancy.plat.env.items() if not k.startswith("PLAT_")}
    env.update(
        {
            "PLAT_URL": tenancy.plat.gateway,
            "PLAT_TOKEN": tenancy.tokens["beta"],
            "HOME": str(tmp_path / "nobody"),
        }
    )
    cli = [sys.executable, "-m", "plat"]
    deployed = subprocess.run(
        [*cli, "deploy"], cwd=folder, env=env, capture_output=True, text=True, timeout=300
    )
    assert deployed.returncode == 0, deployed.stderr
    assert "/function/remote.beta" in deployed.stdout
    invoked = subprocess.run(
        [*cli, "invoke", "remote"], cwd=folder, env=env, capture_output=True, text=True, timeout=60
    )
    assert invoked.returncode == 0 and '"tenant": "beta"' in invoked.stdout, invoked.stderr
    assert not (tmp_path / "nobody" / ".plat").exists()  # nothing local was made
