"""The queue's writes, grouped: one commit covers every write that arrived while
the last batch was being written.

An accepted call must be committed before it is acknowledged (``durable``): under
load, many accepts share a commit, so acknowledging stays cheap; alone, one waits
for its own commit only. Writes that need no acknowledgement (a call started)
ride along with the next commit.

A write is a :class:`~plat.daemon.store.calls.Statement` (or a list of them) or,
for what is not one statement (trimming), a coroutine on the store. Each call
through aiosqlite is a round trip to its thread (~50 us of CPU, most of a queued
call's bookkeeping when made one by one), so a batch's statements run as one
``executemany`` per kind: in rounds, the first statement of each key in the first
round, the second in the next..., so that statements on one call keep their order
while those on different calls, which touch different rows, are grouped. A
coroutine is a barrier: what came before it is written first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

from plat.daemon.store import Store
from plat.daemon.store.calls import Statement

log = logging.getLogger(__name__)

Op = Callable[[Store], Awaitable[None]]
Write = Statement | list[Statement] | Op


class Ledger:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._writes: list[tuple[Write, asyncio.Future[None] | None]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="queue-ledger")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._flush()

    def write(self, op: Write) -> None:
        """Write with the next batch; nobody waits for it."""
        self._writes.append((op, None))
        self._wake.set()

    async def durable(self, op: Write) -> None:
        """Write and wait until it is committed; raises the store's error if not."""
        await self.submit(op)

    def submit(self, op: Write) -> asyncio.Future[None]:
        """Write; the future resolves once it is committed (or fails with the store's
        error). Cancelling it does not take the write back."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._writes.append((op, done))
        self._wake.set()
        return done

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._flush()
            except Exception:
                log.exception("writing the queue's records failed")

    async def _flush(self) -> None:
        writes, self._writes = self._writes, []
        if not writes:
            return
        try:
            await self._commit([w for w, _ in writes])
        except sqlite3.IntegrityError as exc:
            if len(writes) == 1:
                log.error("the store refused a queue write: %s", exc)
                _settle(writes, exc)
                return
            # A constraint broken by one write (a call id inserted twice) must not
            # fail the batch it rode in: each again on its own, so only it fails.
            for write in writes:
                try:
                    await self._commit([write[0]])
                except (sqlite3.Error, OSError) as one:
                    log.error("the store refused a queue write: %s", one)
                    _settle([write], one)
                else:
                    _settle([write], None)
        except (sqlite3.Error, OSError) as exc:
            log.error("the store refused %d queue writes: %s", len(writes), exc)
            _settle(writes, exc)
        else:
            _settle(writes, None)

    async def _commit(self, writes: list[Write]) -> None:
        """Apply ``writes`` and commit them together, or none of them."""
        try:
            pending: list[Statement] = []
            for write in writes:
                if isinstance(write, Statement):
                    pending.append(write)
                elif isinstance(write, list):
                    pending += write
                else:
                    await self._apply(pending)
                    pending = []
                    await write(self.store)
            await self._apply(pending)
            await self.store.commit()
        except (sqlite3.Error, OSError):
            with contextlib.suppress(sqlite3.Error, OSError):
                await self.store.db.rollback()
            raise

    async def _apply(self, statements: list[Statement]) -> None:
        for group in rounds(statements):
            for sql, rows in group.items():
                if len(rows) == 1:
                    await self.store.db.execute(sql, rows[0])
                else:
                    await self.store.db.executemany(sql, rows)


def rounds(statements: list[Statement]) -> list[dict[str, list[tuple[Any, ...]]]]:
    """``statements`` as rounds of {sql: rows}: round N holds the N-th statement of
    each key, so no key appears twice in a round and each key's come in order."""
    seen: dict[str, int] = {}
    out: list[dict[str, list[tuple[Any, ...]]]] = []
    for st in statements:
        n = seen.get(st.key, 0)
        seen[st.key] = n + 1
        if n == len(out):
            out.append({})
        out[n].setdefault(st.sql, []).append(st.params)
    return out


def _settle(
    writes: list[tuple[Write, asyncio.Future[None] | None]], error: BaseException | None
) -> None:
    for _, done in writes:
        if done is not None and not done.done():
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)
