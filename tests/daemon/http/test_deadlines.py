"""plat.daemon.http.deadlines: coarse deadlines on the real event loop."""

from __future__ import annotations

import asyncio

from plat.daemon.http.deadlines import Deadlines


class Item:
    def __init__(self, name: str, log: list[tuple[str, float]]) -> None:
        self.name = name
        self.log = log

    def expire(self) -> None:
        self.log.append((self.name, asyncio.get_running_loop().time()))


async def test_items_expire_at_their_deadline_in_order_within_the_resolution() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(resolution=0.02)
    log: list[tuple[str, float]] = []
    now = loop.time()
    wanted = {"late": now + 0.15, "early": now + 0.05, "middle": now + 0.1}
    for name, when in wanted.items():
        deadlines.add(Item(name, log), when)
    await asyncio.sleep(0.3)
    assert [name for name, _ in log] == ["early", "middle", "late"]
    for name, fired in log:
        assert wanted[name] - 0.005 <= fired <= wanted[name] + 0.02 + 0.05
    assert deadlines.pending == 0


async def test_removed_items_never_expire() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(resolution=0.01)
    log: list[tuple[str, float]] = []
    keep, drop = Item("keep", log), Item("drop", log)
    deadlines.add(keep, loop.time() + 0.03)
    slot = deadlines.add(drop, loop.time() + 0.03)
    deadlines.remove(drop, slot)
    deadlines.remove(drop, slot)  # twice is harmless
    await asyncio.sleep(0.1)
    assert [name for name, _ in log] == ["keep"]


async def test_an_earlier_deadline_added_later_still_fires_first() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(resolution=0.01)
    log: list[tuple[str, float]] = []
    deadlines.add(Item("far", log), loop.time() + 5)
    deadlines.add(Item("near", log), loop.time() + 0.02)
    await asyncio.sleep(0.1)
    assert [name for name, _ in log] == ["near"]
    assert deadlines.pending == 1
    deadlines.close()
    assert deadlines.pending == 0


async def test_many_items_share_one_slot() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(resolution=0.05)
    log: list[tuple[str, float]] = []
    when = loop.time() + 0.05
    for i in range(1000):
        deadlines.add(Item(str(i), log), when)
    await asyncio.sleep(0.2)
    assert len(log) == 1000
