"""The end-to-end path against Docker Engine (Debian's docker.io), not Podman.

What plat does with containers is written against the Docker Engine API, and
Podman serves most of the suite; these tests point a daemon at dockerd through
the documented setting (``PLAT_ENGINE_HOST``) and walk the main path once:
deploy (built by the engine's build API, into Docker's own image store), invoke,
redeploy, logs, scale to zero and back, and a cold start served by a claimed
pool instance. ``scripts/setup.sh test`` installs docker.io and loads the python
base image into Docker's store; the module starts dockerd on its default socket
(unless one runs) and stops it afterwards. Without them these tests fail with the
reason, they do not skip.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from plat.engine import DOCKER_SOCKET, ping, resolve_engine
from plat.paths import Home
from tests.daemon.serving.e2e import FAST_AUTOSCALER
from tests.fixtures import PlatRunner, daemon_session, make_runner, wait_for
from tests.functions import write_python_function

pytestmark = pytest.mark.container

BASE = "localhost/plat/python-base:bookworm"
SETUP_HINT = (
    "run `sudo bash scripts/setup.sh test` (it installs docker.io and loads the base image)"
)
DOCKERD_LOG = "/var/log/plat-dockerd.log"

# MARK is replaced per deploy, so a redeploy answers differently.
HANDLER = """
import os

print("loaded MARK", flush=True)

def handle(event, context):
    print("called MARK on", event.path, flush=True)
    return {"mark": "MARK", "function": context.function, "host": context.hostname}
"""


@contextmanager
def docker_client() -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=DOCKER_SOCKET, timeout=30)
    try:
        yield client
    finally:
        client.close()


@dataclass
class DockerRunner(PlatRunner):
    """A PlatRunner whose containers are looked up in Docker, not Podman."""

    def containers(self, *filters: str) -> list[str]:
        wanted: dict[str, list[str]] = {"label": [f"plat.daemon={self.daemon_id()}"]}
        for item in filters:
            key, _, value = item.partition("=")
            wanted.setdefault(key, []).append(value)
        # One listing call, no inspect per container: a container the daemon removes
        # between the two would fail the lookup (the SDK's models list inspects each).
        with docker_client() as client:
            found = client.api.containers(all=True, filters=wanted)
            return [name.lstrip("/") for item in found for name in item["Names"][:1]]


def _start_dockerd() -> subprocess.Popen[bytes]:
    """dockerd on its default socket, as the set-up runs it (by hand, no systemd)."""
    if shutil.which("dockerd") is None:
        pytest.fail(f"dockerd is not installed: {SETUP_HINT}")
    with Path(DOCKERD_LOG).open("ab") as log:
        proc = subprocess.Popen(
            ["dockerd", "--pidfile", "/var/run/docker.pid"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while ping(DOCKER_SOCKET) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            tail = Path(DOCKERD_LOG).read_text(errors="replace").splitlines()[-15:]
            pytest.fail("dockerd did not answer:\n" + "\n".join(tail))
        time.sleep(0.1)
    return proc


@pytest.fixture(scope="module")
def dockerd() -> Iterator[str]:
    """dockerd's endpoint, after checking it holds the python base image. A dockerd
    that already runs is used and left running; else one is started for this module
    and stopped after it, so that no other test meets a second engine."""
    started = None if ping(DOCKER_SOCKET, timeout=5.0) else _start_dockerd()
    try:
        info = ping(DOCKER_SOCKET, timeout=5.0)
        if info is None or info.name != "docker":
            pytest.fail(f"no Docker Engine answers on {DOCKER_SOCKET} ({info}): {SETUP_HINT}")
        with docker_client() as client:
            try:
                client.images.get(BASE)
            except docker.errors.ImageNotFound:
                pytest.fail(f"{BASE} is not in Docker's image store: {SETUP_HINT}")
        yield info.endpoint
    finally:
        if started is not None:
            started.terminate()
            try:
                started.wait(30)
            except subprocess.TimeoutExpired:
                started.kill()
                started.wait()


@pytest.fixture(scope="module")
def on_docker(
    dockerd: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[DockerRunner, Path]]:
    root = tmp_path_factory.mktemp("docker")
    base = make_runner(root)
    runner = DockerRunner(home=base.home, port=base.port, env=base.env)
    runner.env.update(FAST_AUTOSCALER)
    runner.env.update(
        {
            "PLAT_ENGINE_HOST": dockerd,
            "PLAT_POOL_SIZE": "1",
            "PLAT_SCALE_TO_ZERO_AFTER": "3s",
        }
    )
    with daemon_session(runner):
        yield runner, root


def _deploy(plat: PlatRunner, root: Path, name: str, mark: str, manifest: str = "") -> str:
    folder = write_python_function(
        root, name, HANDLER.replace("MARK", mark), extra_manifest=manifest
    )
    out = plat.run("deploy", str(folder)).stdout
    return out


def _call(plat: PlatRunner, name: str, path: str = "") -> dict[str, Any]:
    res = plat.http("GET", f"/function/{name}{path}")
    assert res.status == 200, res.body
    body = res.json()
    assert isinstance(body, dict)
    return body


def _running(plat: DockerRunner, name: str) -> list[str]:
    return plat.instances_of(name, "status=running")


def _inspect(name: str) -> dict[str, Any]:
    with docker_client() as client:
        attrs = client.containers.get(name).attrs
        assert isinstance(attrs, dict)
        return attrs


def test_the_daemon_uses_docker_and_its_build_api(on_docker: tuple[DockerRunner, Path]) -> None:
    plat, _ = on_docker
    status = json.loads(plat.run("daemon", "status", "--json").stdout)
    text = json.dumps(status)
    assert "docker" in text, status
    assert DOCKER_SOCKET in text, status


def test_deploy_invoke_and_redeploy(on_docker: tuple[DockerRunner, Path]) -> None:
    plat, root = on_docker
    _deploy(plat, root, "dk-hello", "one", "scale: {min: 1, max: 1}\n")
    # The image is in Docker's store, made by its build API (no buildah, no podman).
    # (Asked by its tag: older images of the function, from earlier runs on this
    # host, are being pruned meanwhile; a listing could name one that goes.)
    image = json.loads(plat.run("describe", "dk-hello", "--json").stdout)["image"]
    with docker_client() as client:
        assert image in client.images.get(image).tags, "the image is not in Docker's store"

    body = _call(plat, "dk-hello", "/a")
    assert body["mark"] == "one" and body["function"] == "dk-hello"
    assert json.loads(plat.run("invoke", "dk-hello").stdout)["mark"] == "one"

    (first,) = _running(plat, "dk-hello")
    info = _inspect(first)
    # Hardened as on Podman, with Docker's own log driver.
    assert info["HostConfig"]["ReadonlyRootfs"] is True
    assert info["HostConfig"]["CapDrop"] == ["ALL"]
    assert info["HostConfig"]["LogConfig"]["Type"] == "json-file"
    assert info["Config"]["Labels"]["plat.function"] == "dk-hello"

    _deploy(plat, root, "dk-hello", "two", "scale: {min: 1, max: 1}\n")
    assert _call(plat, "dk-hello")["mark"] == "two"
    # The old version's container goes.
    assert wait_for(lambda: first not in plat.containers(), timeout=30)


def test_logs_come_from_docker(on_docker: tuple[DockerRunner, Path]) -> None:
    plat, _ = on_docker
    _call(plat, "dk-hello", "/logged")

    def logged() -> bool:
        out = plat.run("logs", "dk-hello", "--json").stdout
        lines = [json.loads(line) for line in out.splitlines() if line.strip()]
        return any("called two on /logged" in str(line.get("line", line)) for line in lines)

    assert wait_for(logged, timeout=20), plat.run("logs", "dk-hello").stdout


def test_scale_to_zero_and_back_with_a_pool_instance(
    on_docker: tuple[DockerRunner, Path],
) -> None:
    plat, root = on_docker
    _deploy(plat, root, "dk-idle", "idle", "scale: {min: 0, max: 1}\n")
    first = _call(plat, "dk-idle")
    assert first["mark"] == "idle"
    # No calls for longer than PLAT_SCALE_TO_ZERO_AFTER: no instance is left running.
    assert wait_for(lambda: not _running(plat, "dk-idle"), timeout=40)
    # The pool is refilled (one ready instance of the python pool in Docker).
    assert wait_for(lambda: _pool_ready(plat) >= 1, timeout=90), _status(plat)["pool"]

    started = time.monotonic()
    again = _call(plat, "dk-idle")
    cold = time.monotonic() - started
    assert again["mark"] == "idle"
    assert wait_for(lambda: len(_running(plat, "dk-idle")) == 1, timeout=10)
    (name,) = _running(plat, "dk-idle")
    info = _inspect(name)
    # The cold start was served by a claimed pool instance, renamed after the function.
    assert info["Config"]["Labels"]["plat.function"] == "pool-python", (cold, info["Config"])
    assert info["Config"]["Hostname"] == again["host"]
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert mounts["/home/app"]["RW"] is False


def _status(plat: PlatRunner) -> dict[str, Any]:
    data = json.loads(plat.run("daemon", "status", "--json").stdout)
    assert isinstance(data, dict)
    return data


def _pool_ready(plat: PlatRunner) -> int:
    pools = [p for p in _status(plat)["pool"]["pools"] if p["key"].startswith("python/")]
    return int(pools[0]["ready"]) if pools else 0


async def test_a_running_dockerd_does_not_move_an_unconfigured_daemon(
    dockerd: str, tmp_path: Path
) -> None:
    """With podman installed, Docker's default socket is used only when named: a
    dockerd that happens to run must not take over daemons whose base images are in
    Podman's store."""
    home = Home(tmp_path / "home")
    home.ensure()
    info, service = await resolve_engine(home, {}, None)
    try:
        assert info.name == "podman", info
        assert info.endpoint != DOCKER_SOCKET
    finally:
        if service is not None:
            await service.stop()
    named, started = await resolve_engine(home, {"DOCKER_HOST": DOCKER_SOCKET}, None)
    assert started is None
    assert (named.name, named.endpoint) == ("docker", DOCKER_SOCKET)


def test_a_dependency_install_behind_tls_interception_names_the_way_out(
    on_docker: tuple[DockerRunner, Path],
) -> None:
    """Docker's build API cannot mount the host's CA bundle into the install step:
    where TLS to the package index is intercepted (these CI machines), the failed
    build says what to do instead; where it is not, the install just works."""
    plat, root = on_docker
    folder = write_python_function(
        root, "dk-deps", HANDLER.replace("MARK", "deps"), requirements="humanize==4.17.0\n"
    )
    proc = plat.run("deploy", str(folder), check=False, timeout=600)
    if proc.returncode == 0:
        assert _call(plat, "dk-deps")["mark"] == "deps"
        return
    assert "CERTIFICATE_VERIFY_FAILED" in proc.stderr + proc.stdout, proc.stderr
    assert "cannot lend the host's CA bundle" in proc.stderr, proc.stderr
    assert "PIP_INDEX_URL" in proc.stderr
    assert "Traceback" not in proc.stderr
    with docker_client() as client:  # forcerm: the failed step's container is gone
        left = client.containers.list(all=True, filters={"status": "exited"})
        assert not [
            c.name for c in left if c.attrs["Config"].get("Image", "").startswith("sha256:")
        ]


def test_doctor_looks_in_dockers_image_store(on_docker: tuple[DockerRunner, Path]) -> None:
    plat, _ = on_docker
    data = json.loads(plat.run("doctor", "--json", check=False).stdout)
    rows = {check["name"]: check for check in data["checks"]}
    assert data["facts"]["engine"]["name"] == "docker"
    assert rows["base image python"]["ok"] is True  # the set-up loaded it
    with docker_client() as client:
        has_node = any("localhost/plat/node-base:bookworm" in i.tags for i in client.images.list())
    if not has_node:
        assert "| docker load" in rows["base image node"]["fix"]
