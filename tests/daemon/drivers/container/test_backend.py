"""plat.daemon.drivers.container.backend: the hardened Engine API create body, and a real start."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from plat.daemon.drivers.base import (
    LABEL_DAEMON,
    LABEL_FUNCTION,
    LABEL_INSTANCE,
    LABEL_VERSION,
    InstanceSpec,
)
from plat.daemon.drivers.container import backend as container_module
from plat.daemon.drivers.container.backend import ContainerBackend, container_name, create_body
from plat.daemon.serving.probe import wait_ready
from plat.engine import PodmanService
from plat.errors import EngineError


def body(host_port: int = 31000, **changes: Any) -> dict[str, Any]:
    spec = InstanceSpec(function="hello", version="v1", image="localhost/plat/hello:v1", **changes)
    return create_body(spec, "i-123", "daemon-9", host_port)


def env_of(payload: dict[str, Any]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in payload["Env"])


def test_identity() -> None:
    spec = InstanceSpec(function="hello", version="v1", image="localhost/plat/hello:v1")
    assert body()["Image"] == "localhost/plat/hello:v1"
    assert container_name(spec, "i-123") == "plat-hello-i-123"


def test_body_is_json() -> None:
    payload = body(mounts={"/src": "/home/app"})
    assert json.loads(json.dumps(payload)) == payload


def test_labels() -> None:
    assert body()["Labels"] == {
        LABEL_FUNCTION: "hello",
        LABEL_VERSION: "v1",
        LABEL_DAEMON: "daemon-9",
        LABEL_INSTANCE: "i-123",
    }
    assert (LABEL_FUNCTION, LABEL_VERSION, LABEL_DAEMON) == (
        "plat.function",
        "plat.version",
        "plat.daemon",
    )


def test_hardening() -> None:
    host = body()["HostConfig"]
    assert host["CapDrop"] == ["ALL"]
    assert "CapAdd" not in host
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["ReadonlyRootfs"] is True
    assert set(host["Tmpfs"]) == {"/tmp"}
    assert "rw" in host["Tmpfs"]["/tmp"].split(",")
    assert host["Init"] is True
    assert not host.get("Privileged", False)
    assert "NetworkMode" not in host  # the engine's default network, never the host's
    assert host["LogConfig"] == {"Type": "k8s-file", "Config": {"max-size": "10mb"}}


def test_limits_from_spec() -> None:
    host = body(memory=512 * 1024**2, cpu=0.5, pids=64)["HostConfig"]
    assert host["Memory"] == 512 * 1024**2
    assert host["MemorySwap"] == host["Memory"]  # no swap beyond the memory limit
    assert host["NanoCpus"] == 500_000_000
    assert isinstance(host["NanoCpus"], int)
    assert host["PidsLimit"] == 64


@pytest.mark.parametrize(("cpu", "nano"), [(1.0, 10**9), (2.0, 2 * 10**9), (0.25, 250_000_000)])
def test_nano_cpus(cpu: float, nano: int) -> None:
    assert body(cpu=cpu)["HostConfig"]["NanoCpus"] == nano


def test_defaults_have_limits() -> None:
    host = body()["HostConfig"]
    assert host["Memory"] == 256 * 1024**2
    assert host["NanoCpus"] == 10**9
    assert host["PidsLimit"] == 256


@pytest.mark.parametrize("port", [8080, 3000])
def test_port_published_on_loopback_only(port: int) -> None:
    payload = body(host_port=41234, port=port)
    assert payload["ExposedPorts"] == {f"{port}/tcp": {}}
    assert payload["HostConfig"]["PortBindings"] == {
        f"{port}/tcp": [{"HostIp": "127.0.0.1", "HostPort": "41234"}]
    }
    assert env_of(payload)["PORT"] == str(port)


def test_environment() -> None:
    env = env_of(body(env={"GREETING": "hi", "PORT": "1", "EQ": "a=b"}))
    assert env["GREETING"] == "hi"
    assert env["EQ"] == "a=b"
    assert env["PLAT_FUNCTION"] == "hello"
    assert env["PLAT_VERSION"] == "v1"
    assert env["PORT"] == "8080"  # the platform's PORT wins over the user's


def test_user_set_by_default() -> None:
    assert body()["User"] == "10001:10001"
    assert body(user="1000:1000")["User"] == "1000:1000"


def test_user_left_to_image_when_none() -> None:
    assert "User" not in body(user=None)


def test_mounts_read_only() -> None:
    assert "Binds" not in body()["HostConfig"]
    binds = body(mounts={"/srv/snap": "/home/app"})["HostConfig"]["Binds"]
    assert binds == ["/srv/snap:/home/app:ro"]


def test_port_not_published_for_direct_instances() -> None:
    spec = InstanceSpec(function="hello", version="v1", image="localhost/plat/hello:v1")
    payload = create_body(spec, "i", "d", None)
    assert "PortBindings" not in payload["HostConfig"]
    assert payload["ExposedPorts"] == {"8080/tcp": {}}


def test_bridge_address_from_inspect_or_list_settings() -> None:
    assert container_module.bridge_address({"IPAddress": "172.17.0.3"}) == "172.17.0.3"
    networks = {"Networks": {"none": {"IPAddress": ""}, "podman": {"IPAddress": "10.88.0.7"}}}
    assert container_module.bridge_address({"IPAddress": "", **networks}) == "10.88.0.7"
    assert container_module.bridge_address(None) == ""


def test_direct_only_with_an_engine_socket_owned_by_root(tmp_path: Path) -> None:
    sock = tmp_path / "engine.sock"
    sock.touch()
    os.chown(sock, 0, 0)
    assert container_module.direct_reachable(f"unix://{sock}")
    os.chown(sock, 65534, 65534)  # a rootless engine's socket belongs to its user
    assert not container_module.direct_reachable(f"unix://{sock}")
    assert not container_module.direct_reachable(f"unix://{tmp_path}/missing.sock")
    assert not container_module.direct_reachable("tcp://127.0.0.1:2375")


def test_spec_env_not_mutated() -> None:
    env = {"A": "1"}
    spec = InstanceSpec(function="hello", version="v1", image="img", env=env)
    create_body(spec, "i", "d", 1)
    assert env == {"A": "1"}


# --- against a real engine: podman system service on a socket of the test's own ---


@contextlib.asynccontextmanager
async def engine_backend(tmp_path: Path, address: str) -> AsyncIterator[ContainerBackend]:
    service = PodmanService(tmp_path / "engine.sock")
    info = await service.start()
    backend = ContainerBackend(info.endpoint, f"test-{uuid.uuid4().hex[:8]}", address)
    try:
        yield backend
    finally:
        for inst in await backend.list():
            await backend.remove(inst)
        await backend.close()
        await service.stop()


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[ContainerBackend]:
    """Instances reached by a port published on loopback."""
    async with engine_backend(tmp_path, "published") as backend:
        yield backend


@pytest.fixture
async def direct_backend(tmp_path: Path) -> AsyncIterator[ContainerBackend]:
    """Instances reached at their bridge address (``auto`` picks it for rootful Podman)."""
    async with engine_backend(tmp_path, "auto") as backend:
        assert backend.direct, "the test engine (rootful Podman) should be reachable directly"
        yield backend


def inspect(ref: str) -> dict[str, Any]:
    out = subprocess.run(["podman", "inspect", ref], capture_output=True, check=True).stdout
    data: dict[str, Any] = json.loads(out)[0]
    return data


def spec_of(image: str, **changes: Any) -> InstanceSpec:
    return InstanceSpec(function="engine", version="v1", image=image, **changes)


@pytest.mark.container
async def test_start_creates_a_hardened_instance_that_answers(
    backend: ContainerBackend, server_image: str
) -> None:
    running = await backend.start(spec_of(server_image, pids=64), "i-start")
    data = inspect(running.backend_ref)
    assert data["Name"] == "plat-engine-i-start"
    host = data["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert not data.get("EffectiveCaps")
    assert any("no-new-privileges" in opt for opt in host["SecurityOpt"] or [])
    assert host["Memory"] == host["MemorySwap"] == 256 * 1024**2
    assert host["PidsLimit"] == 64
    assert host["Init"] is True
    assert "/tmp" in host["Tmpfs"]
    assert host["LogConfig"]["Type"] == "k8s-file"
    assert host["PortBindings"] == {
        "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(running.port)}]
    }
    assert data["Config"]["User"] == "10001:10001"
    assert data["Config"]["Labels"][LABEL_INSTANCE] == "i-start"
    assert data["Config"]["Labels"][LABEL_DAEMON] == backend.daemon_id

    async def alive() -> bool:
        return await backend.is_alive(running)

    async with aiohttp.ClientSession() as session:
        await wait_ready(session, running.host, running.port, timeout=20, alive=alive)
    (listed,) = await backend.list()
    assert (listed.id, listed.port, listed.running) == ("i-start", running.port, True)


@pytest.mark.container
async def test_direct_instance_is_reached_at_its_bridge_address_without_a_published_port(
    direct_backend: ContainerBackend, server_image: str
) -> None:
    running = await direct_backend.start(spec_of(server_image), "i-direct")
    data = inspect(running.backend_ref)
    assert not any((data["HostConfig"].get("PortBindings") or {}).values())
    assert running.host == container_module.bridge_address(data["NetworkSettings"])
    assert running.host != "127.0.0.1" and running.port == 8080

    async def alive() -> bool:
        return await direct_backend.is_alive(running)

    async with aiohttp.ClientSession() as session:
        await wait_ready(session, running.host, running.port, timeout=20, alive=alive)
    (listed,) = await direct_backend.list()
    assert (listed.id, listed.host, listed.port) == ("i-direct", running.host, 8080)


@pytest.mark.container
async def test_a_prepared_container_is_what_the_next_start_of_its_spec_starts(
    direct_backend: ContainerBackend, server_image: str
) -> None:
    spec = spec_of(server_image)
    await direct_backend.prepare(spec, "i-ahead")
    (created,) = await direct_backend.list()
    assert (created.id, created.running) == ("i-ahead", False)
    assert inspect(created.backend_ref)["State"]["Status"] in ("created", "configured")

    running = await direct_backend.start(spec, "i-asked")
    assert (running.id, running.backend_ref) == ("i-ahead", created.backend_ref)

    async def alive() -> bool:
        return await direct_backend.is_alive(running)

    async with aiohttp.ClientSession() as session:
        await wait_ready(session, running.host, running.port, timeout=20, alive=alive)
    assert [(i.id, i.running) for i in await direct_backend.list()] == [("i-ahead", True)]


@pytest.mark.container
async def test_a_prepared_container_of_another_version_is_removed_not_started(
    backend: ContainerBackend, server_image: str
) -> None:
    await backend.prepare(spec_of(server_image), "i-v1")
    running = await backend.start(dataclasses.replace(spec_of(server_image), version="v2"), "i-v2")
    assert running.id == "i-v2"
    assert [(i.id, i.version) for i in await backend.list()] == [("i-v2", "v2")]


@pytest.mark.container
async def test_unprepare_and_close_remove_prepared_containers(
    tmp_path: Path, server_image: str
) -> None:
    service = PodmanService(tmp_path / "engine.sock")
    info = await service.start()
    daemon = f"test-{uuid.uuid4().hex[:8]}"
    backend = ContainerBackend(info.endpoint, daemon)
    try:
        await backend.prepare(spec_of(server_image), "i-one")
        assert len(await backend.list()) == 1
        await backend.unprepare("engine")
        assert await backend.list() == []
        await backend.prepare(spec_of(server_image), "i-two")
    finally:
        await backend.close()
        await service.stop()
    left = subprocess.run(
        ["podman", "ps", "-aq", "--filter", f"label={LABEL_DAEMON}={daemon}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert left.strip() == ""


@pytest.mark.container
async def test_start_retries_when_the_chosen_port_is_taken(
    backend: ContainerBackend, server_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = iter([busy, container_module.free_port()])
        monkeypatch.setattr(container_module, "free_port", lambda: next(ports))
        running = await backend.start(spec_of(server_image), "i-retry")
    assert running.port != busy
    # The container whose start failed was removed: only the one that runs is left.
    assert [(i.id, i.port) for i in await backend.list()] == [("i-retry", running.port)]


@pytest.mark.container
async def test_start_of_a_missing_image_raises_and_leaves_nothing(
    backend: ContainerBackend,
) -> None:
    with pytest.raises(EngineError, match="container engine error"):
        await backend.start(spec_of("localhost/plat-test/no-such-image:v0"), "i-none")
    assert await backend.list() == []


@pytest.mark.container
async def test_a_start_cancelled_at_any_moment_leaves_no_container(
    backend: ContainerBackend, server_image: str
) -> None:
    for delay in (0.0, 0.005, 0.02, 0.05, 0.1, 0.2):
        task = asyncio.create_task(backend.start(spec_of(server_image), f"i-cut{delay}"))
        await asyncio.sleep(delay)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if not task.cancelled():  # it finished first: a normal instance
            await backend.remove(task.result())
        assert await backend.list() == [], delay


@pytest.mark.container
async def test_start_when_the_engine_is_gone_raises_engine_error(tmp_path: Path) -> None:
    service = PodmanService(tmp_path / "engine.sock")
    info = await service.start()
    backend = ContainerBackend(info.endpoint, "test-gone")
    await service.stop()
    try:
        with pytest.raises(EngineError, match=r"container engine at unix://.* failed"):
            await backend.start(spec_of("localhost/plat-test/any:v0"), "i-gone")
    finally:
        await backend.close()


class EngineLine:
    """A unix socket in front of a real engine that can lose its answers, the way a
    connection to an engine that dies mid-call does: requests reach the engine, the
    replies never come back."""

    def __init__(self, engine: str, path: Path) -> None:
        self.engine = engine
        self.path = path
        self.losing = False
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        return f"unix://{self.path}"

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_unix_connection(self.engine)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, answer: bool) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    if answer and self.losing:
                        break
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(
            pipe(reader, up_writer, False), pipe(up_reader, writer, True), return_exceptions=True
        )


def containers_of(daemon_id: str) -> list[str]:
    out = subprocess.run(
        [
            "podman",
            "ps",
            "-a",
            "--format",
            "{{.Names}}",
            "--filter",
            f"label={LABEL_DAEMON}={daemon_id}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


@pytest.mark.container
async def test_a_container_made_while_the_engine_answers_nothing_is_removed_by_sweep(
    tmp_path: Path, server_image: str
) -> None:
    service = PodmanService(tmp_path / "engine.sock")
    info = await service.start()
    daemon_id = f"test-{uuid.uuid4().hex[:8]}"
    line = EngineLine(info.endpoint[len("unix://") :], tmp_path / "line.sock")
    try:
        async with line as endpoint:
            backend = ContainerBackend(endpoint, daemon_id)
            try:
                line.losing = True
                with pytest.raises(EngineError):
                    await backend.start(spec_of(server_image), "i-lost")
                assert containers_of(daemon_id) == ["plat-engine-i-lost"]  # made, unknown
                line.losing = False
                await backend.sweep()
                assert containers_of(daemon_id) == []
            finally:
                await backend.close()
    finally:
        for name in containers_of(daemon_id):
            subprocess.run(["podman", "rm", "-f", name], capture_output=True)
        await service.stop()
