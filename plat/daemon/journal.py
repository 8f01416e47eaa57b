"""Function logs and invocation records: buffered, written in batches, trimmed, followed.

Callers (the log collector, the gateway) never wait for the database: ``log`` and
``invocation`` append to in-memory buffers that a writer task flushes a few times
a second. Each function's buffer is bounded, so a log storm from one function
drops its own oldest unwritten lines (and says so in its log) rather than
starving the others or the gateway. Retention trims by count and age.

When the store refuses writes (a full disk, a read-only or broken file), the
records stay buffered (still bounded: the oldest go first, counted) and the
writer retries with back-off, up to ``max_backoff`` seconds apart. The daemon
log gets one warning naming the error when writes start failing and one line
when they work again, with how many records were dropped meanwhile.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from plat.daemon.store import Invocation, LogLine, SpanRecord, Store

log = logging.getLogger(__name__)

# Errors about the records themselves: writing them again would fail again.
REFUSED = (
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.ProgrammingError,
    sqlite3.InterfaceError,
)


@dataclass(frozen=True)
class Retention:
    log_lines: int = 10_000  # per function
    log_age: float = 7 * 86400.0
    invocations: int = 100_000  # per function
    invocation_age: float = 7 * 86400.0
    spans: int = 20_000  # per function: those its handler recorded


class Subscription:
    """Live lines of one function (or all); a follower too slow to keep up loses lines."""

    def __init__(self, journal: Journal, function: str | None, size: int = 10_000) -> None:
        self.function = function
        self.queue: asyncio.Queue[LogLine | None] = asyncio.Queue(size)
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
        while (line := await self.queue.get()) is not None:
            yield line

    def end(self) -> None:
        """End the iteration (the daemon stops): lines not read yet are dropped."""
        while True:
            try:
                self.queue.put_nowait(None)
                return
            except asyncio.QueueFull:
                self.queue.get_nowait()

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
        max_invocations: int = 100_000,
        trim_interval: float = 60.0,
        max_backoff: float = 5.0,
    ) -> None:
        self.store = store
        self.retention = retention or Retention()
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self.max_invocations = max_invocations
        self.trim_interval = trim_interval
        self.max_backoff = max_backoff
        self._logs: dict[str, deque[LogLine]] = {}
        self._dropped: dict[str, int] = {}
        self._invocations: deque[Invocation] = deque()
        self._spans: deque[SpanRecord] = deque(maxlen=max_pending)
        # Records dropped unwritten since the start (lines, invocations), and when
        # writing started failing with the counts then; None while writes work.
        self.lost_lines = 0
        self.lost_invocations = 0
        self._failing: tuple[float, int, int] | None = None
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
        if not await self.flush():
            log.warning(
                "%d log lines and %d invocation records could not be written to the store",
                sum(map(len, self._logs.values())),
                len(self._invocations),
            )

    @property
    def failing(self) -> bool:
        """Whether the last write to the store failed."""
        return self._failing is not None

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
        trace_id: str | None = None,
    ) -> LogLine:
        line = LogLine(
            self._next_id,
            ts or time.time(),
            function,
            version,
            instance,
            stream,
            call_id,
            text,
            trace_id,
        )
        self._next_id += 1
        pending = self._logs.get(function)
        if pending is None:
            pending = self._logs[function] = deque()
        pending.append(line)
        self._bound(function, pending)
        for sub in self._subscribers:
            sub.offer(line)
        return line

    def invocation(self, record: Invocation) -> None:
        self._invocations.append(record)
        self._bound_invocations()

    def span(self, record: SpanRecord) -> None:
        """A span a handler recorded (the oldest unwritten go first past the bound)."""
        self._spans.append(record)

    def _bound(self, function: str, pending: deque[LogLine]) -> None:
        """Drop the oldest of ``function``'s unwritten lines past ``max_pending``."""
        over = len(pending) - self.max_pending
        if over > 0:
            for _ in range(over):
                pending.popleft()
            self._dropped[function] = self._dropped.get(function, 0) + over
            self.lost_lines += over

    def _bound_invocations(self) -> None:
        over = len(self._invocations) - self.max_invocations
        for _ in range(max(over, 0)):
            self._invocations.popleft()
            self.lost_invocations += 1

    def end_subscriptions(self) -> None:
        """End every live follower, so streams answer their end before the daemon stops."""
        for sub in list(self._subscribers):
            sub.end()

    def subscribe(self, function: str | None) -> Subscription:
        sub = Subscription(self, function)
        self._subscribers.add(sub)
        return sub

    # writing

    async def flush(self) -> bool:
        """Write everything buffered so far; safe to call concurrently.

        Returns False when the store refused the write: the records are buffered
        again (bounded) for the next try, and the failure is logged once.
        """
        async with self._flush_lock:
            lines, markers, dropped, invocations = self._take()
            spans = list(self._spans)
            self._spans.clear()
            if not lines and not markers and not invocations and not spans:
                return self._failing is None
            try:
                if lines or markers:
                    await self.store.insert_logs(lines + markers)
                if invocations:
                    await self.store.insert_invocations(invocations)
                if spans:
                    await self.store.insert_spans(spans)
                await self.store.commit()
            except REFUSED as exc:
                await self._rollback()
                self.lost_lines += len(lines)
                self.lost_invocations += len(invocations)
                log.error(
                    "the store refused %d log lines and %d invocation records (%s); dropped",
                    len(lines),
                    len(invocations),
                    exc,
                )
                return True
            except (sqlite3.Error, OSError) as exc:
                await self._rollback()
                self._put_back(lines, dropped, invocations)
                self._spans.extendleft(reversed(spans))
                self._failed(exc)
                return False
            self._recovered()
            return True

    def _take(self) -> tuple[list[LogLine], list[LogLine], dict[str, int], list[Invocation]]:
        """Empty the buffers: the lines, a line per function that dropped some saying
        how many, those counts, and the invocation records."""
        lines: list[LogLine] = []
        markers: list[LogLine] = []
        dropped_counts: dict[str, int] = {}
        for function, pending in self._logs.items():
            dropped = self._dropped.pop(function, 0)
            if dropped:
                dropped_counts[function] = dropped
                first = pending[0] if pending else None
                markers.append(
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
            lines.extend(pending)
            pending.clear()
        invocations = list(self._invocations)
        self._invocations.clear()
        return lines, markers, dropped_counts, invocations

    def _put_back(
        self, lines: list[LogLine], dropped: dict[str, int], invocations: list[Invocation]
    ) -> None:
        """Undo ``_take`` after a failed write, ahead of what arrived meanwhile."""
        for function, count in dropped.items():
            self._dropped[function] = self._dropped.get(function, 0) + count
        by_function: dict[str, list[LogLine]] = {}
        for line in lines:
            by_function.setdefault(line.function, []).append(line)
        for function, taken in by_function.items():
            pending = self._logs.setdefault(function, deque())
            pending.extendleft(reversed(taken))
            self._bound(function, pending)
        self._invocations.extendleft(reversed(invocations))
        self._bound_invocations()

    async def _rollback(self) -> None:
        """Drop what the failed write left in the open transaction (it is buffered
        again; committed by another writer it would be written twice)."""
        try:
            await self.store.db.rollback()
        except (sqlite3.Error, OSError) as exc:
            log.debug("rollback after a failed write: %s", exc)

    def _failed(self, exc: BaseException) -> None:
        if self._failing is not None:
            return
        self._failing = (time.monotonic(), self.lost_lines, self.lost_invocations)
        log.warning(
            "writing logs and invocation records to the store failed: %s; keeping them in "
            "memory (at most %d lines per function and %d invocation records, the oldest "
            "dropped first) and retrying every %g s at most",
            describe_write_error(exc),
            self.max_pending,
            self.max_invocations,
            self.max_backoff,
        )

    def _recovered(self) -> None:
        if self._failing is None:
            return
        since, lines, invocations = self._failing
        self._failing = None
        log.warning(
            "writing logs to the store works again after %.0f s; dropped meanwhile: "
            "%d log lines, %d invocation records",
            time.monotonic() - since,
            self.lost_lines - lines,
            self.lost_invocations - invocations,
        )

    async def _writer(self) -> None:
        delay = self.flush_interval
        while True:
            await asyncio.sleep(delay)
            try:
                written = await self.flush()
            except Exception:
                log.exception("writing logs to the store failed")
                written = False
            # Back off while the store refuses writes: a full disk stays full a while.
            delay = self.flush_interval if written else min(delay * 2, self.max_backoff)

    async def trim(self) -> None:
        now = time.time()
        r = self.retention
        for function in await self.store.logged_functions():
            await self.store.trim_logs(function, r.log_lines, now - r.log_age)
            await self.store.trim_invocations(function, r.invocations, now - r.invocation_age)
            await self.store.trim_spans(function, r.spans, now - r.invocation_age)

    async def _trimmer(self) -> None:
        while True:
            await asyncio.sleep(self.trim_interval)
            if self._failing is not None:
                continue  # deleting writes too; the writer reports the failure
            try:
                await self.trim()
            except Exception:
                log.exception("trimming logs failed")


def describe_write_error(exc: BaseException) -> str:
    """The store's error in a few words, e.g. "disk full (database or disk is full)"."""
    text = str(exc) or type(exc).__name__
    if (
        isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
    ) or "disk is full" in text:
        return f"disk full ({text})"
    if "readonly" in text or "read-only" in text:
        return f"the store is read-only ({text})"
    return f"{type(exc).__name__}: {text}"
