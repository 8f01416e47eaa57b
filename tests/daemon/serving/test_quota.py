"""Tenant quotas in the controller, on the in-memory backend: every start is
checked (deploy, on demand, autoscaler, replacement), nothing running is stopped."""

from __future__ import annotations

import asyncio
import time

import pytest

from plat.daemon.serving.controller import Controller
from plat.daemon.serving.quota import Limits, QuotaExceeded
from plat.daemon.store import Store
from plat.manifest import Manifest, validate_manifest
from tests.daemon.fakes import FakeBackend, eventually
from tests.daemon.serving.controllers import MakeController, deployed

pytestmark = pytest.mark.timeout(30)

MiB = 1024**2


def manifest(key: str, **scale: int) -> Manifest:
    """A python function's manifest named by its key (``<name>.<tenant>``)."""
    settings = {"min": 1, "max": 4, "concurrency": 1, **scale}
    document = {"name": key, "runtime": "python", "scale": settings}
    return validate_manifest(document, source="test", qualified=True)


def limited(controllers: MakeController, **limits: Limits) -> Controller:
    return controllers(limits_of=limits.get)


async def test_a_deploy_over_the_quota_is_refused_and_starts_nothing(
    controllers: MakeController, backend: FakeBackend
) -> None:
    controller = limited(controllers, acme=Limits(2, None))
    with pytest.raises(QuotaExceeded, match="may run 2 instance"):
        await deployed(controller, manifest("fn.acme", min=3))
    assert backend.started == [] and "fn.acme" not in controller.functions
    await deployed(controller, manifest("fn.acme", min=2))
    # another tenant, and the default one, are not limited by acme's quota
    await deployed(controller, manifest("fn.beta", min=3))
    await deployed(controller, manifest("fn", min=3))


async def test_a_redeploy_replaces_its_own_instances_within_the_quota(
    controllers: MakeController,
) -> None:
    controller = limited(controllers, acme=Limits(2, None))
    await deployed(controller, manifest("fn.acme", min=2))
    fs = await deployed(controller, manifest("fn.acme", min=2), "v2")
    assert fs.version == "v2"


async def test_memory_counts_each_instance_at_its_manifests_size(
    controllers: MakeController,
) -> None:
    controller = limited(controllers, acme=Limits(None, 600 * MiB))
    spec = manifest("a.acme", min=2)  # 256Mi each: 512Mi
    await deployed(controller, spec)
    assert controller.quotas.usage("acme").memory == 512 * MiB
    with pytest.raises(QuotaExceeded, match="memory"):
        await deployed(controller, manifest("b.acme", min=1))


async def test_the_autoscaler_starts_only_what_the_quota_leaves_room_for(
    controllers: MakeController, backend: FakeBackend
) -> None:
    controller = limited(controllers, acme=Limits(3, None))
    fs = await deployed(controller, manifest("fn.acme", min=1, max=10, concurrency=1))
    waiting = [asyncio.create_task(controller.acquire("fn.acme")) for _ in range(8)]
    await asyncio.sleep(0.01)
    controller.autoscale_once(time.monotonic())
    await eventually(lambda: len(fs.ready_instances()) == 3)
    await asyncio.sleep(0.1)
    assert len(fs.instances) + fs.starts == 3 and len(backend.started) == 3
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)


async def test_a_call_with_no_instance_and_no_room_is_a_429_and_nothing_stops(
    controllers: MakeController, backend: FakeBackend, store: Store
) -> None:
    controller = limited(controllers, acme=Limits(1, None))
    idle = await deployed(controller, manifest("idle.acme", min=0))
    controller.autoscale_once(time.monotonic() + 1000)
    await eventually(lambda: not idle.instances)
    busy = await deployed(controller, manifest("busy.acme", min=1))
    with pytest.raises(QuotaExceeded) as caught:
        await controller.acquire("idle.acme")
    assert caught.value.status == 429 and "quota" in caught.value.message
    assert [i.state for i in busy.instances] == ["ready"]
    # room again (busy removed): the next call starts idle on demand
    await controller.remove("busy.acme")
    inst, _ = await controller.acquire("idle.acme")
    controller.release(inst)


async def test_a_dead_instance_is_replaced_within_the_quota(
    controllers: MakeController, backend: FakeBackend
) -> None:
    controller = limited(controllers, acme=Limits(1, None))
    await controller.start()
    fs = await deployed(controller, manifest("fn.acme", min=1))
    [first] = fs.instances
    backend.kill(first.id)
    await eventually(lambda: fs.ready_instances() and fs.ready_instances()[0] is not first)
    assert len(fs.instances) == 1
