"""Schedules turned into queued calls, with the clock given: one call per tick, one
(not a burst) after downtime over many ticks, nothing for a line seen for the
first time, the memory kept in the store across a restart."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from plat.daemon.asyncq.cron import Cron
from plat.daemon.asyncq.ledger import Ledger
from plat.daemon.asyncq.queue import AsyncQueue
from plat.daemon.serving.function_state import FunctionState
from plat.daemon.store import Store
from tests.daemon.asyncq.inproc import (
    ScriptedInvoker,
    as_invoker,
    functions,
    manifest,
    store_fixture,
)

__all__ = ["store_fixture"]

# 2026-01-05 10:00:00 UTC, a Monday
T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC).timestamp()


@pytest.fixture
async def ledger(store: Store) -> AsyncIterator[Ledger]:
    led = Ledger(store)
    led.start()
    yield led
    await led.close()


def make_cron(store: Store, ledger: Ledger, fns: dict[str, FunctionState]) -> Cron:
    # The queue is never started: calls are accepted (stored), not run.
    queue = AsyncQueue(store, ledger, as_invoker(ScriptedInvoker()), fns, auth_header="x")
    return Cron(store, ledger, queue, fns)


async def ticks(store: Store) -> list[tuple[str, str, str]]:
    """(function, schedule, tick) of every cron call, oldest first."""
    calls = await store.list_calls(None, None, 1000)
    out = []
    for call in sorted(calls, key=lambda c: c.created_at):
        assert call.trigger == "cron" and call.method == "POST" and call.target == "/"
        body = json.loads(call.body)
        out.append((call.function, body["schedule"], body["tick"]))
    return out


async def settled(ledger: Ledger) -> None:
    """Until every write made so far is committed (the ledger keeps their order)."""
    await ledger.durable([])


def stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


async def test_a_line_fires_once_per_tick_from_its_next_tick_on(
    store: Store, ledger: Ledger
) -> None:
    cron = make_cron(store, ledger, functions(manifest(schedule=["*/5 * * * *"])))
    await cron.tick(T0 + 1)  # first seen just after a tick: that one is not made up
    await cron.tick(T0 + 200)
    assert await ticks(store) == []
    await cron.tick(T0 + 300)
    await cron.tick(T0 + 301)
    await cron.tick(T0 + 599)
    assert await ticks(store) == [("fn", "*/5 * * * *", stamp(T0 + 300))]
    await cron.tick(T0 + 600.5)
    assert [t[2] for t in await ticks(store)] == [stamp(T0 + 300), stamp(T0 + 600)]


async def test_downtime_over_many_ticks_makes_one_call_for_the_last(
    store: Store, ledger: Ledger
) -> None:
    fns = functions(manifest(schedule=["* * * * *"]))
    cron = make_cron(store, ledger, fns)
    await cron.tick(T0 + 5)
    await ledger.close()  # the daemon stops: its writes are committed
    ledger.start()
    # A new daemon two hours later reads the last tick from the store.
    later = make_cron(store, ledger, fns)
    later._ticks = await store.cron_ticks()
    await later.tick(T0 + 7200 + 30)
    await later.tick(T0 + 7200 + 45)
    assert await ticks(store) == [("fn", "* * * * *", stamp(T0 + 7200))]
    await later.tick(T0 + 7260)
    assert len(await ticks(store)) == 2


async def test_each_line_and_function_keeps_its_own_ticks(store: Store, ledger: Ledger) -> None:
    fns = functions(
        manifest("a", schedule=["0 * * * *", "30 10 * * *"]),
        manifest("b", schedule=["0 * * * *"]),
        manifest("quiet"),
    )
    cron = make_cron(store, ledger, fns)
    await cron.tick(T0 - 1)
    await cron.tick(T0 + 1800)
    assert sorted(await ticks(store)) == [
        ("a", "0 * * * *", stamp(T0)),
        ("a", "30 10 * * *", stamp(T0 + 1800)),
        ("b", "0 * * * *", stamp(T0)),
    ]
    assert "quiet" not in cron.next_runs()


async def test_a_tick_refused_by_a_full_queue_is_not_made_up_later(
    store: Store, ledger: Ledger
) -> None:
    fns = functions(manifest(schedule=["* * * * *"], async_={"queue_limit": 1}))
    cron = make_cron(store, ledger, fns)
    await cron.tick(T0)
    await cron.tick(T0 + 60)
    await cron.tick(T0 + 120)  # the first call never ran: the queue is full
    await cron.tick(T0 + 180)
    await settled(ledger)
    assert [t[2] for t in await ticks(store)] == [stamp(T0 + 60)]
    assert cron.queue.depth("fn") == 1
    assert (await store.cron_ticks())[("fn", "* * * * *")] == T0 + 180


async def test_a_removed_function_starts_afresh_when_deployed_again(
    store: Store, ledger: Ledger
) -> None:
    fns = functions(manifest(schedule=["* * * * *"]))
    cron = make_cron(store, ledger, fns)
    await cron.tick(T0 + 1)
    removed = fns.pop("fn")
    await cron.tick(T0 + 61)
    fns["fn"] = removed  # deployed again a day later: no call for the day it was away
    await cron.tick(T0 + 86400 + 1)
    assert await ticks(store) == []
    await cron.tick(T0 + 86400 + 60)
    assert [t[2] for t in await ticks(store)] == [stamp(T0 + 86400 + 60)]


async def test_next_runs_names_each_scheduled_functions_next_tick(
    store: Store, ledger: Ledger
) -> None:
    fns = functions(
        manifest("hourly", schedule=["@hourly"]), manifest("often", schedule=["*/2 * * * *"])
    )
    cron = make_cron(store, ledger, fns)
    runs = cron.next_runs()
    assert set(runs) == {"hourly", "often"}
    assert runs["hourly"] % 3600 == 0 and runs["often"] % 120 == 0
    assert runs["often"] <= runs["hourly"]
