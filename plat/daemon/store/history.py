"""What happened: the lines instances wrote and the access record of each call.

Written in batches by :mod:`plat.daemon.journal`, which commits each batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from plat.daemon.store.database import Database


@dataclass(frozen=True)
class LogLine:
    """One line an instance wrote. ``id`` orders lines across the whole store."""

    id: int
    ts: float
    function: str
    version: str
    instance: str
    stream: str  # stdout | stderr | plat
    call_id: str | None
    line: str
    trace_id: str | None = None  # the call's trace, when its instance was told one

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Invocation:
    """The access record of one call through the gateway."""

    ts: float
    function: str
    version: str
    status: int
    duration: float
    bytes_in: int
    bytes_out: int
    cold: bool
    call_id: str
    # A sampled call's trace (plat.daemon.tracing): its ids (hex), the instance, and
    # the parts timed: acquire_at (s from the start), wait (for an instance),
    # upstream (the exchange; None without one), pooled (a warm-pool instance).
    method: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    parent_id: str | None = None
    upstream_id: str | None = None
    instance: str | None = None
    acquire_at: float | None = None
    wait: float | None = None
    upstream: float | None = None
    pooled: bool = False


def invocation_of(row: Any) -> Invocation:
    data = dict(row)
    data.pop("id")
    data["cold"] = bool(data["cold"])
    data["pooled"] = bool(data["pooled"])
    return Invocation(**data)


class History(Database):
    """The logs and invocations tables."""

    async def insert_logs(self, rows: Sequence[LogLine]) -> None:
        await self.db.executemany(
            "INSERT INTO logs(id, ts, function, version, instance, stream, call_id, line, "
            "trace_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            # Plain tuples: dataclasses.astuple deep-copies every field (hot path).
            [
                (
                    r.id,
                    r.ts,
                    r.function,
                    r.version,
                    r.instance,
                    r.stream,
                    r.call_id,
                    r.line,
                    r.trace_id,
                )
                for r in rows
            ],
        )

    async def insert_invocations(self, rows: Sequence[Invocation]) -> None:
        await self.db.executemany(
            "INSERT INTO invocations(ts, function, version, status, duration, bytes_in, "
            "bytes_out, cold, call_id, method, trace_id, span_id, parent_id, upstream_id, "
            "instance, acquire_at, wait, upstream, pooled) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r.ts,
                    r.function,
                    r.version,
                    r.status,
                    r.duration,
                    r.bytes_in,
                    r.bytes_out,
                    r.cold,
                    r.call_id,
                    r.method,
                    r.trace_id,
                    r.span_id,
                    r.parent_id,
                    r.upstream_id,
                    r.instance,
                    r.acquire_at,
                    r.wait,
                    r.upstream,
                    r.pooled,
                )
                for r in rows
            ],
        )

    async def max_log_id(self) -> int:
        async with self.db.execute("SELECT COALESCE(MAX(id), 0) FROM logs") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def last_log_ts(self, instance: str) -> float | None:
        async with self.db.execute("SELECT MAX(ts) FROM logs WHERE instance=?", (instance,)) as cur:
            row = await cur.fetchone()
        return float(row[0]) if row and row[0] is not None else None

    async def query_logs(
        self,
        function: str,
        *,
        since: float | None = None,
        tail: int | None = None,
        instance: str | None = None,
        after_id: int = 0,
    ) -> list[LogLine]:
        """Lines of ``function`` in order; ``tail`` keeps the last N of what matches."""
        where = ["function=?", "id>?"]
        args: list[Any] = [function, after_id]
        if since is not None:
            where.append("ts>=?")
            args.append(since)
        if instance is not None:
            where.append("instance LIKE ?")
            args.append(instance + "%")
        query = f"SELECT * FROM logs WHERE {' AND '.join(where)} ORDER BY id"
        if tail is not None:
            query = f"SELECT * FROM ({query} DESC LIMIT ?) ORDER BY id"
            args.append(tail)
        async with self.db.execute(query, args) as cur:
            rows = await cur.fetchall()
        return [LogLine(**dict(row)) for row in rows]

    async def trim_logs(self, function: str, keep: int, older_than: float) -> int:
        """Delete all but the newest ``keep`` lines and lines older than ``older_than``."""
        cur = await self.db.execute(
            """DELETE FROM logs WHERE function=? AND (ts < ? OR id <= COALESCE(
                 (SELECT id FROM logs WHERE function=? ORDER BY id DESC LIMIT 1 OFFSET ?), 0))""",
            (function, older_than, function, keep),
        )
        await self.db.commit()
        return cur.rowcount

    async def trim_invocations(self, function: str, keep: int, older_than: float) -> int:
        cur = await self.db.execute(
            """DELETE FROM invocations WHERE function=? AND (ts < ? OR id <= COALESCE(
                 (SELECT id FROM invocations WHERE function=? ORDER BY id DESC LIMIT 1 OFFSET ?),
                 0))""",
            (function, older_than, function, keep),
        )
        await self.db.commit()
        return cur.rowcount

    async def logged_functions(self) -> list[str]:
        async with self.db.execute(
            "SELECT DISTINCT function FROM logs UNION SELECT DISTINCT function FROM invocations "
            "UNION SELECT DISTINCT function FROM spans"
        ) as cur:
            rows = await cur.fetchall()
        return [str(row[0]) for row in rows]

    async def query_invocations(
        self, since: float, function: str | None = None
    ) -> list[Invocation]:
        query = "SELECT * FROM invocations WHERE ts>=?"
        args: list[Any] = [since]
        if function is not None:
            query += " AND function=?"
            args.append(function)
        async with self.db.execute(query + " ORDER BY id", args) as cur:
            rows = await cur.fetchall()
        return [invocation_of(row) for row in rows]
