"""Captures every instance's stdout and stderr into the journal, from its first line.

One reader task per instance follows the backend's output stream. The stream is
read until the instance exits, and the controller waits for it before removing
the instance, so no line is lost at start-up or death. A stream that ends while
the instance still runs (the engine was restarted) is followed again from its
last line. Lines a shim tags with ``[call:<id>] `` (or ``[call:<id> trace:<id>] ``)
are stored with that call id (and trace id); ``plat-span:`` lines are spans the
handler recorded (plat.daemon.tracing.spanline), handed to ``on_span``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable

from plat.daemon.drivers.base import Backend, RunningInstance
from plat.daemon.journal import Journal
from plat.daemon.store import SpanRecord
from plat.daemon.tracing.spanline import PREFIX as SPAN_PREFIX
from plat.daemon.tracing.spanline import parse_span_line
from plat.errors import PlatError

log = logging.getLogger(__name__)

# Following a stream again after it broke: the first wait, doubled up to the last.
RETRY_FIRST = 0.25
RETRY_MAX = 5.0

CALL_TAG = re.compile(r"\[call:([A-Za-z0-9._-]{1,128})(?: trace:([0-9a-f]{32}))?\] ?")


def split_call_id(text: str) -> tuple[str | None, str | None, str]:
    """(call id, trace id, line without the tag) of a line a shim wrote during a call."""
    match = CALL_TAG.match(text)
    if match is None:
        return None, None, text
    return match.group(1), match.group(2), text[match.end() :]


def line_time(engine_ts: float, now: float) -> float:
    """The time to store for a line: the engine's, unless it is whole seconds and recent.

    Some engines (Podman 4) stamp log lines with whole seconds only; a line read
    live is better stamped with the moment it arrived.
    """
    if engine_ts == int(engine_ts) and 0 <= now - engine_ts < 2:
        return now
    return engine_ts


class TokenBucket:
    """``rate`` events per second on average, bursts up to ``burst``."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class LogCollector:
    def __init__(
        self,
        backend: Backend,
        journal: Journal,
        *,
        enabled: bool = True,
        rate: float = 2000.0,
        on_span: Callable[[SpanRecord], None] | None = None,
    ) -> None:
        self.backend = backend
        self.journal = journal
        self.on_span = on_span
        self.enabled = enabled
        self.rate = rate
        self._readers: dict[str, asyncio.Task[None]] = {}

    def note(self, running: RunningInstance, text: str) -> None:
        """A line from plat itself about an instance (started, died, ...)."""
        self.journal.log(running.function, running.version, running.id, "plat", text)

    def attach(self, running: RunningInstance, since: float | None = None) -> None:
        """Start following ``running``'s output (idempotent)."""
        if not self.enabled or running.id in self._readers:
            return
        task = asyncio.create_task(self._read(running, since), name=f"logs-{running.id}")
        self._readers[running.id] = task

    async def _read(self, running: RunningInstance, since: float | None) -> None:
        """Follow the output until the instance is gone. A stream that ends while the
        instance still runs (the engine restarted) is followed again from its last line."""
        bucket = TokenBucket(self.rate, burst=self.rate * 2)
        delay = RETRY_FIRST
        skip_through = since
        while True:
            try:
                since = await self._follow(running, since, skip_through, bucket)
                # Engine timestamps may be coarse: lines stamped like the last one seen
                # are followed again (a repeat is better than a loss).
                skip_through = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("reading the output of %s stopped: %s", running.id, exc)
            try:
                if not await self.backend.is_alive(running):
                    return
            except PlatError:
                pass  # the engine is away: try again once it may be back
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def _follow(
        self,
        running: RunningInstance,
        since: float | None,
        skip_through: float | None,
        bucket: TokenBucket,
    ) -> float | None:
        """One log stream from ``since``, to its end, leaving out lines stamped up to
        ``skip_through``; returns the time of the last line seen."""
        dropped = 0
        try:
            async for out in self.backend.output(running, since=since):
                if skip_through is not None and out.ts <= skip_through:
                    continue
                since = out.ts
                now = time.monotonic()
                if not bucket.take(now):
                    dropped += 1
                    continue
                if dropped:
                    self.note(
                        running,
                        f"[plat] {dropped} lines dropped: the instance wrote more than "
                        f"{self.rate:g} lines/s (PLAT_LOG_RATE)",
                    )
                    dropped = 0
                call_id, trace_id, text = split_call_id(out.text)
                if text.startswith(SPAN_PREFIX) and self.on_span is not None:
                    span = parse_span_line(text, running.function, running.id)
                    if span is not None:
                        self.on_span(span)
                        continue
                self.journal.log(
                    running.function,
                    running.version,
                    running.id,
                    out.stream,
                    text,
                    ts=line_time(out.ts, time.time()),
                    call_id=call_id,
                    trace_id=trace_id,
                )
        finally:
            if dropped:
                self.note(running, f"[plat] {dropped} lines dropped (more than {self.rate:g}/s)")
        return since

    async def detach(self, instance_id: str, timeout: float = 2.0) -> None:
        """Wait (bounded) until the reader has seen the end of the stream, then drop it."""
        task = self._readers.pop(instance_id, None)
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def close(self) -> None:
        tasks = list(self._readers.values())
        self._readers.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
