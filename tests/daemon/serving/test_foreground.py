"""The starts someone waits for, and the background work that lets them pass."""

from __future__ import annotations

import asyncio
import time

from plat.daemon.serving.foreground import Foreground


async def test_background_work_goes_on_at_once_when_nothing_starts() -> None:
    began = time.monotonic()
    await Foreground().quiet(5.0)
    assert time.monotonic() - began < 0.05


async def test_background_work_waits_for_the_last_start_in_flight() -> None:
    fg = Foreground()
    waited = asyncio.create_task(fg.quiet(5.0))
    with fg.start():
        with fg.start():
            await asyncio.sleep(0.05)
            assert not waited.done()
        await asyncio.sleep(0.05)
        assert not waited.done()  # one start still runs
        assert fg.starting == 1
    await asyncio.wait_for(waited, 1.0)
    assert fg.starting == 0


async def test_a_start_that_fails_still_lets_the_work_go_on() -> None:
    fg = Foreground()
    waited = asyncio.create_task(fg.quiet(5.0))
    try:
        with fg.start():
            await asyncio.sleep(0.02)
            raise RuntimeError("the start failed")
    except RuntimeError:
        pass
    await asyncio.wait_for(waited, 1.0)


async def test_background_work_waits_no_longer_than_its_limit() -> None:
    fg = Foreground()
    with fg.start():
        began = time.monotonic()
        await fg.quiet(0.2)
        took = time.monotonic() - began
    assert 0.18 <= took < 1.0


async def test_work_someone_waits_for_goes_on_at_once() -> None:
    fg = Foreground()
    wanted = False
    with fg.start():
        waited = asyncio.create_task(fg.quiet(5.0, lambda: wanted))
        await asyncio.sleep(0.05)
        assert not waited.done()
        wanted = True
        await asyncio.wait_for(waited, 1.0)  # within a poll, the start still in flight


async def test_a_waiter_cancelled_midway_leaves_the_gate_as_it_was() -> None:
    fg = Foreground()
    with fg.start():
        waited = asyncio.create_task(fg.quiet(5.0))
        await asyncio.sleep(0.02)
        waited.cancel()
        await asyncio.gather(waited, return_exceptions=True)
        assert fg.starting == 1
    await asyncio.wait_for(fg.quiet(5.0), 0.5)
