"""Admission: slots are handed out and returned exactly once, whatever the caller does."""

from __future__ import annotations

import asyncio
import random

import pytest

from plat.daemon.drivers.base import RunningInstance
from plat.daemon.drivers.versions import Release
from plat.daemon.serving.autoscaler import Decision
from plat.daemon.serving.function_state import FunctionState, NoCapacity, TooManyRequests
from plat.daemon.serving.instance import Instance, Start
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


def other_release(fs: FunctionState, version: str) -> Release:
    return Release(fs.manifest, version, f"img-{version}")


def taken(fs: FunctionState) -> Instance:
    """A slot taken at once (an instance must have one free)."""
    inst = fs.take()
    assert inst is not None
    return inst


async def queue(
    fs: FunctionState, count: int, *, queue_limit: int = 10
) -> list[asyncio.Task[Instance]]:
    """``count`` callers queued for a slot, in this order."""
    tasks = [
        asyncio.create_task(fs.wait_for_slot(queue_limit=queue_limit, timeout=5.0))
        for _ in range(count)
    ]
    await asyncio.sleep(0)
    return tasks


async def test_capacity_counts_ready_instances_and_starts_of_the_current_code() -> None:
    fs = make_state(instances=2)
    fs.instances[1].state = "suspect"
    assert fs.capacity == 1
    rescaled = validate_manifest(
        {"name": "f", "runtime": "python", "scale": {"min": 2, "max": 4}}, source="test"
    )
    fs.starting.add(Start(fs.release))
    fs.starting.add(Start(Release(rescaled, "v1", "img")))  # same code, other scale
    fs.starting.add(Start(other_release(fs, "v0")))  # an older version, still starting
    assert fs.starts == 2 and fs.capacity == 3


async def test_set_target_is_never_negative_and_keeps_the_last_decision() -> None:
    fs = make_state()
    fs.set_target(-3)
    assert fs.target == 0 and fs.decision is None
    decision = Decision(desired=2, observed_stable=1.0, observed_panic=1.5, panicking=False)
    fs.set_target(2, decision)
    assert fs.target == 2 and fs.decision is decision
    fs.set_target(5)  # not the autoscaler's: its last decision stays
    assert fs.target == 5 and fs.decision is decision


async def test_take_picks_the_least_busy_ready_instance_with_a_free_slot() -> None:
    fs = make_state(concurrency=2, instances=3)
    fs.instances[2].state = "draining"
    taken = [fs.take() for _ in range(4)]
    assert [i.id if i else None for i in taken] == ["i0", "i1", "i0", "i1"]
    assert fs.take() is None  # the draining one never takes calls
    for inst in taken:
        assert inst is not None
        fs.release_slot(inst)
    assert_balanced(fs)


async def test_a_full_queue_refuses_with_too_many_requests() -> None:
    fs = make_state()
    first = taken(fs)
    queued = await queue(fs, 2, queue_limit=2)
    with pytest.raises(TooManyRequests, match="2 requests are already waiting"):
        await fs.wait_for_slot(queue_limit=2, timeout=5.0)
    for task in queued:  # each slot, freed, goes to the next in the queue
        fs.release_slot(first)
        first = await task
    fs.release_slot(first)
    assert_balanced(fs)


async def test_starts_under_way_make_room_in_the_queue_for_their_slots() -> None:
    fs = make_state(concurrency=2, instances=0)
    fs.starting.add(Start(fs.release))
    queued = await queue(fs, 2, queue_limit=0)
    assert len(fs.waiters) == 2
    with pytest.raises(TooManyRequests):
        await fs.wait_for_slot(queue_limit=0, timeout=5.0)
    fs.fail_waiters(NoCapacity("gone"))
    for task in queued:
        with pytest.raises(NoCapacity):
            await task
    assert_balanced(fs)


async def test_no_instance_within_the_timeout_is_no_capacity() -> None:
    fs = make_state(instances=0)
    with pytest.raises(NoCapacity, match=r"no instance of f could take the request within 0\.01 s"):
        await fs.wait_for_slot(queue_limit=10, timeout=0.01)
    assert_balanced(fs)


async def test_waiters_are_served_in_the_order_they_came() -> None:
    fs = make_state()
    first = taken(fs)
    served: list[int] = []

    async def caller(n: int) -> None:
        inst = await fs.wait_for_slot(queue_limit=10, timeout=5.0)
        served.append(n)
        fs.release_slot(inst)

    callers = []
    for n in range(5):
        callers.append(asyncio.create_task(caller(n)))
        await asyncio.sleep(0)  # queued in this order
    fs.release_slot(first)
    await asyncio.gather(*callers)
    assert served == [0, 1, 2, 3, 4]
    assert_balanced(fs)


async def test_an_instance_that_gets_ready_takes_waiters_up_to_its_concurrency() -> None:
    fs = make_state(concurrency=2, instances=0)
    queued = await queue(fs, 3)
    fs.dispatch()  # nothing ready: nobody served
    assert len(fs.waiters) == 3
    running = RunningInstance("new", "f", "v1", "127.0.0.1", 2000, "refnew")
    fs.instances.append(Instance(running=running, started_at=0.0, state="ready"))
    fs.dispatch()
    served = await asyncio.gather(*queued[:2])
    assert [i.id for i in served] == ["new", "new"] and len(fs.waiters) == 1
    fs.release_slot(served[0])  # the last waiter gets the freed slot
    assert (await queued[2]).id == "new"
    for inst in (served[1], fs.instances[0]):
        fs.release_slot(inst)
    assert_balanced(fs)


async def test_a_slot_freed_on_a_draining_instance_goes_to_no_waiter() -> None:
    fs = make_state()
    inst = taken(fs)
    [queued] = await queue(fs, 1)
    inst.state = "draining"
    fs.release_slot(inst)
    await asyncio.sleep(0)
    assert not queued.done() and fs.admission().waiting == 1 and inst.idle.is_set()
    fs.fail_waiters(NoCapacity("the daemon is shutting down"))
    with pytest.raises(NoCapacity, match="shutting down"):
        await queued
    assert_balanced(fs)


async def test_the_books_catch_a_slot_taken_behind_their_back() -> None:
    fs = make_state(concurrency=2)
    inst = taken(fs)
    assert fs.admission().ok
    inst.inflight += 1  # not through take(): nobody holds it
    assert not fs.admission().ok
    inst.inflight -= 1
    fs.release_slot(inst)
    assert_balanced(fs)
