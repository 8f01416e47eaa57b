"""The ledger against the real store: accepts share commits, a durable write is
committed when it returns, and one bad write never takes its batch along."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from plat.daemon.asyncq.ledger import Ledger, Write, rounds
from plat.daemon.store import Store
from plat.daemon.store.calls import (
    Attempt,
    QueuedCall,
    attempt_saved,
    call_inserted,
    call_requeued,
    call_saved,
    tick_saved,
)
from tests.daemon.asyncq.inproc import call


class CountingStore(Store):
    commits = 0

    async def commit(self) -> None:
        self.commits += 1
        await super().commit()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CountingStore]:
    s = CountingStore(tmp_path / "plat.db")
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def ledger(store: CountingStore) -> AsyncIterator[Ledger]:
    led = Ledger(store)
    led.start()
    yield led
    await led.close()


def insert(one: QueuedCall) -> Write:
    async def op(store: Store) -> None:
        await store.insert_calls([one])

    return op


def committed(path: Path) -> set[str]:
    """Ids another connection sees: what was committed, not what is pending."""
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT id FROM calls")}


async def test_a_durable_write_is_committed_when_it_returns(
    store: CountingStore, ledger: Ledger
) -> None:
    one = call()
    await ledger.durable(lambda s: s.insert_calls([one]))
    assert committed(store.path) == {one.id}


async def test_concurrent_accepts_share_commits(store: CountingStore, ledger: Ledger) -> None:
    calls = [call() for _ in range(300)]
    before = store.commits
    await asyncio.gather(*(ledger.durable(insert(c)) for c in calls))
    assert committed(store.path) == {c.id for c in calls}
    assert store.commits - before <= 5, f"{store.commits - before} commits for 300 accepts"


async def test_a_duplicate_id_fails_alone_and_its_batch_lands(
    store: CountingStore, ledger: Ledger
) -> None:
    first = call()
    await ledger.durable(lambda s: s.insert_calls([first]))
    twin = call(id=first.id)
    others = [call() for _ in range(20)]
    started = call()
    started.state, started.attempts = "running", 1
    await ledger.durable(lambda s: s.insert_calls([started]))
    started.state = "done"
    ledger.write(lambda s: s.save_call(started))  # rides along, nobody waits for it
    results = await asyncio.gather(
        *(ledger.durable(insert(c)) for c in [*others[:10], twin]),
        *(ledger.durable(insert(c)) for c in others[10:]),
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 1 and isinstance(failures[0], sqlite3.IntegrityError)
    assert results[10] is failures[0]
    assert committed(store.path) == {first.id, started.id} | {c.id for c in others}
    saved = await store.get_call(started.id)
    assert saved is not None and saved.state == "done"


async def test_a_store_error_fails_the_whole_batch_and_leaves_nothing_half_written(
    store: CountingStore, ledger: Ledger
) -> None:
    good = call()

    async def broken(s: Store) -> None:
        await s.insert_calls([call(id="half-written")])
        raise sqlite3.OperationalError("disk I/O error")

    results = await asyncio.gather(
        ledger.durable(lambda s: s.insert_calls([good])),
        ledger.durable(broken),
        return_exceptions=True,
    )
    assert all(isinstance(r, sqlite3.OperationalError) for r in results), results
    assert committed(store.path) == set()
    # The next batch is written as if nothing happened.
    again = call()
    await ledger.durable(lambda s: s.insert_calls([again]))
    assert committed(store.path) == {again.id}


async def test_closing_writes_what_is_pending(store: CountingStore) -> None:
    led = Ledger(store)
    led.start()
    one = call()
    await led.durable(lambda s: s.insert_calls([one]))
    one.state = "done"
    led.write(lambda s: s.save_call(one))
    await led.close()
    with sqlite3.connect(store.path) as db:
        assert db.execute("SELECT state FROM calls").fetchone()[0] == "done"


def test_rounds_keep_each_keys_order_and_group_the_rest() -> None:
    a1, a2 = call(), call()
    statements = [
        call_inserted(a1),
        call_saved(a1),
        call_inserted(a2),
        tick_saved("fn", "* * * * *", 60.0),
        call_saved(a2),
        call_saved(a1),
        tick_saved("fn", "* * * * *", 120.0),
    ]
    got = rounds(statements)
    assert [{sql: len(rows) for sql, rows in r.items()} for r in got] == [
        {statements[0].sql: 2, statements[3].sql: 1},
        {statements[1].sql: 2, statements[3].sql: 1},
        {statements[1].sql: 1},
    ]
    assert got[1][statements[3].sql] == [("fn", "* * * * *", 120.0)]


async def test_a_batch_of_statements_lands_as_if_written_one_by_one(
    store: CountingStore, ledger: Ledger
) -> None:
    calls = [call() for _ in range(50)]
    for one in calls:  # one batch: inserted, then each state in turn
        ledger.write(call_inserted(one))
    for state in ("running", "queued", "running", "done"):
        for one in calls:
            one.state = state
            one.attempts += state == "running"
            ledger.write(call_saved(one))
            if state == "running":
                ledger.write(attempt_saved(Attempt(one.id, one.attempts, 1.0, None, None, None)))
    for one in calls[:10]:
        ledger.write(call_requeued(one.id, 5.0))
    await ledger.durable(tick_saved("fn", "@hourly", 3600.0))
    for one in calls[10:]:
        saved = await store.get_call(one.id)
        assert saved is not None and (saved.state, saved.attempts) == ("done", 2)
    for one in calls[:10]:
        saved = await store.get_call(one.id)
        assert saved is not None and (saved.state, saved.next_at) == ("queued", 5.0)
        tries = await store.attempts_of(one.id)
        assert [t.error for t in tries] == ["interrupted: the daemon stopped"] * 2
    assert await store.cron_ticks() == {("fn", "@hourly"): 3600.0}
