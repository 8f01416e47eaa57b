"""Lanes: one item at a time per key, in order; a newer item replaces a waiting one;
keys run side by side; a failing item does not stop its lane."""

from __future__ import annotations

import asyncio
import logging

from plat.daemon.hooks.lanes import Lanes
from plat.daemon.tasks import TaskGroup


async def test_order_supersede_and_parallel_keys() -> None:
    tasks = TaskGroup(logging.getLogger("test"))
    gates: dict[str, asyncio.Event] = {}
    done: list[str] = []
    running: set[str] = set()
    overlap: list[str] = []

    async def run(item: str) -> None:
        key = item[0]
        if key in running:
            overlap.append(item)
        running.add(key)
        gates[item] = asyncio.Event()
        await gates[item].wait()
        running.discard(key)
        if item == "a3":
            raise RuntimeError("broken")
        done.append(item)

    lanes: Lanes[str] = Lanes(tasks, run)
    assert lanes.put("a", "a1") is None
    await asyncio.sleep(0)
    assert lanes.put("a", "a2") is None
    assert lanes.put("a", "a3") == "a2"  # a2 waited: a3 takes its place
    assert lanes.put("b", "b1") is None
    await asyncio.sleep(0)
    assert sorted(lanes.running()) == ["a1", "b1"] and lanes.waiting() == ["a3"]
    gates["b1"].set()
    gates["a1"].set()
    await asyncio.sleep(0.01)
    assert lanes.put("a", "a4") is None
    gates["a3"].set()  # fails: logged, the lane goes on
    await asyncio.sleep(0.01)
    gates["a4"].set()
    await asyncio.sleep(0.01)
    assert done == ["b1", "a1", "a4"] and not overlap
    assert not lanes.busy("a") and not lanes.busy("b")
    await tasks.close()


async def test_close_cancels_what_runs() -> None:
    tasks = TaskGroup(logging.getLogger("test"))
    started = asyncio.Event()

    async def run(item: int) -> None:
        started.set()
        await asyncio.sleep(3600)

    lanes: Lanes[int] = Lanes(tasks, run)
    lanes.put("k", 1)
    lanes.put("k", 2)
    await started.wait()
    await asyncio.wait_for(tasks.close(), 5)
