"""plat.daemon.drivers.container.holders: standbys whose network a paused container
holds, against real Podman: what runs, what is published, what is left behind."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from plat.daemon.drivers.base import InstanceSpec, RunningInstance
from plat.daemon.drivers.container import holders as holders_module
from plat.daemon.drivers.container.backend import ContainerBackend
from plat.daemon.drivers.container.cleanup import remove_all, remove_all_podman
from plat.daemon.drivers.container.holders import LABEL_HOLDER, holder_body, holder_name
from plat.daemon.serving.probe import wait_ready
from plat.engine import PodmanService
from tests.daemon.drivers.container.podman import (
    containers_of,
    engine_backend,
    holders_of,
    inspect,
    remove_networks_of,
)


def spec_of(image: str, function: str = "held") -> InstanceSpec:
    return InstanceSpec(function=function, version="v1", image=image)


@contextlib.asynccontextmanager
async def held_backend(tmp_path: Path, limit: int = 4) -> AsyncIterator[ContainerBackend]:
    async with engine_backend(tmp_path, "published", standby_networks=limit) as backend:
        yield backend
        for instance in await backend.list():
            await backend.remove(instance)
        await backend.close()  # its standbys and their holders go too
        assert holders_of(backend.daemon_id) == [], "a holder outlived its instance"


async def answers(backend: ContainerBackend, running: RunningInstance) -> None:
    async def alive() -> bool:
        return await backend.is_alive(running)

    async with aiohttp.ClientSession() as session:
        await wait_ready(session, running.host, running.port, timeout=20, alive=alive)
        async with session.get(f"http://{running.host}:{running.port}/") as response:
            assert response.status == 200


def test_a_holder_is_hardened_and_publishes_on_loopback_only() -> None:
    body = holder_body(
        network="plat-t",
        tenant="t",
        daemon_id="d",
        instance_id="i1",
        image="img",
        port=8080,
        host_port=41000,
    )
    host = body["HostConfig"]
    assert host["PortBindings"] == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "41000"}]}
    assert host["CapDrop"] == ["ALL"] and host["ReadonlyRootfs"] is True
    assert host["NetworkMode"] == "plat-t"
    assert body["Labels"][LABEL_HOLDER] == "d"
    assert "plat.daemon" not in body["Labels"]  # never listed, adopted or counted as an instance


@pytest.mark.container
async def test_a_held_standby_starts_in_its_holders_network_and_both_go_on_removal(
    tmp_path: Path, server_image: str
) -> None:
    async with held_backend(tmp_path) as backend:
        spec = spec_of(server_image)
        await backend.prepare(spec, "i-held")
        (holder,) = holders_of(backend.daemon_id)
        assert holder == holder_name(backend.daemon_id, "i-held")
        assert inspect(holder)["State"]["Status"] == "running"
        (standby,) = await backend.list()
        joined = inspect(standby.backend_ref)["HostConfig"]["NetworkMode"]
        assert joined == f"container:{inspect(holder)['Id']}"

        running = await backend.start(spec, "i-asked")
        assert (running.id, running.backend_ref) == ("i-held", standby.backend_ref)
        await answers(backend, running)
        # A listing (a restarted daemon adopting it) finds the port its holder publishes.
        (listed,) = await backend.list()
        assert (listed.host, listed.port, listed.running) == ("127.0.0.1", running.port, True)

        await backend.remove(running)
        assert containers_of(backend.daemon_id) == []
        assert holders_of(backend.daemon_id) == []


@pytest.mark.container
async def test_no_more_holders_than_the_limit(tmp_path: Path, server_image: str) -> None:
    async with held_backend(tmp_path, limit=1) as backend:
        await backend.prepare(spec_of(server_image, "one"), "i-one")
        await backend.prepare(spec_of(server_image, "two"), "i-two")
        assert holders_of(backend.daemon_id) == [holder_name(backend.daemon_id, "i-one")]
        plain = await backend.start(spec_of(server_image, "two"), "i-x")
        assert not inspect(plain.backend_ref)["HostConfig"]["NetworkMode"].startswith("container:")
        await answers(backend, plain)
        await backend.unprepare("one")  # its holder goes: the next standby may have one
        await backend.prepare(spec_of(server_image, "two"), "i-three")
        assert holders_of(backend.daemon_id) == [holder_name(backend.daemon_id, "i-three")]


@pytest.mark.container
async def test_concurrent_prepares_keep_to_the_limit_and_leave_nothing(
    tmp_path: Path, server_image: str
) -> None:
    async with held_backend(tmp_path, limit=1) as backend:
        await asyncio.gather(
            *(backend.prepare(spec_of(server_image, f"f{n % 2}"), f"i-{n}") for n in range(4))
        )
        assert len(holders_of(backend.daemon_id)) == 1
        assert len(await backend.list()) == 2  # one standby per function: the newer kept
    # held_backend checked that close left no holder.


@pytest.mark.container
async def test_a_standby_whose_holder_was_killed_still_starts_and_answers(
    tmp_path: Path, server_image: str
) -> None:
    async with held_backend(tmp_path) as backend:
        spec = spec_of(server_image)
        await backend.prepare(spec, "i-orphan")
        subprocess.run(
            ["podman", "kill", holder_name(backend.daemon_id, "i-orphan")],
            check=True,
            capture_output=True,
        )
        # The engine starts what a container depends on first: the holder runs again.
        running = await backend.start(spec, "i-fresh")
        assert running.id == "i-orphan"
        await answers(backend, running)
        assert inspect(holder_name(backend.daemon_id, "i-orphan"))["State"]["Status"] == "running"
        await backend.remove(running)
        assert holders_of(backend.daemon_id) == [] and containers_of(backend.daemon_id) == []


@pytest.mark.container
async def test_a_taken_port_moves_the_holder_to_the_next(
    tmp_path: Path, server_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with held_backend(tmp_path) as backend:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            busy = taken.getsockname()[1]
            ports = iter([busy, holders_module.free_port()])
            monkeypatch.setattr(holders_module, "free_port", lambda: next(ports))
            await backend.prepare(spec_of(server_image), "i-moved")
        running = await backend.start(spec_of(server_image), "i-asked")
        assert running.id == "i-moved" and running.port != busy
        await answers(backend, running)


@pytest.mark.container
async def test_a_prepare_cancelled_at_any_moment_leaves_nothing_after_close(
    tmp_path: Path, server_image: str
) -> None:
    async with held_backend(tmp_path) as backend:
        for delay in (0.0, 0.01, 0.05, 0.1, 0.2):
            task = asyncio.create_task(backend.prepare(spec_of(server_image), f"i-cut{delay}"))
            await asyncio.sleep(delay)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await backend.close()
        assert containers_of(backend.daemon_id) == []
        assert holders_of(backend.daemon_id) == []


@pytest.mark.container
async def test_holders_a_dead_daemon_left_are_swept_and_adopted_ones_kept(
    tmp_path: Path, server_image: str
) -> None:
    service = PodmanService(tmp_path / "engine.sock")
    info = await service.start()
    daemon_id = f"test-{uuid.uuid4().hex[:8]}"
    try:
        first = ContainerBackend(info.endpoint, daemon_id, standby_networks=4)
        await first.prepare(spec_of(server_image, "kept"), "i-kept")
        running = await first.start(spec_of(server_image, "kept"), "i-x")
        await first.prepare(spec_of(server_image, "lost"), "i-lost")
        # The daemon dies: its standby's container goes (as a restart's clean-up of
        # not-running instances does), its holder stays.
        subprocess.run(["podman", "rm", "-f", "plat-lost-i-lost"], check=True, capture_output=True)

        second = ContainerBackend(info.endpoint, daemon_id, standby_networks=4)
        await second.sweep()
        assert holders_of(daemon_id) == [holder_name(daemon_id, "i-kept")]
        (adopted,) = await second.list()
        assert (adopted.id, adopted.port) == ("i-kept", running.port)
        await answers(second, adopted)
        await second.remove(adopted)
        assert holders_of(daemon_id) == [] and containers_of(daemon_id) == []
        await second.close()
        await first.close()
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "0", *containers_of(daemon_id)], check=False)
        subprocess.run(["podman", "rm", "-f", "-t", "0", *holders_of(daemon_id)], check=False)
        await service.stop()
        remove_networks_of(daemon_id)


@pytest.mark.container
async def test_removing_a_daemons_containers_takes_the_holders_after_their_instances(
    tmp_path: Path, server_image: str
) -> None:
    async with held_backend(tmp_path) as backend:
        await backend.prepare(spec_of(server_image), "i-all")
        await backend.start(spec_of(server_image), "i-x")
        await backend.prepare(spec_of(server_image, "other"), "i-standby")
        removed, remaining = await asyncio.to_thread(
            remove_all, backend.endpoint, backend.daemon_id
        )
        assert remaining == []
        assert sorted(removed) == sorted(
            [
                "plat-held-i-all",
                "plat-other-i-standby",
                holder_name(backend.daemon_id, "i-all"),
                holder_name(backend.daemon_id, "i-standby"),
            ]
        )
        await backend.unprepare("other")  # gone already: nothing to do


@pytest.mark.container
async def test_the_podman_cli_clean_up_takes_the_holders_after_their_instances(
    tmp_path: Path, server_image: str
) -> None:
    """``plat daemon stop`` when no Engine API answers: the podman CLI's way."""
    async with held_backend(tmp_path) as backend:
        await backend.prepare(spec_of(server_image), "i-cli")
        running = await backend.start(spec_of(server_image), "i-x")
        assert running.id == "i-cli"  # the held standby, running in its holder's namespace
        removed, remaining = await asyncio.to_thread(remove_all_podman, backend.daemon_id)
        assert remaining == []
        assert sorted(removed) == sorted(
            ["plat-held-i-cli", holder_name(backend.daemon_id, "i-cli")]
        )
        assert holders_of(backend.daemon_id) == [] and containers_of(backend.daemon_id) == []
