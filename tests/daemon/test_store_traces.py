"""plat.daemon.store.traces: the spans handlers record, and the queries that gather a
trace (its calls, spans and log lines) or list traced calls; the migration that
added the trace columns to a database that had records already."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from plat.daemon.store import MIGRATIONS, Invocation, LogLine, SpanRecord, Store

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
OTHER = "0af7651916cd43dd8448eb211c80319c"
NOW = time.time()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(tmp_path / "plat.db")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def call(
    n: int,
    *,
    function: str = "hello",
    trace_id: str | None = TRACE,
    status: int = 200,
    duration: float = 0.01,
    age: float = 1.0,
) -> Invocation:
    """The ``n``-th call, sampled when ``trace_id`` is given."""
    base = Invocation(NOW - age, function, "v1", status, duration, 0, 0, False, f"call-{n}")
    if trace_id is None:
        return base
    return replace(
        base,
        method="GET",
        trace_id=trace_id,
        span_id=f"{n + 1:016x}",
        parent_id="00f067aa0ba902b7",
        upstream_id=f"{n + 1000:016x}",
        instance="hello-1",
        acquire_at=0.001,
        wait=0.0,
        upstream=duration / 2,
        pooled=n % 2 == 1,
    )


def span(n: int, *, function: str = "hello", trace_id: str = TRACE, **changes: Any) -> SpanRecord:
    base = SpanRecord(
        function=function,
        instance="hello-1",
        trace_id=trace_id,
        span_id=f"{n + 5000:016x}",
        parent_id=f"{1000:016x}",
        name=f"work {n}",
        kind="internal",
        start=NOW + n,
        end=NOW + n + 0.5,
        error=False,
        status="",
        attributes={"n": n},
    )
    return replace(base, **changes)


def line(n: int, trace_id: str | None = TRACE, function: str = "hello") -> LogLine:
    return LogLine(n, NOW, function, "v1", "hello-1", "stdout", f"call-{n}", f"line {n}", trace_id)


async def calls(store: Store, *rows: Invocation) -> None:
    await store.insert_invocations(rows)
    await store.commit()


async def spans(store: Store, *rows: SpanRecord) -> None:
    await store.insert_spans(rows)
    await store.commit()


# migration


# The migration that added tracing (its user_version); others came before and after.
TRACING = next(n for n, script in enumerate(MIGRATIONS, 1) if "CREATE TABLE spans" in script)


def test_one_migration_adds_the_trace_columns() -> None:
    assert TRACING > 1
    assert "ALTER TABLE invocations ADD COLUMN trace_id" in MIGRATIONS[TRACING - 1]


async def test_records_of_an_older_database_are_kept_untraced(tmp_path: Path) -> None:
    path = tmp_path / "plat.db"
    with sqlite3.connect(path) as conn:
        for number, script in enumerate(MIGRATIONS[: TRACING - 1], start=1):
            conn.executescript(f"{script}\nPRAGMA user_version={number};")
        conn.execute(
            "INSERT INTO invocations(ts, function, version, status, duration, bytes_in, "
            "bytes_out, cold, call_id) VALUES (?, 'hello', 'v1', 200, 0.5, 1, 2, 1, 'old')",
            (NOW,),
        )
        conn.execute(
            "INSERT INTO logs(id, ts, function, version, instance, stream, call_id, line) "
            "VALUES (1, ?, 'hello', 'v1', 'i', 'stdout', 'old', 'before tracing')",
            (NOW,),
        )
    store = Store(path)
    await store.open()
    try:
        assert await store.schema_version() == len(MIGRATIONS)
        (old,) = await store.query_invocations(0)
        assert old == Invocation(NOW, "hello", "v1", 200, 0.5, 1, 2, True, "old")
        assert (old.trace_id, old.pooled, old.acquire_at) == (None, False, None)
        (logged,) = await store.query_logs("hello")
        assert logged.trace_id is None and logged.line == "before tracing"
        assert await store.traced_calls(since=0, functions=None, order="recent", limit=10) == []
        # New records go in beside the old ones.
        await calls(store, call(1))
        assert [c.call_id for c in await store.trace_calls(TRACE, 10)] == ["call-1"]
    finally:
        await store.close()


async def test_spans_and_lines_are_indexed_by_trace_but_calls_are_not(store: Store) -> None:
    """Every call is a row of invocations: an index on its random trace id doubled the
    cost of writing one (measured), so looking a trace's calls up is a scan."""
    with sqlite3.connect(store.path) as conn:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM invocations WHERE trace_id=? ORDER BY id", (TRACE,)
        ).fetchall()
        spans_plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM spans WHERE trace_id=? ORDER BY start_ts", (TRACE,)
        ).fetchall()
        logs_plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM logs WHERE trace_id=? ORDER BY id", (TRACE,)
        ).fetchall()
    assert "SCAN invocations" in str(plan) and "INDEX" not in str(plan)
    assert "spans_by_trace" in str(spans_plan)
    assert "logs_by_trace" in str(logs_plan)


# invocations with a trace


async def test_a_traced_call_round_trips(store: Store) -> None:
    sampled = call(1)
    await calls(store, sampled, call(2, trace_id=None))
    assert await store.trace_calls(TRACE, 10) == [sampled]
    assert sampled.pooled is True  # a bool again, not SQLite's 1
    both = await store.query_invocations(0)
    assert [c.trace_id for c in both] == [TRACE, None]
    assert both[1].pooled is False and both[1].method is None


async def test_trace_calls_are_in_order_and_bounded(store: Store) -> None:
    await calls(store, *(call(n) for n in range(30)), call(99, trace_id=OTHER))
    got = await store.trace_calls(TRACE, 1000)
    assert [c.call_id for c in got] == [f"call-{n}" for n in range(30)]
    assert [c.call_id for c in await store.trace_calls(TRACE, 5)] == [f"call-{n}" for n in range(5)]
    assert [c.call_id for c in await store.trace_calls(OTHER, 5)] == ["call-99"]
    assert await store.trace_calls("f" * 32, 5) == []
    assert await store.trace_calls("' OR 1=1 --", 5) == []
    assert await store.trace_calls("%", 5) == []


# the list of traced calls


async def test_recent_lists_sampled_calls_newest_first(store: Store) -> None:
    await calls(
        store,
        call(1, trace_id=TRACE),
        call(2, trace_id=None),
        call(3, trace_id=OTHER),
        call(4, trace_id=None),
    )
    got = await store.traced_calls(since=0, functions=None, order="recent", limit=20)
    assert [c.call_id for c in got] == ["call-3", "call-1"]


async def test_since_and_limit(store: Store) -> None:
    await calls(store, call(1, age=7200), call(2, age=60), call(3, age=1))
    recent = await store.traced_calls(since=NOW - 3600, functions=None, order="recent", limit=20)
    assert [c.call_id for c in recent] == ["call-3", "call-2"]
    one = await store.traced_calls(since=0, functions=None, order="recent", limit=1)
    assert [c.call_id for c in one] == ["call-3"]
    none = await store.traced_calls(since=NOW + 10, functions=None, order="recent", limit=20)
    assert none == []


async def test_slowest_orders_by_duration(store: Store) -> None:
    await calls(
        store,
        call(1, duration=0.2),
        call(2, duration=1.5),
        call(3, duration=0.01),
        call(4, duration=0.9, trace_id=None),  # not sampled: never listed
    )
    got = await store.traced_calls(since=0, functions=None, order="slowest", limit=20)
    assert [c.call_id for c in got] == ["call-2", "call-1", "call-3"]
    top = await store.traced_calls(since=0, functions=None, order="slowest", limit=1)
    assert [c.call_id for c in top] == ["call-2"]


async def test_errors_are_5xx_only(store: Store) -> None:
    await calls(
        store,
        call(1, status=500),
        call(2, status=499),
        call(3, status=404),
        call(4, status=503),
        call(5, status=200),
        call(6, status=599, trace_id=None),
    )
    got = await store.traced_calls(since=0, functions=None, order="errors", limit=20)
    assert [(c.call_id, c.status) for c in got] == [("call-4", 503), ("call-1", 500)]


async def test_functions_narrow_the_list(store: Store) -> None:
    await calls(
        store,
        call(1, function="hello"),
        call(2, function="hello.acme"),
        call(3, function="other.acme"),
        call(4, function="hello.beta"),
    )

    async def listed(functions: list[str] | None) -> list[str]:
        rows = await store.traced_calls(since=0, functions=functions, order="recent", limit=20)
        return [c.call_id for c in rows]

    assert await listed(None) == ["call-4", "call-3", "call-2", "call-1"]
    assert await listed(["hello.acme", "other.acme"]) == ["call-3", "call-2"]
    assert await listed(["hello"]) == ["call-1"]
    assert await listed([]) == []  # a tenant with no function sees nothing
    assert await listed(["' OR 1=1 --", "hello%"]) == []
    # A tenant of thousands of functions: one bound parameter each.
    assert await listed([f"fn{i}.acme" for i in range(5000)] + ["hello.beta"]) == ["call-4"]


# spans handlers recorded


async def test_spans_round_trip_ordered_by_start(store: Store) -> None:
    late, early = span(2), span(1, parent_id=None, error=True, status="boom", kind="client")
    await spans(store, late, early, span(3, trace_id=OTHER))
    assert await store.trace_spans(TRACE, 100) == [early, late]
    assert await store.trace_spans(OTHER, 100) == [span(3, trace_id=OTHER)]
    assert await store.trace_spans("f" * 32, 100) == []


async def test_span_attributes_survive_as_json(store: Store) -> None:
    attributes: dict[str, Any] = {
        "str": "naïve ✓ \x00 \n",
        "int": -(2**63),
        "big": 2**63 - 1,
        "float": 0.1,
        "bool": True,
        "list": ["a", "b"],
        "empty": [],
        "ключ": "значение",
    }
    await spans(store, span(1, attributes=attributes, name="n\x00ame ✓"))
    (got,) = await store.trace_spans(TRACE, 10)
    assert got.attributes == attributes
    assert got.name == "n\x00ame ✓"
    assert got.error is False and isinstance(got.error, bool)


async def test_damaged_attributes_read_as_none(store: Store) -> None:
    await spans(store, span(1), span(2), span(3))
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE spans SET attributes='{not json' WHERE name='work 1'")
        conn.execute("UPDATE spans SET attributes='[1, 2]' WHERE name='work 2'")
        conn.execute("UPDATE spans SET attributes='\"text\"' WHERE name='work 3'")
    assert [s.attributes for s in await store.trace_spans(TRACE, 10)] == [{}, {}, {}]


async def test_trace_spans_are_bounded(store: Store) -> None:
    await spans(store, *(span(n) for n in range(50)))
    got = await store.trace_spans(TRACE, 10)
    assert [s.name for s in got] == [f"work {n}" for n in range(10)]  # the first by start


async def test_a_function_with_spans_only_is_a_logged_function(store: Store) -> None:
    await spans(store, span(1, function="quiet.acme"))
    assert "quiet.acme" in await store.logged_functions()


async def test_trim_keeps_the_newest_spans_of_each_function(store: Store) -> None:
    await spans(
        store, *(span(n) for n in range(10)), *(span(n, function="other") for n in range(3))
    )
    assert await store.trim_spans("hello", keep=4, older_than=0) == 6
    assert [s.name for s in await store.trace_spans(TRACE, 100) if s.function == "hello"] == [
        f"work {n}" for n in range(6, 10)
    ]
    assert len([s for s in await store.trace_spans(TRACE, 100) if s.function == "other"]) == 3
    # Old spans go whatever the count (by their end).
    assert await store.trim_spans("hello", keep=100, older_than=NOW + 8) == 2
    assert [s.name for s in await store.trace_spans(TRACE, 100) if s.function == "hello"] == [
        "work 8",
        "work 9",
    ]
    assert await store.trim_spans("hello", keep=0, older_than=0) == 2
    assert await store.trim_spans("nobody", keep=0, older_than=NOW * 2) == 0
    assert len(await store.trace_spans(TRACE, 100)) == 3


# log lines by trace


async def test_trace_logs_in_order_and_bounded(store: Store) -> None:
    await store.insert_logs(
        [line(1), line(2, None), line(3, OTHER), line(4), line(5, function="hello.acme")]
    )
    await store.commit()
    got = await store.trace_logs(TRACE, 100)
    assert [(g.id, g.function, g.trace_id) for g in got] == [
        (1, "hello", TRACE),
        (4, "hello", TRACE),
        (5, "hello.acme", TRACE),
    ]
    assert [g.id for g in await store.trace_logs(TRACE, 2)] == [1, 4]
    assert [g.id for g in await store.trace_logs(OTHER, 2)] == [3]
    # The trace id goes with the line to the logs API too.
    (first, *_) = await store.query_logs("hello")
    assert first.to_json()["trace_id"] == TRACE
