"""Admission: slots are handed out and returned exactly once, whatever the caller does."""

from __future__ import annotations

import asyncio
import random

import pytest

from plat.daemon.drivers.base import RunningInstance
from plat.daemon.serving.function_state import FunctionState, NoCapacity
from plat.daemon.serving.instance import Instance
from plat.daemon.serving.release import Release
from plat.manifest import validate_manifest


def make_state(*, concurrency: int = 1, instances: int = 1) -> FunctionState:
    manifest = validate_manifest(
        {"name": "f", "runtime": "python", "scale": {"max": 4, "concurrency": concurrency}},
        source="test",
    )
    fs = FunctionState("f", Release(manifest, "v1", "img"))
    for n in range(instances):
        running = RunningInstance(f"i{n}", "f", "v1", "127.0.0.1", 1000 + n, f"ref{n}")
        fs.instances.append(Instance(running=running, started_at=0.0, state="ready"))
    return fs


def assert_balanced(fs: FunctionState) -> None:
    report = fs.admission()
    assert report.ok, report
    assert report.held == report.inflight == 0, report
    assert report.waiting == 0, report


async def test_a_waiter_cancelled_in_the_pass_that_handed_it_a_slot_returns_it() -> None:
    fs = make_state()
    first = fs.take()
    assert first is not None
    waiter = asyncio.create_task(fs.wait_for_slot(queue_limit=10, timeout=5.0))
    await asyncio.sleep(0)  # queued
    fs.release_slot(first)  # dispatch hands the freed slot to the waiter...
    waiter.cancel()  # ...and its client goes away before it runs
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert_balanced(fs)
    # The function still serves: the next caller gets the slot at once.
    again = fs.take()
    assert again is not None
    fs.release_slot(again)
    assert_balanced(fs)


async def test_a_waiter_that_times_out_as_it_is_handed_a_slot_keeps_it() -> None:
    fs = make_state()
    first = fs.take()
    assert first is not None
    waiter = asyncio.create_task(fs.wait_for_slot(queue_limit=10, timeout=0.05))
    await asyncio.sleep(0)
    fs.release_slot(first)
    inst = await waiter
    assert fs.admission().held == 1
    fs.release_slot(inst)
    assert_balanced(fs)


async def test_a_waiter_that_times_out_gets_no_capacity_and_holds_nothing() -> None:
    fs = make_state()
    first = fs.take()
    assert first is not None
    with pytest.raises(NoCapacity):
        await fs.wait_for_slot(queue_limit=10, timeout=0.01)
    fs.release_slot(first)
    assert_balanced(fs)


async def test_a_slot_returned_twice_is_counted_once() -> None:
    fs = make_state(concurrency=2)
    inst = fs.take()
    assert inst is not None
    fs.release_slot(inst)
    fs.release_slot(inst)
    assert inst.inflight == 0
    assert_balanced(fs)


async def test_rounds_of_clients_that_give_up_while_queued_never_leak_a_slot() -> None:
    """max 1, concurrency 1, and rounds of callers that disconnect after 0-50 ms."""
    fs = make_state()
    rng = random.Random(7)

    async def caller() -> None:
        inst = fs.take() or await fs.wait_for_slot(queue_limit=1000, timeout=5.0)
        try:
            await asyncio.sleep(rng.random() * 0.002)
        finally:
            fs.release_slot(inst)

    for _ in range(10):
        tasks = [asyncio.create_task(caller()) for _ in range(200)]
        await asyncio.sleep(0)
        for task in tasks:
            asyncio.get_running_loop().call_later(rng.random() * 0.05, task.cancel)
        await asyncio.gather(*tasks, return_exceptions=True)
        assert_balanced(fs)
    inst = fs.take()
    assert inst is not None, "the instance is free, yet no slot is left"
    fs.release_slot(inst)
    assert_balanced(fs)


async def test_slots_held_on_an_instance_that_left_the_function_still_count() -> None:
    fs = make_state(concurrency=2)
    inst = fs.take()
    assert inst is not None
    fs.instances.remove(inst)  # draining: out of the list, its call still running
    assert fs.admission().held == 1 and fs.admission().ok
    fs.release_slot(inst)
    assert_balanced(fs)
