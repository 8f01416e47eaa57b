"""Function logs and invocation records: buffered, written in batches, trimmed, followed.

Callers (the log collector, the gateway) never wait for the database: ``log`` and
``invocation`` append to in-memory buffers that a writer task flushes a few times
a second. Each function's buffer is bounded, so a log storm from one function
drops its own oldest unwritten lines (and says so in its log) rather than
starving the others or the gateway. Retention trims by count and age.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from plat.daemon.store import Invocation, LogLine, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Retention:
    log_lines: int = 10_000  # per function
    log_age: float = 7 * 86400.0
    invocations: int = 100_000  # per function
    invocation_age: float = 7 * 86400.0


class Subscription:
    """Live lines of one function (or all); a follower too slow to keep up loses lines."""

    def __init__(self, journal: Journal, function: str | None, size: int = 10_000) -> None:
        self.function = function
        self.queue: asyncio.Queue[LogLine] = asyncio.Queue(size)
        self.lost = 0
        self._journal = journal

    def offer(self, line: LogLine) -> None:
        if self.function is not None and line.function != self.function:
            return
        try:
            self.queue.put_nowait(line)
        except asyncio.QueueFull:
            self.lost += 1

    async def __aiter__(self) -> AsyncIterator[LogLine]:
        while True:
            yield await self.queue.get()

    def close(self) -> None:
        self._journal._subscribers.discard(self)


class Journal:
    def __init__(
        self,
        store: Store,
        retention: Retention | None = None,
        *,
        flush_interval: float = 0.25,
        max_pending: int = 20_000,
        trim_interval: float = 60.0,
    ) -> None:
        self.store = store
        self.retention = retention or Retention()
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self.trim_interval = trim_interval
        self._logs: dict[str, deque[LogLine]] = {}
        self._dropped: dict[str, int] = {}
        self._invocations: deque[Invocation] = deque(maxlen=100_000)
        self._subscribers: set[Subscription] = set()
        self._next_id = 1
        self._tasks: list[asyncio.Task[None]] = []
        self._flush_lock = asyncio.Lock()

    async def start(self) -> None:
        self._next_id = await self.store.max_log_id() + 1
        self._tasks = [
            asyncio.create_task(self._writer(), name="journal-writer"),
            asyncio.create_task(self._trimmer(), name="journal-trimmer"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.flush()

    # intake (synchronous, never blocks)

    def log(
        self,
        function: str,
        version: str,
        instance: str,
        stream: str,
        text: str,
        *,
        ts: float | None = None,
        call_id: str | None = None,
    ) -> LogLine:
        line = LogLine(
            self._next_id, ts or time.time(), function, version, instance, stream, call_id, text
        )
        self._next_id += 1
        pending = self._logs.get(function)
        if pending is None:
            pending = self._logs[function] = deque()
        if len(pending) >= self.max_pending:
            pending.popleft()
            self._dropped[function] = self._dropped.get(function, 0) + 1
        pending.append(line)
        for sub in self._subscribers:
            sub.offer(line)
        return line

    def invocation(self, record: Invocation) -> None:
        self._invocations.append(record)

    def subscribe(self, function: str | None) -> Subscription:
        sub = Subscription(self, function)
        self._subscribers.add(sub)
        return sub

    # writing

    async def flush(self) -> None:
        """Write everything buffered so far (idempotent; safe to call concurrently)."""
        async with self._flush_lock:
            batch: list[LogLine] = []
            for function, pending in self._logs.items():
                dropped = self._dropped.pop(function, 0)
                if dropped:
                    first = pending[0] if pending else None
                    batch.append(
                        LogLine(
                            self._next_id,
                            time.time(),
                            function,
                            first.version if first else "",
                            first.instance if first else "",
                            "plat",
                            None,
                            f"[plat] {dropped} lines of this function were dropped: it logged "
                            "faster than they could be stored",
                        )
                    )
                    self._next_id += 1
                batch.extend(pending)
                pending.clear()
            invocations = list(self._invocations)
            self._invocations.clear()
            if not batch and not invocations:
                return
            if batch:
                await self.store.insert_logs(batch)
            if invocations:
                await self.store.insert_invocations(invocations)
            await self.store.commit()

    async def _writer(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            try:
                await self.flush()
            except Exception:
                log.exception("writing logs to the store failed")

    async def trim(self) -> None:
        now = time.time()
        r = self.retention
        for function in await self.store.logged_functions():
            await self.store.trim_logs(function, r.log_lines, now - r.log_age)
            await self.store.trim_invocations(function, r.invocations, now - r.invocation_age)

    async def _trimmer(self) -> None:
        while True:
            await asyncio.sleep(self.trim_interval)
            try:
                await self.trim()
            except Exception:
                log.exception("trimming logs failed")
