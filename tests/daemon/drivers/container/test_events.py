"""ContainerBackend.events: this daemon's containers' exits, from the engine's event stream."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from plat.daemon.drivers.base import InstanceExit, InstanceSpec
from plat.daemon.drivers.container.backend import ContainerBackend
from plat.daemon.drivers.container.documents import instance_exit
from plat.engine import PodmanService
from plat.errors import EngineError

REF = "f441933fa86cd5f4d441f52aecf41cad7b6ec4d990c41aec43cc89977f1e2a3b"


def event(action: str, **attributes: str) -> dict[str, Any]:
    return {
        "status": action,
        "id": REF,
        "Type": "container",
        "Action": action,
        "Actor": {"ID": REF, "Attributes": attributes},
        "time": 1796014646,
        "timeNano": 1796014646955066270,
    }


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (  # Podman 4: its own exit code attribute beside Docker's
            event("die", containerExitCode="137", exitCode="137", **{"plat.instance": "i-1"}),
            InstanceExit("i-1", REF, 137, 1796014646955066270 / 1e9),
        ),
        (
            event("die", exitCode="0", **{"plat.instance": "i-2"}),
            InstanceExit("i-2", REF, 0, 1796014646955066270 / 1e9),
        ),
        (  # no instance label, no exit code, no nanoseconds
            {**event("die"), "timeNano": None},
            InstanceExit(REF[:12], REF, None, 1796014646.0),
        ),
        (event("kill", **{"plat.instance": "i-1"}), None),
        (event("start", **{"plat.instance": "i-1"}), None),
        ({**event("die"), "Type": "image"}, None),
    ],
)
def test_instance_exit_from_an_engine_event(
    raw: dict[str, Any], expected: InstanceExit | None
) -> None:
    assert instance_exit(raw) == expected


@pytest.fixture
async def backends(podman_service: PodmanService) -> AsyncIterator[list[ContainerBackend]]:
    """Two daemons' backends on one engine."""
    pair = [
        ContainerBackend(podman_service.endpoint, f"test-{uuid.uuid4().hex[:8]}") for _ in range(2)
    ]
    try:
        yield pair
    finally:
        for backend in pair:
            for inst in await backend.list():
                await backend.remove(inst)
            await backend.close()


async def first_event(backend: ContainerBackend, since: float) -> InstanceExit:
    """The first exit from ``since`` on, reconnecting as the daemon's watcher does when
    the engine ends its stream (Podman's does, now and then, under load)."""
    for _ in range(3):
        events = backend.events(since=since)
        try:
            return await anext(events)
        except EngineError:
            await asyncio.sleep(0.1)
        finally:
            await events.aclose()
    raise AssertionError("the engine ended its event stream three times")


def sleeper(image: str) -> InstanceSpec:
    return InstanceSpec(function="events", version="v1", image=image)


@pytest.mark.container
async def test_a_killed_container_is_told_and_another_daemons_is_not(
    backends: list[ContainerBackend], server_image: str
) -> None:
    ours, theirs = backends
    since = time.time()
    first = asyncio.ensure_future(first_event(ours, since))
    mine = await ours.start(sleeper(server_image), "i-mine")
    other = await theirs.start(sleeper(server_image), "i-other")
    subprocess.run(["podman", "kill", other.backend_ref], check=True, capture_output=True)
    killed = time.time()
    subprocess.run(["podman", "kill", mine.backend_ref], check=True, capture_output=True)
    ended = await asyncio.wait_for(first, 5)
    told = time.time()
    assert (ended.instance_id, ended.backend_ref, ended.exit_code) == (
        "i-mine",
        mine.backend_ref,
        137,
    )
    assert since <= ended.ts <= told
    assert told - killed < 2.5


@pytest.mark.container
async def test_a_reader_that_subscribes_later_gets_exits_since(
    backends: list[ContainerBackend], server_image: str
) -> None:
    ours, _ = backends
    since = time.time()
    inst = await ours.start(sleeper(server_image), "i-early")
    await ours.stop(inst, timeout=0)  # a stop is an exit too
    events = ours.events(since=since)
    ended = await asyncio.wait_for(anext(events), 5)
    assert ended.instance_id == "i-early"
    assert ended.exit_code in (137, 143)  # SIGKILL, or SIGTERM when the engine sends it first
    await events.aclose()


@pytest.mark.container
async def test_the_events_raise_engine_error_when_the_engine_goes_away(
    tmp_path: Path,
) -> None:
    service = PodmanService(tmp_path / "going.sock")
    await service.start()
    backend = ContainerBackend(service.endpoint, f"test-{uuid.uuid4().hex[:8]}")
    try:
        events = backend.events()
        waiting = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0.5)
        await service.stop()
        with pytest.raises(EngineError):
            await asyncio.wait_for(waiting, 10)
    finally:
        await service.stop()
        await backend.close()
