"""The ledger against the real store: accepts share commits, a durable write is
committed when it returns, and one bad write never takes its batch along."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from plat.daemon.asyncq.ledger import Ledger, rounds
from plat.daemon.store import Store
from plat.daemon.store.calls import (
    Attempt,
    Statement,
    attempt_saved,
    call_inserted,
    call_requeued,
    call_saved,
    tick_saved,
)
from tests.daemon.asyncq.inproc import call


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(tmp_path / "plat.db")
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def ledger(store: Store) -> AsyncIterator[Ledger]:
    led = Ledger(store)
    led.start()
    yield led
    await led.close()


def committed(path: Path) -> set[str]:
    """Ids another connection sees: what was committed, not what is pending."""
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT id FROM calls")}


async def test_a_durable_write_is_committed_when_it_returns(store: Store, ledger: Ledger) -> None:
    one = call()
    await ledger.durable(call_inserted(one))
    assert committed(store.path) == {one.id}


async def test_concurrent_accepts_share_commits(store: Store, ledger: Ledger) -> None:
    calls = [call() for _ in range(300)]
    before = ledger.commits
    await asyncio.gather(*(ledger.durable(call_inserted(c)) for c in calls))
    assert committed(store.path) == {c.id for c in calls}
    assert ledger.commits - before <= 5, f"{ledger.commits - before} commits for 300 accepts"


async def test_a_duplicate_id_fails_alone_and_its_batch_lands(store: Store, ledger: Ledger) -> None:
    first = call()
    await ledger.durable(call_inserted(first))
    twin = call(id=first.id)
    others = [call() for _ in range(20)]
    started = call()
    started.state, started.attempts = "running", 1
    await ledger.durable(call_inserted(started))
    started.state = "done"
    ledger.write(call_saved(started))  # rides along, nobody waits for it
    results = await asyncio.gather(
        *(ledger.durable(call_inserted(c)) for c in [*others[:10], twin]),
        *(ledger.durable(call_inserted(c)) for c in others[10:]),
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 1 and isinstance(failures[0], sqlite3.IntegrityError)
    assert results[10] is failures[0]
    assert committed(store.path) == {first.id, started.id} | {c.id for c in others}
    saved = await store.get_call(started.id)
    assert saved is not None and saved.state == "done"


async def test_a_store_error_fails_the_whole_batch_and_leaves_nothing_half_written(
    store: Store, ledger: Ledger
) -> None:
    good = call()
    broken = [
        call_inserted(call(id="half-written")),
        Statement("INSERT INTO no_such_table VALUES (?)", (1,), "broken"),
    ]
    results = await asyncio.gather(
        ledger.durable(call_inserted(good)),
        ledger.durable(broken),
        return_exceptions=True,
    )
    assert all(isinstance(r, sqlite3.OperationalError) for r in results), results
    assert committed(store.path) == set()
    # The next batch is written as if nothing happened.
    again = call()
    await ledger.durable(call_inserted(again))
    assert committed(store.path) == {again.id}


async def test_closing_writes_what_is_pending(store: Store) -> None:
    led = Ledger(store)
    led.start()
    one = call()
    await led.durable(call_inserted(one))
    one.state = "done"
    led.write(call_saved(one))
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
    store: Store, ledger: Ledger
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


async def test_the_ledger_and_the_store_write_on_their_own_connections(
    store: Store, ledger: Ledger
) -> None:
    """A write the store has not committed yet holds the lock: the ledger's batch
    waits for it (in its own thread, the event loop free), then both land; a
    failed batch of the ledger's never rolls back the store's rows."""
    mine = call()
    await store.db.execute(
        "INSERT INTO cron_ticks(function, schedule, last_tick) VALUES ('f', '@daily', 1.0)"
    )
    pending = asyncio.ensure_future(ledger.durable(call_inserted(mine)))
    await asyncio.sleep(0.2)
    assert not pending.done()  # waiting for the store's transaction
    broken = Statement("INSERT INTO no_such_table VALUES (?)", (1,), "broken")
    await store.commit()
    await pending
    with pytest.raises(sqlite3.OperationalError):
        await ledger.durable(broken)
    assert committed(store.path) == {mine.id}
    assert await store.cron_ticks() == {("f", "@daily"): 1.0}
