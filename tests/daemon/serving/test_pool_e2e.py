"""The pre-warmed pool against a real daemon and Podman: a cold start specialises a
generic instance with the right code, dependencies and environment; a specialised
instance serves one function version only and never returns to the pool; the pool
refills; a `dockerfile` function starts the normal way."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon.serving.e2e import FAST_AUTOSCALER, daemon, deploy_python, running
from tests.fixtures import PlatRunner, copy_example, wait_for

pytestmark = pytest.mark.container

GREET = """
import os
import humanize

def handle(event, context):
    return {
        "mark": "MARK",
        "function": context.function,
        "host": context.hostname,
        "greeting": os.environ.get("GREETING"),
        "token": os.environ.get("PLAT_POOL_TOKEN"),
        "number": humanize.intcomma(12345),
        "cwd": os.getcwd(),
    }
"""

NODE_HANDLER = """module.exports = async (event, context) => ({
  mark: 'node-one', function: context.function, host: context.hostname,
  greeting: process.env.GREETING || null, token: process.env.PLAT_POOL_TOKEN || null,
});
"""


@pytest.fixture(scope="module")
def pooled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PlatRunner, Path]]:
    settings = {**FAST_AUTOSCALER, "PLAT_POOL_SIZE": "2", "PLAT_SCALE_TO_ZERO_AFTER": "5s"}
    with daemon(tmp_path_factory.mktemp("pool"), settings) as served:
        yield served


def _status(plat: PlatRunner) -> dict[str, Any]:
    data = json.loads(plat.run("daemon", "status", "--json").stdout)
    assert isinstance(data, dict)
    return data


def _pool(plat: PlatRunner, runtime: str) -> dict[str, Any]:
    pools = [p for p in _status(plat)["pool"]["pools"] if p["key"].startswith(f"{runtime}/")]
    return pools[0] if pools else {"ready": 0, "starting": 0, "claimed": 0, "misses": 0}


def _deploy_python(plat: PlatRunner, root: Path, name: str, mark: str) -> Path:
    manifest = "env: {GREETING: hello}\nscale: {min: 0, max: 1}\n"
    return deploy_python(
        plat, root, name, GREET.replace("MARK", mark), manifest, "humanize==4.17.0\n"
    )


def _unpacked(plat: PlatRunner, name: str) -> set[str]:
    """The images of ``name`` unpacked for the pool (folder names)."""
    return {p.parent.name for p in (plat.home / "unpacked").glob(f"localhost_plat_{name}_*/done")}


def _cold(plat: PlatRunner, name: str) -> dict[str, Any]:
    """Wait until ``name`` is at zero instances, then call it once (a cold start)."""
    assert wait_for(lambda: running(plat, name) == 0, timeout=30)
    res = plat.http("GET", f"/function/{name}")
    assert res.status == 200, res.body
    body = res.json()
    assert isinstance(body, dict)
    return body


def _inspect(name: str) -> dict[str, Any]:
    out = subprocess.run(
        ["podman", "inspect", name], capture_output=True, text=True, check=True
    ).stdout
    data = json.loads(out)[0]
    assert isinstance(data, dict)
    return data


def test_a_cold_start_specialises_a_pool_instance(pooled: tuple[PlatRunner, Path]) -> None:
    plat, root = pooled
    _deploy_python(plat, root, "greet", "one")
    assert wait_for(lambda: _unpacked(plat, "greet"), timeout=60)
    assert wait_for(lambda: _pool(plat, "python")["ready"] == 2, timeout=60)
    claimed = _pool(plat, "python")["claimed"]

    body = _cold(plat, "greet")

    # The serving container is a pool instance, renamed after the function, hardened
    # like any instance, with its code and dependencies mounted read-only.
    assert wait_for(lambda: running(plat, "greet") == 1, timeout=10)
    (name,) = plat.instances_of("greet", "status=running")
    info = _inspect(name)
    assert info["Config"]["Labels"]["plat.function"] == "pool-python"
    assert info["Config"]["Hostname"] == body["host"]
    assert info["HostConfig"]["ReadonlyRootfs"] is True
    assert "CAP_SYS_ADMIN" not in (info["EffectiveCaps"] or [])
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert mounts["/home/app"]["RW"] is False
    assert mounts["/opt/plat/deps"]["RW"] is False

    assert body["mark"] == "one"
    assert body["function"] == "greet"
    assert body["greeting"] == "hello"  # the function's env, set at specialisation
    assert body["number"] == "12,345"  # its dependencies are importable
    assert body["token"] is None  # the pool's secret never reaches the function
    assert body["cwd"] == "/home/app"
    assert _pool(plat, "python")["claimed"] == claimed + 1
    metrics = plat.http("GET", "/metrics", auth=False).body.decode()
    assert 'plat_pool_claims_total{pool="python/' in metrics

    # The pool refills in the background.
    assert wait_for(lambda: _pool(plat, "python")["ready"] == 2, timeout=60)
    logs = plat.run("logs", "greet").stdout
    assert "specialised from the pre-warmed pool" in logs


def test_a_specialised_instance_serves_one_function_version_only(
    pooled: tuple[PlatRunner, Path],
) -> None:
    plat, root = pooled
    seen: dict[str, tuple[str, str]] = {}  # host -> (function, mark)

    def record(body: dict[str, Any]) -> None:
        key = (body["function"], body["mark"])
        assert seen.setdefault(body["host"], key) == key, f"{body['host']} served two versions"

    _deploy_python(plat, root, "other", "other-one")
    assert wait_for(lambda: _unpacked(plat, "other"), timeout=60)
    record(_cold(plat, "greet"))
    assert wait_for(lambda: plat.instances_of("greet"), timeout=10)
    first = plat.instances_of("greet")
    record(_cold(plat, "other"))
    # Scaled to zero, the specialised instance is gone for good, not back in the pool.
    assert wait_for(lambda: not set(first) & set(plat.containers()), timeout=30)

    unpacked = _unpacked(plat, "greet")
    _deploy_python(plat, root, "greet", "two")
    # The new version's image is unpacked; the old one's goes, as no version uses it.
    assert wait_for(lambda: _unpacked(plat, "greet") - unpacked, timeout=60)
    assert wait_for(lambda: not _unpacked(plat, "greet") & unpacked, timeout=10)
    body = _cold(plat, "greet")
    assert body["mark"] == "two"
    record(body)
    record(_cold(plat, "other"))
    assert len(seen) == 4


def test_node_functions_get_a_pool_of_their_own(pooled: tuple[PlatRunner, Path]) -> None:
    plat, root = pooled
    folder = copy_example("hello-node", root)
    (folder / "handler.js").write_text(NODE_HANDLER)
    manifest = (folder / "plat.yaml").read_text()
    (folder / "plat.yaml").write_text(manifest + "env: {GREETING: hi}\nscale: {min: 0, max: 1}\n")
    plat.run("deploy", str(folder))
    assert wait_for(lambda: _unpacked(plat, "hello-node"), timeout=60)
    assert wait_for(lambda: _pool(plat, "node")["ready"] >= 1, timeout=60)
    claimed = _pool(plat, "node")["claimed"]
    body = _cold(plat, "hello-node")
    assert body == {
        "mark": "node-one",
        "function": "hello-node",
        "host": body["host"],
        "greeting": "hi",
        "token": None,
    }
    assert _pool(plat, "node")["claimed"] == claimed + 1


def test_a_dockerfile_function_starts_the_normal_way(pooled: tuple[PlatRunner, Path]) -> None:
    plat, root = pooled
    folder = copy_example("hello-dockerfile", root)
    manifest = (folder / "plat.yaml").read_text()
    (folder / "plat.yaml").write_text(manifest + "scale: {min: 0, max: 1}\n")
    plat.run("deploy", str(folder))
    before = _status(plat)["pool"]["pools"]
    _cold(plat, "hello-dockerfile")
    (name,) = plat.instances_of("hello-dockerfile", "status=running")
    assert _inspect(name)["Config"]["Labels"]["plat.function"] == "hello-dockerfile"
    after = _status(plat)["pool"]["pools"]
    assert [p["claimed"] for p in after] == [p["claimed"] for p in before]
    assert not any(p["key"].startswith("dockerfile/") for p in after)
