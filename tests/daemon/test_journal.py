"""The journal: batched writes, bounded buffers, follow without gaps or repeats, retention."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest

from plat.daemon.journal import Journal, Retention
from plat.daemon.store import Invocation, LogLine, Store
from tests.mounts import fill, tmpfs


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
    assert line is not None
    assert (line.function, line.line, line.stream) == ("a", "mine", "stderr")
    assert sub.queue.empty()
    sub.close()
    journal.log("a", "v", "i", "stdout", "after close")
    assert sub.queue.empty()
    await journal.close()


async def test_ending_subscriptions_ends_their_followers_even_when_full(store: Store) -> None:
    """A stopping daemon ends live followers, so their streams answer their end
    instead of holding the daemon's close."""
    journal = Journal(store, flush_interval=3600)
    await journal.start()
    idle, full = journal.subscribe("a"), journal.subscribe("b")
    full.queue = asyncio.Queue(2)
    for i in range(5):
        journal.log("b", "v", "i", "stdout", f"b{i}")
    assert full.queue.full()

    async def read(sub: object) -> list[str]:
        return [line.line async for line in sub]  # type: ignore[attr-defined]

    waiting = asyncio.create_task(read(idle))
    await asyncio.sleep(0.01)  # it waits for a line
    journal.end_subscriptions()
    assert await asyncio.wait_for(waiting, 1) == []
    # The full queue's oldest line made room for the end.
    assert await asyncio.wait_for(read(full), 1) == ["b1"]
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


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB filesystem (tmpfs), to fill up."""
    with tmpfs(tmp_path / "small", "size=2m,mode=0700") as mount:
        yield mount


class CountingStore(Store):
    writes = 0

    async def insert_logs(self, rows: Sequence[LogLine]) -> None:
        self.writes += 1
        await super().insert_logs(rows)


async def test_a_full_disk_is_reported_once_buffered_bounded_and_recovered(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="plat.daemon.journal")
    store = CountingStore(small_disk / "plat.db")
    await store.open()
    journal = Journal(store, flush_interval=0.01, max_pending=100)
    await journal.start()
    try:
        filler = small_disk / "filler"
        fill(filler)
        journal.log("fn", "v1", "i1", "stdout", "first " + "x" * 8000)
        deadline = time.monotonic() + 10
        while "plat.daemon.journal" not in {r.name for r in caplog.records}:
            assert time.monotonic() < deadline, "no write failed"
            await asyncio.sleep(0.01)
        for i in range(300):  # the buffer keeps the newest 100
            journal.log("fn", "v1", "i1", "stdout", f"line {i} " + "x" * 500)
        for _ in range(10):
            journal.invocation(Invocation(time.time(), "fn", "v1", 200, 0.01, 1, 2, False, "c"))
        writes = store.writes
        await asyncio.sleep(2.0)
        records = [r for r in caplog.records if r.name == "plat.daemon.journal"]
        assert len(records) == 1, [r.getMessage() for r in records]
        (warning,) = records
        assert warning.levelno == logging.WARNING
        assert warning.exc_info is None
        assert "disk full" in warning.getMessage()
        assert store.writes - writes < 10  # backed off (0.01 s apart, it would be ~200)
        assert await journal.flush() is False  # a caller's flush neither raises nor logs

        filler.unlink()
        deadline = time.monotonic() + 15
        while "works again" not in caplog.text and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert "works again" in caplog.text
        assert "dropped meanwhile: 201 log lines, 0 invocation records" in caplog.text
        assert not any(r.exc_info for r in caplog.records)
        lines = await store.query_logs("fn")
        assert [line.line.split()[1] for line in lines if line.stream == "stdout"] == [
            str(i) for i in range(200, 300)
        ]
        (marker,) = [line for line in lines if line.stream == "plat"]
        assert "201 lines of this function were dropped" in marker.line
        assert len(await store.query_invocations(0, "fn")) == 10
    finally:
        await journal.close()
        await store.close()


async def test_records_the_store_refuses_are_dropped_not_retried_forever(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    journal = Journal(store, flush_interval=3600)
    await journal.start()
    bad = Invocation(time.time(), "fn", "v1", 200, 0.01, 1, 2, False, None)  # type: ignore[arg-type]
    journal.invocation(bad)
    journal.log("fn", "v1", "i1", "stdout", "with it")
    assert await journal.flush() is True
    assert "refused 1 log lines and 1 invocation records" in caplog.text
    journal.log("fn", "v1", "i1", "stdout", "after it")
    assert await journal.flush() is True
    assert [line.line for line in await store.query_logs("fn")] == ["after it"]
    await journal.close()
