"""ProcessBackend.events: the exits of the processes it started."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from plat.daemon.drivers.process.backend import ProcessBackend
from tests.daemon.drivers.process.test_backend import PY_HANDLER, artifact, spec


async def test_a_killed_process_is_told_with_its_signal_and_close_ends_the_events(
    tmp_path: Path,
) -> None:
    backend = ProcessBackend("test-daemon")
    image = await artifact(tmp_path, "python", {"handler.py": PY_HANDLER})
    try:
        killed = await backend.start(spec(image, "handler.handle"), "killed")
        kept = await backend.start(spec(image, "handler.handle"), "kept")
        events = backend.events()
        first = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0.1)  # subscribed
        before = time.time()
        os.kill(int(killed.backend_ref), signal.SIGKILL)
        ended = await asyncio.wait_for(first, 5)
        assert (ended.instance_id, ended.backend_ref) == ("killed", killed.backend_ref)
        assert ended.exit_code == 137
        assert before <= ended.ts <= time.time()
        assert not await backend.is_alive(killed) and await backend.is_alive(kept)
    finally:
        await backend.close()
    # close() stopped "kept": its exit comes, then the iteration ends.
    told = [e async for e in events]
    assert [e.instance_id for e in told] == ["kept"]
    assert [e async for e in backend.events()] == []  # closed: nothing more to tell


async def test_a_reader_that_subscribes_later_gets_exits_since(tmp_path: Path) -> None:
    backend = ProcessBackend("test-daemon")
    image = await artifact(tmp_path, "python", {"handler.py": PY_HANDLER})
    try:
        early = await backend.start(spec(image, "handler.handle"), "early")
        since = time.time()
        await backend.stop(early)
        await backend.remove(early)  # told before it is forgotten
        late = backend.events(since=since)
        ended = await asyncio.wait_for(anext(late), 5)
        assert ended.instance_id == "early" and ended.exit_code is not None
        await late.aclose()
        past = backend.events(since=time.time())
        waiting = asyncio.ensure_future(anext(past))
        await asyncio.sleep(0.2)
        assert not waiting.done()  # nothing since then
        waiting.cancel()
    finally:
        await backend.close()
