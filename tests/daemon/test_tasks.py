"""plat.daemon.tasks: work that runs to its end although its caller is cancelled."""

from __future__ import annotations

import asyncio

from plat.daemon.tasks import Finishing


async def test_finishing_work_outlives_a_cancelled_caller_and_wait_awaits_it() -> None:
    finishing = Finishing()
    done: list[str] = []

    async def work() -> str:
        await asyncio.sleep(0.05)
        done.append("removed")
        return "ok"

    caller = asyncio.ensure_future(finishing.run(work()))
    await asyncio.sleep(0.01)
    caller.cancel()
    await asyncio.gather(caller, return_exceptions=True)
    assert caller.cancelled() and done == []
    await finishing.wait()
    assert done == ["removed"]


async def test_finishing_returns_the_result() -> None:
    async def work() -> int:
        return 7

    assert await Finishing().run(work()) == 7
