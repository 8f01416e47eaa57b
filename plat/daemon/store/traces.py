"""The trace side of the history: the spans functions record themselves, and the
queries that gather a trace (its calls, spans and log lines) or list traced calls.

The gateway's own spans are not rows here: they are made from the invocation
record of each sampled call (see plat.daemon.tracing.spans).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from plat.daemon.store.database import Database
from plat.daemon.store.history import Invocation, LogLine, invocation_of

Order = Literal["recent", "slowest", "errors"]
ORDERS: tuple[Order, ...] = ("recent", "slowest", "errors")


@dataclass(frozen=True)
class SpanRecord:
    """A span a function's handler recorded, as its shim reported it (times in
    seconds since the epoch)."""

    function: str
    instance: str
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: str
    start: float
    end: float
    error: bool
    status: str
    attributes: dict[str, Any]


class TraceRows(Database):
    """The spans table, and queries over spans, invocations and logs by trace."""

    async def insert_spans(self, rows: Sequence[SpanRecord]) -> None:
        await self.db.executemany(
            "INSERT INTO spans(function, instance, trace_id, span_id, parent_id, name, kind, "
            "start_ts, end_ts, error, status, attributes) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r.function,
                    r.instance,
                    r.trace_id,
                    r.span_id,
                    r.parent_id,
                    r.name,
                    r.kind,
                    r.start,
                    r.end,
                    r.error,
                    r.status,
                    json.dumps(r.attributes, separators=(",", ":")),
                )
                for r in rows
            ],
        )

    async def traced_calls(
        self,
        *,
        since: float,
        functions: Sequence[str] | None,
        order: Order,
        limit: int,
    ) -> list[Invocation]:
        """Sampled calls since ``since`` of ``functions`` (None: all), by ``order``."""
        where = ["trace_id IS NOT NULL", "ts>=?"]
        args: list[Any] = [since]
        if functions is not None:
            where.append(f"function IN ({','.join('?' * len(functions))})")
            args += functions
        if order == "errors":
            where.append("status>=500")
        by = "duration DESC" if order == "slowest" else "id DESC"
        query = f"SELECT * FROM invocations WHERE {' AND '.join(where)} ORDER BY {by} LIMIT ?"
        async with self.db.execute(query, [*args, limit]) as cur:
            rows = await cur.fetchall()
        return [invocation_of(row) for row in rows]

    # The caller chooses its trace ids: one may be reused on any number of calls, and a
    # handler may report any number of spans on it; a trace is read up to ``limit``.

    async def trace_calls(self, trace_id: str, limit: int) -> list[Invocation]:
        """The first ``limit`` calls of the trace."""
        async with self.db.execute(
            "SELECT * FROM invocations WHERE trace_id=? ORDER BY id LIMIT ?", (trace_id, limit)
        ) as cur:
            rows = await cur.fetchall()
        return [invocation_of(row) for row in rows]

    async def trace_spans(self, trace_id: str, limit: int) -> list[SpanRecord]:
        """The first ``limit`` spans handlers recorded in the trace, by start."""
        async with self.db.execute(
            "SELECT * FROM spans WHERE trace_id=? ORDER BY start_ts, id LIMIT ?", (trace_id, limit)
        ) as cur:
            rows = await cur.fetchall()
        return [span_of(row) for row in rows]

    async def trace_logs(self, trace_id: str, limit: int) -> list[LogLine]:
        async with self.db.execute(
            "SELECT * FROM logs WHERE trace_id=? ORDER BY id LIMIT ?", (trace_id, limit)
        ) as cur:
            rows = await cur.fetchall()
        return [LogLine(**dict(row)) for row in rows]

    async def trim_spans(self, function: str, keep: int, older_than: float) -> int:
        """Delete all but the newest ``keep`` spans and spans older than ``older_than``."""
        cur = await self.db.execute(
            """DELETE FROM spans WHERE function=? AND (end_ts < ? OR id <= COALESCE(
                 (SELECT id FROM spans WHERE function=? ORDER BY id DESC LIMIT 1 OFFSET ?), 0))""",
            (function, older_than, function, keep),
        )
        await self.db.commit()
        return cur.rowcount


def span_of(row: Any) -> SpanRecord:
    data = dict(row)
    try:
        attributes = json.loads(data["attributes"])
    except ValueError:
        attributes = {}
    return SpanRecord(
        function=data["function"],
        instance=data["instance"],
        trace_id=data["trace_id"],
        span_id=data["span_id"],
        parent_id=data["parent_id"],
        name=data["name"],
        kind=data["kind"],
        start=data["start_ts"],
        end=data["end_ts"],
        error=bool(data["error"]),
        status=data["status"],
        attributes=attributes if isinstance(attributes, dict) else {},
    )
