"""Failing instances, against the in-memory backend: health checks after a failed or
timed-out call, replacement, the watchdog, and removals retried after an engine outage."""

from __future__ import annotations

import asyncio

import pytest

from plat.daemon.serving.controller import Controller
from plat.daemon.store import Store
from tests.daemon.fakes import (
    FakeBackend,
    eventually,
    make_controller,
    manifest,
)
from tests.daemon.serving.controllers import (
    deployed,
    ready_except,
)

pytestmark = pytest.mark.timeout(30)  # a hang fails fast, not at the suite's limit

# repair


async def test_a_suspect_instance_that_answers_its_check_serves_again(
    controller: Controller, backend: FakeBackend
) -> None:
    fs = await deployed(controller, manifest())
    [inst] = fs.instances
    controller.suspect(inst)
    assert inst.state == "suspect" and fs.ready_instances() == []
    await eventually(lambda: inst.state == "ready", what="the check")
    assert backend.started == [inst.id] and backend.stopped == []


async def test_a_suspect_instance_that_is_down_is_replaced(
    controller: Controller, backend: FakeBackend, store: Store
) -> None:
    fs = await deployed(controller, manifest())
    [inst] = fs.instances
    backend.kill(inst.id)
    controller.suspect(inst)
    await eventually(lambda: ready_except(fs, inst), what="the replacement")
    await eventually(lambda: inst.id in backend.removed, what="the dead instance's removal")
    assert inst.state == "stopped" and len(backend.started) == 2
    assert [r.id for r in await store.list_instances("fn")] == [fs.instances[0].id]


async def test_a_suspect_instance_that_answers_stays_while_the_engine_is_away(
    controller: Controller, backend: FakeBackend
) -> None:
    fs = await deployed(controller, manifest())
    [inst] = fs.instances
    backend.away = True
    controller.suspect(inst)
    await eventually(lambda: inst.state == "ready", what="the check by probe alone")
    backend.away = False
    assert fs.instances == [inst] and backend.started == [inst.id]


async def test_a_call_timing_out_on_a_wedged_instance_drains_it_and_starts_a_successor(
    controller: Controller, backend: FakeBackend
) -> None:
    fs = await deployed(controller, manifest())
    wedged, _ = await controller.acquire("fn")
    backend.wedge(wedged.id)
    controller.timed_out(wedged)
    await eventually(lambda: ready_except(fs, wedged), what="the successor")
    assert wedged.state == "draining" and wedged.id not in backend.stopped
    controller.release(wedged)  # its call ends at its deadline
    await eventually(lambda: wedged.id in backend.removed, what="the drained instance's stop")
    assert fs.admission().ok and fs.admission().held == 0


async def test_a_call_timing_out_on_a_healthy_instance_keeps_it(
    controller: Controller, backend: FakeBackend
) -> None:
    fs = await deployed(controller, manifest())
    inst, _ = await controller.acquire("fn")
    controller.timed_out(inst)
    assert inst.checking
    controller.timed_out(inst)  # one check at a time
    await eventually(lambda: not inst.checking, what="the check")
    assert inst.state == "ready" and fs.instances == [inst] and backend.started == [inst.id]
    controller.release(inst)


async def test_the_watchdog_replaces_an_instance_that_died(
    controller: Controller, backend: FakeBackend
) -> None:
    await controller.start()
    fs = await deployed(controller, manifest())
    [dead] = fs.instances
    backend.kill(dead.id)
    await eventually(lambda: ready_except(fs, dead), what="the replacement")
    await eventually(lambda: dead.id in backend.removed, what="the dead instance's removal")
    assert len(fs.instances) == 1


async def test_the_watchdog_learns_of_a_death_from_the_exit_event_not_by_polling(
    controller: Controller, backend: FakeBackend
) -> None:
    await controller.start()
    fs = await deployed(controller, manifest())
    await asyncio.sleep(0.3)  # six watch intervals
    listings = backend.listings
    assert listings <= 2  # start-up's reconcile and the stream's first connection
    [dead] = fs.instances
    backend.kill(dead.id)
    await eventually(lambda: ready_except(fs, dead), what="the replacement")
    assert backend.listings == listings


async def test_the_watchdog_reconnects_after_an_engine_outage_and_still_sees_deaths(
    controller: Controller, backend: FakeBackend
) -> None:
    await controller.start()
    fs = await deployed(controller, manifest())
    backend.away = True  # the event stream breaks
    await asyncio.sleep(0.2)
    backend.away = False
    await asyncio.sleep(0.2)  # reconnected
    [dead] = fs.instances
    backend.kill(dead.id)
    await eventually(lambda: ready_except(fs, dead), what="the replacement")


async def test_the_watchdog_never_replaces_a_healthy_instance_even_one_a_listing_missed(
    controller: Controller, backend: FakeBackend
) -> None:
    await controller.start()
    fs = await deployed(controller, manifest(min=2))
    backend.unlisted.add(fs.instances[0].id)  # the engine says it runs when asked
    await asyncio.sleep(0.3)  # six rounds
    assert sorted(backend.started) == sorted(i.id for i in fs.instances)
    assert [i.state for i in fs.instances] == ["ready", "ready"]
    assert backend.stopped == [] and backend.sweeps >= 2


async def test_ensure_starts_only_what_the_target_misses(
    controller: Controller, backend: FakeBackend
) -> None:
    fs = await deployed(controller, manifest(min=1))
    backend.fail_starts = 1
    controller.rescale("fn", manifest(min=2))  # its start fails
    await eventually(lambda: fs.starts == 0, what="the failed start")
    assert len(fs.instances) == 1 and fs.target == 2
    controller.ensure(fs)
    await eventually(lambda: len(fs.ready_instances()) == 2)
    controller.ensure(fs)
    await asyncio.sleep(0.05)
    assert len(backend.started) == 2 and backend.stopped == []


async def test_instances_stopped_while_the_engine_is_away_are_removed_once_it_is_back(
    controller: Controller, backend: FakeBackend
) -> None:
    await controller.start()
    fs = await deployed(controller, manifest(min=2))
    before = list(fs.instances)
    backend.away = True
    controller.rescale("fn", manifest(min=1, max=1))
    [kept] = fs.instances
    [gone] = [i for i in before if i is not kept]
    await eventually(lambda: gone in controller.instances.leftovers, what="the failed stop")
    assert gone in controller.live_instances("fn")
    await asyncio.sleep(0.2)  # watchdog rounds while the engine is away
    assert backend.instance(gone.id).alive and kept.state == "ready"
    backend.away = False
    # The sweep removes it in a task of its own, which settles the bookkeeping after
    # the backend's remove returns: wait for both.
    await eventually(
        lambda: (
            gone.id in backend.removed
            and not controller.instances.leftovers
            and gone not in controller.live_instances("fn")
        ),
        what="the sweep",
    )
    assert fs.instances == [kept] and len(backend.started) == 2


async def test_close_stops_every_instance(store: Store, backend: FakeBackend) -> None:
    controller = make_controller(store, backend)
    await controller.start()
    await deployed(controller, manifest(min=2))
    await controller.close()
    assert backend.alive() == [] and len(backend.removed) == 2
    assert await store.list_instances() == []
