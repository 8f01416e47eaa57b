"""The controller against an in-memory backend whose instances are tiny loopback HTTP
servers: blue/green deploys, removal, admission, on-demand starts, scaling and
restart reconciliation. No container engine is involved."""

from __future__ import annotations

import asyncio
import time

import pytest

from plat.daemon.serving.autoscaler import ScalerSettings
from plat.daemon.serving.controller import Controller, InstanceFailed
from plat.daemon.serving.function_state import NoCapacity, TooManyRequests
from plat.daemon.serving.instances import instance_spec
from plat.daemon.store import Store
from plat.errors import EngineError, NotFoundError, PlatError
from tests.daemon.fakes import (
    FakeBackend,
    eventually,
    make_controller,
    manifest,
    release,
)
from tests.daemon.serving.controllers import (
    MakeController,
    deployed,
    scaled_to_zero,
)

pytestmark = pytest.mark.timeout(30)  # a hang fails fast, not at the suite's limit

# deploy


async def test_a_deploy_serves_a_ready_instance_and_records_the_function(
    controller: Controller, backend: FakeBackend, store: Store
) -> None:
    events: list[str] = []
    fs = await controller.deploy(release(manifest(), "v1"), "/src/fn", events.append)
    [inst] = fs.instances
    assert inst.state == "ready" and backend.started == [inst.id]
    assert backend.instance(inst.id).probes >= 1
    assert any("waiting for ready" in e for e in events)
    record = await store.get_function("fn")
    assert record is not None and (record.version, record.source_dir) == ("v1", "/src/fn")
    rows = await store.list_instances("fn")
    assert [(r.id, r.state, r.backend) for r in rows] == [(inst.id, "ready", "fake")]


async def test_a_deploy_switches_traffic_only_once_the_new_version_is_ready(
    controller: Controller, backend: FakeBackend, store: Store
) -> None:
    fs = await deployed(controller, manifest())
    [old] = fs.instances
    backend.unready_starts = 1
    rollout = asyncio.create_task(controller.deploy(release(manifest(), "v2"), "/src/fn"))
    await eventually(lambda: len(backend.started) == 2)
    await asyncio.sleep(0.05)  # probes of the new instance are refused meanwhile
    assert fs.version == "v1" and fs.instances == [old]
    inst, _ = await controller.acquire("fn")
    assert inst is old
    controller.release(inst)

    await backend.make_ready(backend.started[1])
    await rollout
    [new] = fs.instances
    assert (fs.version, new.id, new.state) == ("v2", backend.started[1], "ready")
    await eventually(lambda: old.id in backend.removed, what="the old instance's removal")
    assert old.state == "stopped"
    record = await store.get_function("fn")
    assert record is not None and record.version == "v2"
    assert [r.id for r in await store.list_instances("fn")] == [new.id]


async def test_the_old_version_finishes_its_calls_before_it_stops(
    controller: Controller, backend: FakeBackend
) -> None:
    fs = await deployed(controller, manifest())
    old, _ = await controller.acquire("fn")
    await deployed(controller, manifest(), "v2")
    assert old not in fs.instances
    await eventually(lambda: old.state == "draining")
    new, _ = await controller.acquire("fn")
    assert new is not old and new.running.version == "v2"
    await asyncio.sleep(0.05)
    assert old.id not in backend.stopped and old in controller.live_instances("fn")
    controller.release(old)  # its call ends
    await eventually(lambda: old.id in backend.removed, what="the drained instance's removal")
    controller.release(new)
    assert fs.admission().ok and fs.admission().held == 0


async def test_a_new_version_that_never_gets_ready_fails_and_the_old_one_keeps_serving(
    controllers: MakeController, backend: FakeBackend, store: Store
) -> None:
    controller = controllers(ready_timeout=0.3)
    fs = await deployed(controller, manifest())
    [old] = fs.instances
    backend.unready_starts = 1
    with pytest.raises(InstanceFailed, match="did not become ready") as failed:
        await deployed(controller, manifest(), "v2")
    failed_id = backend.started[1]
    assert f"fake log of {failed_id}" in failed.value.message  # the instance's log tail
    assert fs.version == "v1" and fs.instances == [old] and old.state == "ready"
    await eventually(lambda: failed_id in backend.removed, what="the failed instance's removal")
    record = await store.get_function("fn")
    assert record is not None and record.version == "v1"
    assert [r.id for r in await store.list_instances("fn")] == [old.id]
    inst, _ = await controller.acquire("fn")
    assert inst is old
    controller.release(inst)


async def test_a_new_instance_that_dies_before_it_is_ready_fails_without_waiting_out_the_timeout(
    controllers: MakeController, backend: FakeBackend
) -> None:
    controller = controllers(ready_timeout=10.0)
    fs = await deployed(controller, manifest())
    backend.unready_starts = 1
    rollout = asyncio.create_task(deployed(controller, manifest(), "v2"))
    await eventually(lambda: len(backend.started) == 2)
    backend.kill(backend.started[1])
    started = time.monotonic()
    with pytest.raises(InstanceFailed, match="exited before it became ready"):
        await rollout
    assert time.monotonic() - started < 2.0
    assert fs.version == "v1" and fs.ready_instances()


@pytest.mark.parametrize(
    ("knob", "error"), [("fail_starts", EngineError), ("unready_starts", InstanceFailed)]
)
async def test_a_first_deploy_that_fails_leaves_no_function(
    controllers: MakeController,
    backend: FakeBackend,
    store: Store,
    knob: str,
    error: type[PlatError],
) -> None:
    controller = controllers(ready_timeout=0.2)
    setattr(backend, knob, 1)
    with pytest.raises(error):
        await deployed(controller, manifest())
    assert "fn" not in controller.functions
    with pytest.raises(NotFoundError):
        await controller.acquire("fn")
    assert await store.get_function("fn") is None
    await eventually(lambda: backend.alive() == [], what="the failed instance's stop")


async def test_a_new_version_starts_as_many_instances_as_serve_now(
    controller: Controller, backend: FakeBackend
) -> None:
    fs = await deployed(controller, manifest(min=1))
    controller.rescale("fn", manifest(min=3))
    await eventually(lambda: len(fs.ready_instances()) == 3)
    await deployed(controller, manifest(min=1), "v2")
    assert [i.running.version for i in fs.instances] == ["v2"] * 3
    assert fs.target == 3
    await eventually(lambda: len(backend.alive("fn")) == 3, what="the old instances' stop")


async def test_a_scale_up_of_the_old_version_that_ends_after_a_deploy_is_stopped(
    controller: Controller, backend: FakeBackend
) -> None:
    fs = await deployed(controller, manifest(min=1))
    backend.unready_starts = 1
    controller.rescale("fn", manifest(min=2))  # an instance of v1 starts, slowly
    await eventually(lambda: len(backend.started) == 2)
    late = backend.started[1]
    await deployed(controller, manifest(min=2), "v2")
    await backend.make_ready(late)
    await eventually(lambda: late in backend.removed, what="the late v1 instance's stop")
    assert [i.running.version for i in fs.instances] == ["v2", "v2"]
    assert late not in [i.id for i in fs.instances]


# remove


async def test_remove_stops_every_instance_and_the_function_is_gone(
    controller: Controller, backend: FakeBackend, store: Store
) -> None:
    fs = await deployed(controller, manifest(min=2))
    ids = sorted(i.id for i in fs.instances)
    await controller.remove("fn")
    assert sorted(backend.removed) == ids and backend.alive() == []
    assert backend.unprepared == ["fn"]
    with pytest.raises(NotFoundError):
        controller.get("fn")
    with pytest.raises(NotFoundError):
        await controller.acquire("fn")
    assert await store.get_function("fn") is None
    assert await store.list_instances("fn") == []
    with pytest.raises(NotFoundError):
        await controller.remove("fn")


async def test_remove_while_the_engine_is_away_succeeds_and_its_instances_go_once_it_is_back(
    controller: Controller, backend: FakeBackend, store: Store
) -> None:
    fs = await deployed(controller, manifest(min=2))
    ids = sorted(i.id for i in fs.instances)
    backend.away = True
    await controller.remove("fn")
    assert "fn" not in controller.functions and await store.get_function("fn") is None
    assert backend.removed == []
    backend.away = False
    await controller.instances.sweep()
    await eventually(lambda: sorted(backend.removed) == ids, what="the leftovers' removal")


async def test_remove_fails_queued_calls_and_takes_back_the_slots_still_held(
    controller: Controller,
) -> None:
    fs = await deployed(controller, manifest(max=1))
    held, _ = await controller.acquire("fn")
    queued = asyncio.create_task(controller.acquire("fn"))
    await eventually(lambda: fs.waiters)
    await controller.remove("fn")
    with pytest.raises(NotFoundError, match="was removed"):
        await queued
    controller.release(held)  # its call ended after the removal
    assert held.inflight == 0 and held.idle.is_set()


# traffic


async def test_acquire_hands_out_concurrency_slots_and_release_passes_them_to_the_queue(
    controller: Controller, backend: FakeBackend
) -> None:
    fs = await deployed(controller, manifest(max=1, concurrency=2))
    a, waited = await controller.acquire("fn")
    b, _ = await controller.acquire("fn")
    assert a is b and a.inflight == 2 and waited == 0.0
    third = asyncio.create_task(controller.acquire("fn"))
    await eventually(lambda: len(fs.waiters) == 1)
    assert fs.admission().held == 2
    controller.release(a)
    c, waited = await third
    assert c is a and waited == 0.0  # queued behind a busy instance: no cold start
    controller.release(b)
    controller.release(c)
    report = fs.admission()
    assert report.ok and (report.held, report.inflight, report.waiting) == (0, 0, 0)
    assert len(backend.started) == 1


async def test_a_call_to_a_function_scaled_to_zero_starts_an_instance_and_waits_for_it(
    controller: Controller, backend: FakeBackend
) -> None:
    fs = await scaled_to_zero(controller, backend)
    assert backend.prepared[0][0] == "fn"  # the next start was prepared ahead
    inst, waited = await controller.acquire("fn")
    assert waited > 0.0 and inst.state == "ready" and inst.id == backend.started[1]
    assert fs.target == 1 and fs.instances == [inst]
    controller.release(inst)
    assert fs.admission().ok


async def test_queued_calls_start_instances_up_to_max_and_no_further(
    controller: Controller, backend: FakeBackend
) -> None:
    fs = await deployed(controller, manifest(max=3))
    calls = await asyncio.gather(*(controller.acquire("fn") for _ in range(3)))
    instances = {inst for inst, _ in calls}
    assert len(instances) == 3 and len(backend.started) == 3
    fourth = asyncio.create_task(controller.acquire("fn"))
    await eventually(lambda: fs.waiters)
    await asyncio.sleep(0.05)
    assert len(backend.started) == 3
    first = calls[0][0]
    controller.release(first)
    queued, _ = await fourth
    assert queued is first
    for inst in [queued, *(i for i, _ in calls[1:])]:
        controller.release(inst)
    assert fs.admission().ok and fs.admission().held == 0


async def test_a_full_queue_answers_too_many_requests(controllers: MakeController) -> None:
    controller = controllers(queue_limit=1)
    fs = await deployed(controller, manifest(max=1))
    held, _ = await controller.acquire("fn")
    queued = asyncio.create_task(controller.acquire("fn"))
    await eventually(lambda: fs.waiters)
    with pytest.raises(TooManyRequests):
        await controller.acquire("fn")
    controller.release(held)
    inst, _ = await queued
    controller.release(inst)
    assert fs.admission().ok and fs.admission().held == 0


async def test_no_slot_within_the_queue_timeout_is_no_capacity(
    controllers: MakeController,
) -> None:
    controller = controllers(queue_timeout=0.05)
    fs = await deployed(controller, manifest(max=1))
    held, _ = await controller.acquire("fn")
    with pytest.raises(NoCapacity, match=r"within 0\.05 s"):
        await controller.acquire("fn")
    assert (fs.admission().held, fs.admission().waiting) == (1, 0)
    controller.release(held)


@pytest.mark.parametrize(
    ("knob", "error", "message"),
    [
        ("fail_starts", NoCapacity, "failed to start"),
        ("unready_starts", InstanceFailed, "did not become ready"),
    ],
)
async def test_a_cold_start_that_fails_fails_the_queued_call_at_once(
    controllers: MakeController,
    backend: FakeBackend,
    knob: str,
    error: type[PlatError],
    message: str,
) -> None:
    controller = controllers(ready_timeout=0.2, queue_timeout=5.0)
    fs = await scaled_to_zero(controller, backend)
    setattr(backend, knob, 1)
    started = time.monotonic()
    with pytest.raises(error, match=message):
        await controller.acquire("fn")
    assert time.monotonic() - started < 2.0  # not the queue timeout
    assert fs.admission().ok and fs.admission().waiting == 0


# scaling


async def test_rescale_starts_instances_up_to_a_new_minimum_and_drains_to_a_new_maximum(
    controller: Controller, backend: FakeBackend
) -> None:
    fs = await deployed(controller, manifest(min=1))
    controller.rescale("fn", manifest(min=3))
    assert fs.target == 3 and fs.capacity == 3
    await eventually(lambda: len(fs.ready_instances()) == 3)
    controller.rescale("fn", manifest(min=1, max=1))
    assert fs.target == 1 and len(fs.instances) == 1
    await eventually(lambda: len(backend.alive("fn")) == 1, what="two instances' stop")
    assert len(backend.removed) == 2 and fs.manifest.scale.max == 1
    with pytest.raises(NotFoundError):
        controller.rescale("nope", manifest("nope"))


async def test_autoscale_once_adds_instances_under_load(
    controller: Controller, backend: FakeBackend
) -> None:
    fs = await deployed(controller, manifest(min=1))
    held, _ = await controller.acquire("fn")  # one call fills the one instance
    controller.autoscale_once(time.monotonic())
    assert fs.target == 2 and fs.decision is not None and fs.decision.panicking
    await eventually(lambda: len(fs.ready_instances()) == 2)
    controller.release(held)


async def test_autoscale_once_scales_an_idle_function_down_to_its_minimum(
    controller: Controller, backend: FakeBackend
) -> None:
    fs = await deployed(controller, manifest(min=3))
    controller.rescale("fn", manifest(min=1))  # keeps the three that serve
    assert len(fs.instances) == 3
    controller.autoscale_once(time.monotonic() + 100)
    assert fs.target == 1 and len(fs.instances) == 1
    await eventually(lambda: len(backend.alive("fn")) == 1, what="two instances' stop")
    assert backend.prepared == []  # not scaled to zero: no standby


async def test_an_idle_function_scales_to_zero_only_after_its_idle_period(
    controllers: MakeController, backend: FakeBackend
) -> None:
    controller = controllers(scaler=ScalerSettings(scale_to_zero_after=30.0))
    fs = await deployed(controller, manifest(min=0))
    inst, _ = await controller.acquire("fn")
    controller.release(inst)
    now = time.monotonic()
    controller.autoscale_once(now + 10)
    assert fs.target == 1 and fs.instances == [inst]
    controller.autoscale_once(now + 31)
    assert fs.target == 0 and fs.instances == []
    await eventually(lambda: inst.id in backend.removed and backend.prepared)
    assert [function for function, _ in backend.prepared] == ["fn"]


async def test_a_function_just_deployed_keeps_its_instance_for_its_idle_period(
    controllers: MakeController, backend: FakeBackend
) -> None:
    """The instance that proved a min-0 deploy was stopped at the next tick (it had
    never served, so it counted as idle forever): the first call paid a cold start."""
    controller = controllers(scaler=ScalerSettings(scale_to_zero_after=30.0))
    fs = await deployed(controller, manifest(min=0))
    (inst,) = fs.instances
    now = time.monotonic()
    controller.autoscale_once(now + 1)
    assert fs.target == 1 and fs.instances == [inst]
    controller.autoscale_once(now + 31)
    assert fs.target == 0 and fs.instances == []


async def test_the_autoscaler_leaves_a_function_alone_while_it_deploys(
    controller: Controller, backend: FakeBackend
) -> None:
    fs = await deployed(controller, manifest(min=0))
    backend.unready_starts = 1
    rollout = asyncio.create_task(deployed(controller, manifest(min=0), "v2"))
    await eventually(lambda: len(backend.started) == 2)
    controller.autoscale_once(time.monotonic() + 1000)  # idle: would scale to zero
    assert fs.target == 1 and len(fs.instances) == 1
    await backend.make_ready(backend.started[1])
    await rollout
    assert fs.version == "v2" and fs.ready_instances()


# restart


async def test_a_restarted_controller_adopts_healthy_current_instances_and_removes_the_rest(
    controllers: MakeController, backend: FakeBackend, store: Store
) -> None:
    first = make_controller(store, backend)
    await first.start()
    spec = manifest(min=2)
    new = release(spec, "v2")
    await store.record_version(
        "fn",
        "v2",
        new.image,
        status="built",
        builder="fake",
        build_log="",
        build_seconds=0.0,
        manifest=spec.to_dict(),
    )  # the deployer's part
    fs = await first.deploy(new, "/src/fn")
    kept, dead = fs.instances
    # An instance of an older version that a crashed daemon left behind.
    stale = await backend.start(instance_spec(release(spec, "v1")), "stale000")
    await first.close(stop_instances=False)
    backend.kill(dead.id)

    second = controllers()
    await second.start()
    again = second.get("fn")
    assert again.version == "v2" and again.target == 2
    assert kept.id in [i.id for i in again.instances]
    assert stale.id in backend.removed and dead.id in backend.removed
    await eventually(lambda: len(again.ready_instances()) == 2, what="the gap's filling")
    serving = {i.id for i in again.instances}
    assert {f.running.id for f in backend.alive()} == serving
    assert {r.id for r in await store.list_instances("fn")} == serving
    inst, waited = await second.acquire("fn")
    assert waited == 0.0
    second.release(inst)
