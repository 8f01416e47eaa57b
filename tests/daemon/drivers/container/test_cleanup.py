"""plat.daemon.drivers.container.cleanup: a daemon's containers (and networks) removed
(`plat daemon stop`)."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path

import pytest

from plat.daemon.drivers.base import InstanceSpec
from plat.daemon.drivers.container.anchors import anchor_name
from plat.daemon.drivers.container.backend import ContainerBackend
from plat.daemon.drivers.container.cleanup import remove_all, remove_all_podman
from plat.engine import PodmanService
from plat.errors import EngineError
from tests.daemon.drivers.container.podman import networks_of, remove_networks_of


@pytest.mark.container
async def test_remove_all_removes_one_daemons_containers_running_or_not(
    podman_service: PodmanService, server_image: str
) -> None:
    gone, stays = (f"test-{uuid.uuid4().hex[:8]}" for _ in range(2))
    backend = ContainerBackend(podman_service.endpoint, gone)
    other = ContainerBackend(podman_service.endpoint, stays)
    spec = InstanceSpec(function="cleanup", version="v1", image=server_image)
    try:
        await backend.start(spec, "i-running")
        await backend.prepare(spec, "i-created")
        kept = await other.start(spec, "i-kept")
        removed, remaining = await asyncio.to_thread(remove_all, podman_service.endpoint, gone)
        assert sorted(removed) == ["plat-cleanup-i-created", "plat-cleanup-i-running"]
        assert remaining == []
        assert await backend.list() == []
        assert [i.id for i in await other.list()] == [kept.id]
    finally:
        await other.remove(kept)
        await backend.close()
        await other.close()


def test_remove_all_without_an_engine_is_an_engine_error(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match=r"missing\.sock"):
        remove_all(f"unix://{tmp_path}/missing.sock", "any")


def exists(container: str) -> bool:
    return subprocess.run(["podman", "container", "exists", container]).returncode == 0


@pytest.mark.container
async def test_remove_all_podman_takes_the_networks_and_their_anchors_too(
    podman_service: PodmanService, server_image: str
) -> None:
    """The podman CLI path (no Engine API answers): containers, then anchors, then networks."""
    gone = f"test-{uuid.uuid4().hex[:8]}"
    backend = ContainerBackend(podman_service.endpoint, gone)
    spec = InstanceSpec(function="cleanup", version="v1", image=server_image, tenant="t1")
    try:
        await backend.start(spec, "i-running")
        anchor = anchor_name(backend.networks.name("t1"))
        await backend.networks.anchored()  # it starts beside the instance's own start
        assert exists(anchor)
        removed, remaining = await asyncio.to_thread(remove_all_podman, gone)
        assert (removed, remaining) == (["plat-cleanup-i-running"], [])
        assert not exists(anchor)
        assert networks_of(gone) == []
    finally:
        await backend.close()
        remove_networks_of(gone)
