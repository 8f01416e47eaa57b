"""Queued calls (async invocations and cron ticks): the calls, their attempts, and
the last tick of each schedule. Writes are grouped and committed by
plat.daemon.asyncq.ledger; nothing here commits, so one commit covers a batch."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from plat.daemon.store.database import Database

CallState = Literal["queued", "running", "done", "failed", "dead"]
CALL_STATES: tuple[CallState, ...] = ("queued", "running", "done", "failed", "dead")
FINISHED: tuple[CallState, ...] = ("done", "failed", "dead")
Trigger = Literal["async", "cron"]
Headers = list[tuple[str, str]]


@dataclass
class QueuedCall:
    """One queued call and what became of it (times in seconds since the epoch)."""

    id: str
    function: str
    trigger: str
    method: str
    target: str  # the path after the function's, with the query
    headers: Headers
    body: bytes
    callback_url: str | None
    created_at: float
    next_at: float
    budget: int = 1  # attempts allowed in all (retries + 1; more after a manual retry)
    state: str = "queued"
    attempts: int = 0
    updated_at: float = 0.0
    finished_at: float | None = None
    status: int | None = None
    duration: float | None = None
    response_headers: Headers = field(default_factory=list)
    response_body: bytes | None = None
    error: str | None = None
    callback_state: str | None = None  # pending | delivered | failed
    callback_attempts: int = 0
    callback_status: int | None = None


@dataclass(frozen=True)
class Attempt:
    call_id: str
    attempt: int
    started_at: float
    duration: float | None
    status: int | None
    error: str | None


_COLUMNS = (
    "id, function, state, trigger, method, target, headers, body, callback_url, attempts, budget, "
    "next_at, created_at, updated_at, finished_at, status, duration, response_headers, "
    "response_body, error, callback_state, callback_attempts, callback_status"
)


def _pairs(headers: Headers) -> str:
    """Headers as the JSON list of pairs kept in a column (most answers' lists are
    short, and a call not yet answered has none: no encoder for that)."""
    return json.dumps(headers) if headers else "[]"


def _row(call: QueuedCall) -> tuple[Any, ...]:
    return (
        call.id,
        call.function,
        call.state,
        call.trigger,
        call.method,
        call.target,
        _pairs(call.headers),
        call.body,
        call.callback_url,
        call.attempts,
        call.budget,
        call.next_at,
        call.created_at,
        call.updated_at or call.created_at,
        call.finished_at,
        call.status,
        call.duration,
        _pairs(call.response_headers),
        call.response_body,
        call.error,
        call.callback_state,
        call.callback_attempts,
        call.callback_status,
    )


@dataclass(frozen=True)
class Statement:
    """One write, for the queue's ledger to run with others of its kind in one
    ``executemany``. ``key`` names the rows it touches (a call's, or a schedule's):
    statements on different keys may run in any order, those on one key in order."""

    sql: str
    params: tuple[Any, ...]
    key: str


_INSERT = f"INSERT INTO calls({_COLUMNS}) VALUES ({', '.join('?' * len(_COLUMNS.split(', ')))})"
_SAVE = (
    "UPDATE calls SET state=?, attempts=?, budget=?, next_at=?, updated_at=?, finished_at=?, "
    "status=?, duration=?, response_headers=?, response_body=?, error=?, callback_state=?, "
    "callback_attempts=?, callback_status=? WHERE id=?"
)
_SAVE_ATTEMPT = (
    "INSERT OR REPLACE INTO call_attempts(call_id, attempt, started_at, duration, status, "
    "error) VALUES (?, ?, ?, ?, ?, ?)"
)


def call_inserted(call: QueuedCall) -> Statement:
    return Statement(_INSERT, _row(call), "call:" + call.id)


def call_saved(call: QueuedCall) -> Statement:
    """A call's state as it is now (all its columns but the request)."""
    params = (
        call.state,
        call.attempts,
        call.budget,
        call.next_at,
        call.updated_at,
        call.finished_at,
        call.status,
        call.duration,
        _pairs(call.response_headers),
        call.response_body,
        call.error,
        call.callback_state,
        call.callback_attempts,
        call.callback_status,
        call.id,
    )
    return Statement(_SAVE, params, "call:" + call.id)


def attempt_saved(a: Attempt) -> Statement:
    params = (a.call_id, a.attempt, a.started_at, a.duration, a.status, a.error)
    return Statement(_SAVE_ATTEMPT, params, "call:" + a.call_id)


def call_started(call: QueuedCall) -> Statement:
    """A call's attempt begins: ``running``, its attempt count and when it began
    (``updated_at``), which is all that is kept of the attempt until it ends: a
    restart marks it interrupted from here (``call_requeued``), and ``attempts_of``
    lists it meanwhile."""
    params = (call.attempts, call.updated_at, call.id)
    return Statement(_STARTED, params, "call:" + call.id)


_STARTED = "UPDATE calls SET state='running', attempts=?, updated_at=? WHERE id=?"
_INTERRUPTED = "interrupted: the daemon stopped"


def call_requeued(call_id: str, now: float) -> list[Statement]:
    """A call that was running when the daemon stopped: queued again, its
    unfinished attempt recorded as interrupted (from the call's row; an older
    daemon wrote a row when an attempt began: that one is marked)."""
    key = "call:" + call_id
    return [
        Statement(
            "UPDATE call_attempts SET error=? WHERE call_id=? AND duration IS NULL",
            (_INTERRUPTED, call_id),
            key,
        ),
        Statement(
            "INSERT OR IGNORE INTO call_attempts(call_id, attempt, started_at, duration, status, "
            "error) SELECT id, attempts, updated_at, NULL, NULL, ? FROM calls "
            "WHERE id=? AND state='running' AND attempts > 0",
            (_INTERRUPTED, call_id),
            key,
        ),
        Statement(
            "UPDATE calls SET state='queued', next_at=?, updated_at=? WHERE id=?",
            (now, now, call_id),
            key,
        ),
    ]


def tick_saved(function: str, schedule: str, tick: float) -> Statement:
    return Statement(
        "INSERT OR REPLACE INTO cron_ticks(function, schedule, last_tick) VALUES (?, ?, ?)",
        (function, schedule, tick),
        "cron:" + function,
    )


def ticks_forgotten(function: str) -> Statement:
    return Statement("DELETE FROM cron_ticks WHERE function=?", (function,), "cron:" + function)


def call_of(row: Any) -> QueuedCall:
    data = dict(row)
    data["headers"] = [tuple(pair) for pair in json.loads(data["headers"])]
    answered = json.loads(data["response_headers"] or "[]")
    data["response_headers"] = [tuple(pair) for pair in answered]
    return QueuedCall(**data)


class CallRows(Database):
    """Reads of the queue's tables, and trimming. Every other write is a Statement
    that the ledger runs on its own connection, in its batches."""

    async def get_call(self, call_id: str) -> QueuedCall | None:
        async with self.db.execute(f"SELECT {_COLUMNS} FROM calls WHERE id=?", (call_id,)) as cur:
            row = await cur.fetchone()
        return call_of(row) if row is not None else None

    async def attempts_of(self, call_id: str) -> list[Attempt]:
        """The call's attempts, the one running now included (it has no row until it
        ends: see ``call_started``)."""
        async with self.db.execute(
            "SELECT call_id, attempt, started_at, duration, status, error FROM call_attempts "
            "WHERE call_id=? UNION ALL SELECT id, attempts, updated_at, NULL, NULL, NULL "
            "FROM calls WHERE id=? AND state='running' AND attempts > 0 AND NOT EXISTS "
            "(SELECT 1 FROM call_attempts WHERE call_id=calls.id AND attempt=calls.attempts) "
            "ORDER BY attempt",
            (call_id, call_id),
        ) as cur:
            rows = await cur.fetchall()
        return [Attempt(*row) for row in rows]

    async def waiting_calls(self) -> list[tuple[str, str, str, float]]:
        """(id, function, state, next_at) of every queued or running call, oldest first."""
        async with self.db.execute(
            "SELECT id, function, state, next_at FROM calls WHERE state IN ('queued', 'running') "
            "ORDER BY created_at"
        ) as cur:
            rows = await cur.fetchall()
        return [(r[0], r[1], r[2], float(r[3])) for r in rows]

    async def pending_callbacks(self) -> list[str]:
        async with self.db.execute(
            "SELECT id FROM calls WHERE callback_state='pending' ORDER BY finished_at"
        ) as cur:
            rows = await cur.fetchall()
        return [str(r[0]) for r in rows]

    async def list_calls(
        self, functions: Sequence[str] | None, state: str | None, limit: int
    ) -> list[QueuedCall]:
        where, args = [], []
        if functions is not None:
            where.append(f"function IN ({','.join('?' * len(functions))})")
            args += list(functions)
        if state is not None:
            where.append("state=?")
            args.append(state)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        async with self.db.execute(
            f"SELECT {_COLUMNS} FROM calls {clause} ORDER BY created_at DESC LIMIT ?",
            [*args, limit],
        ) as cur:
            rows = await cur.fetchall()
        return [call_of(row) for row in rows]

    async def trim_calls(self, function: str, keep: int, older_than: float) -> int:
        """Delete finished calls of ``function`` past the newest ``keep`` or older than
        ``older_than`` (never one waiting or with a callback to deliver)."""
        finished = (
            "state IN ('done', 'failed', 'dead') AND COALESCE(callback_state, '') != 'pending'"
        )
        cur = await self.db.execute(
            f"""DELETE FROM calls WHERE function=? AND {finished} AND (finished_at < ? OR
                 created_at <= COALESCE((SELECT created_at FROM calls WHERE function=? AND
                 {finished} ORDER BY created_at DESC LIMIT 1 OFFSET ?), 0))""",
            (function, older_than, function, keep),
        )
        await self.db.execute(
            "DELETE FROM call_attempts WHERE call_id NOT IN (SELECT id FROM calls)"
        )
        return cur.rowcount

    async def called_functions(self) -> list[str]:
        async with self.db.execute("SELECT DISTINCT function FROM calls") as cur:
            rows = await cur.fetchall()
        return [str(r[0]) for r in rows]

    async def cron_ticks(self) -> dict[tuple[str, str], float]:
        async with self.db.execute("SELECT function, schedule, last_tick FROM cron_ticks") as cur:
            rows = await cur.fetchall()
        return {(str(r[0]), str(r[1])): float(r[2]) for r in rows}
