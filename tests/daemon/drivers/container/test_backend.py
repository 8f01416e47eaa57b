"""plat.daemon.drivers.container.backend: real starts, standbys, failures and clean-ups."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
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
    LABEL_INSTANCE,
    InstanceSpec,
)
from plat.daemon.drivers.container import backend as container_module
from plat.daemon.drivers.container.backend import ContainerBackend
from plat.daemon.drivers.container.documents import bridge_address
from plat.daemon.serving.probe import wait_ready
from plat.engine import PodmanService
from plat.errors import EngineError
from tests.daemon.drivers.container.podman import (
    containers_of,
    inspect,
    networks_of,
    remove_networks_of,
)


def test_direct_only_with_an_engine_socket_owned_by_root(tmp_path: Path) -> None:
    sock = tmp_path / "engine.sock"
    sock.touch()
    os.chown(sock, 0, 0)
    assert container_module.direct_reachable(f"unix://{sock}")
    os.chown(sock, 65534, 65534)  # a rootless engine's socket belongs to its user
    assert not container_module.direct_reachable(f"unix://{sock}")
    assert not container_module.direct_reachable(f"unix://{tmp_path}/missing.sock")
    assert not container_module.direct_reachable("tcp://127.0.0.1:2375")


# --- against a real engine: podman system service on a socket of the test's own ---


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
    assert running.host == bridge_address(
        data["NetworkSettings"], direct_backend.networks.name("default")
    )
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


@contextlib.asynccontextmanager
async def own_service(tmp_path: Path) -> AsyncIterator[ContainerBackend]:
    """A backend on a Podman service of its own, closed (then the service) after."""
    service = PodmanService(tmp_path / "engine.sock")
    info = await service.start()
    backend = ContainerBackend(info.endpoint, f"test-{uuid.uuid4().hex[:8]}")
    try:
        yield backend
    finally:
        await backend.close()
        await service.stop()


@pytest.mark.container
async def test_unprepare_and_close_remove_prepared_containers(
    tmp_path: Path, server_image: str
) -> None:
    async with own_service(tmp_path) as backend:
        await backend.prepare(spec_of(server_image), "i-one")
        assert len(await backend.list()) == 1
        await backend.unprepare("engine")
        assert await backend.list() == []
        await backend.prepare(spec_of(server_image), "i-two")
    left = subprocess.run(
        ["podman", "ps", "-aq", "--filter", f"label={LABEL_DAEMON}={backend.daemon_id}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert left.strip() == ""


@pytest.mark.container
async def test_unprepare_during_a_prepare_leaves_no_standby(
    tmp_path: Path, server_image: str
) -> None:
    # What `plat rm` does when the function scaled to zero a moment before: the
    # standby being made then must not outlive the removal.
    async with own_service(tmp_path) as backend:
        preparing = asyncio.ensure_future(backend.prepare(spec_of(server_image), "i-one"))
        await asyncio.sleep(0)  # the prepare has begun: its create is on its way
        await backend.unprepare("engine")
        assert await backend.list() == []
        await preparing
        assert await backend.list() == []


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
                line.losing = True  # the tenant network's creation is answered nothing
                with pytest.raises(EngineError):
                    await backend.start(spec_of(server_image), "i-lost")
                assert containers_of(daemon_id) == []
                assert networks_of(daemon_id) == [backend.networks.name("default")]
                line.losing = False
                await backend.networks.ensure("default", server_image)  # made by then: taken as is
                line.losing = True  # now the container's creation
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
        remove_networks_of(daemon_id)
        await service.stop()
