"""plat.daemon.drivers.container.cleanup: a daemon's containers removed (`plat daemon stop`)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from plat.daemon.drivers.base import InstanceSpec
from plat.daemon.drivers.container.backend import ContainerBackend
from plat.daemon.drivers.container.cleanup import remove_all
from plat.engine import PodmanService
from plat.errors import EngineError


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
