"""The journal: batched writes, bounded buffers, follow without gaps or repeats, retention."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from plat.daemon.journal import Journal, Retention
from plat.daemon.store import Invocation, Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(tmp_path / "plat.db")
    await s.open()
    yield s
    await s.close()


async def test_lines_are_written_in_batches_and_ids_continue_after_restart(store: Store) -> None:
    journal = Journal(store, flush_interval=3600)
    await journal.start()
    for i in range(5):
        journal.log("fn", "v1", "i1", "stdout", f"line {i}")
    assert await store.query_logs("fn") == []  # nothing written until a flush
    await journal.close()  # close flushes
    lines = await store.query_logs("fn")
    assert [line.line for line in lines] == [f"line {i}" for i in range(5)]
    again = Journal(store, flush_interval=3600)
    await again.start()
    line = again.log("fn", "v1", "i1", "stdout", "after restart")
    assert line.id == lines[-1].id + 1
    await again.close()


async def test_a_storm_drops_its_own_oldest_lines_and_says_so(store: Store) -> None:
    journal = Journal(store, flush_interval=3600, max_pending=10)
    await journal.start()
    for i in range(25):
        journal.log("storm", "v1", "i1", "stdout", f"s{i}")
    journal.log("calm", "v1", "i2", "stdout", "hello")
    await journal.close()
    storm = await store.query_logs("storm")
    assert [line.line for line in storm if line.stream == "stdout"] == [
        f"s{i}" for i in range(15, 25)
    ]
    (marker,) = [line for line in storm if line.stream == "plat"]
    assert "15 lines" in marker.line
    assert [line.line for line in await store.query_logs("calm")] == ["hello"]


async def test_subscribers_get_live_lines_of_their_function_only(store: Store) -> None:
    journal = Journal(store, flush_interval=0.01)
    await journal.start()
    sub = journal.subscribe("a")
    journal.log("b", "v", "i", "stdout", "not mine")
    journal.log("a", "v", "i", "stderr", "mine")
    line = await asyncio.wait_for(sub.queue.get(), 1)
    assert (line.function, line.line, line.stream) == ("a", "mine", "stderr")
    assert sub.queue.empty()
    sub.close()
    journal.log("a", "v", "i", "stdout", "after close")
    assert sub.queue.empty()
    await journal.close()


async def test_query_filters_tail_since_instance(store: Store) -> None:
    journal = Journal(store, flush_interval=3600)
    await journal.start()
    old = time.time() - 3600
    journal.log("fn", "v", "aaaa1111", "stdout", "old", ts=old)
    for i in range(4):
        journal.log("fn", "v", "bbbb2222", "stdout", f"new {i}")
    await journal.flush()
    assert [x.line for x in await store.query_logs("fn", tail=2)] == ["new 2", "new 3"]
    assert len(await store.query_logs("fn", since=time.time() - 60)) == 4
    assert [x.line for x in await store.query_logs("fn", instance="aaaa")] == ["old"]
    await journal.close()


async def test_retention_by_count_and_age(store: Store) -> None:
    journal = Journal(
        store,
        Retention(log_lines=3, log_age=600, invocations=2, invocation_age=600),
        flush_interval=3600,
    )
    await journal.start()
    journal.log("fn", "v", "i", "stdout", "ancient", ts=time.time() - 7200)
    for i in range(6):
        journal.log("fn", "v", "i", "stdout", f"l{i}")
    for i in range(5):
        journal.invocation(Invocation(time.time(), "fn", "v", 200, 0.01, 1, 2, False, f"c{i}"))
    await journal.flush()
    await journal.trim()
    assert [x.line for x in await store.query_logs("fn")] == ["l3", "l4", "l5"]
    calls = await store.query_invocations(0, "fn")
    assert [c.call_id for c in calls] == ["c3", "c4"]
    await journal.close()
