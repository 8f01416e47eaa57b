"""The queue of accepted calls: what runs when, and what becomes of each attempt.

An accepted call is committed before its 202 (:mod:`.ledger`), so it survives
``kill -9``. Each function's calls run oldest first, at most ``share`` at a time:
half the function's capacity (``scale.max`` x ``concurrency``, at least one), so
a backlog scales the function like synchronous traffic does but always leaves
room for synchronous calls. An attempt is a call through the gateway
(:mod:`.invoker`). A 5xx, a 429, a timeout or no answer is retried after
``async.backoff`` doubling up to ``async.max_backoff`` (with jitter), until
``async.retries`` retries are spent: then the call is dead-lettered. Any other
answer ends it: ``done`` below 400, ``failed`` for a 4xx. A finished call's state
is committed before its callback goes out, so a call whose callback arrived never
runs again; one running when the daemon died runs again after the restart
(at-least-once, with the same call id).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from plat.daemon.asyncq.invoker import Invoker, Outcome
from plat.daemon.asyncq.ledger import Ledger, Write
from plat.daemon.serving.function_state import FunctionState
from plat.daemon.store import Store
from plat.daemon.store.calls import (
    FINISHED,
    Attempt,
    QueuedCall,
    attempt_saved,
    call_inserted,
    call_requeued,
    call_saved,
    call_started,
)
from plat.errors import PlatError
from plat.manifest import Manifest
from plat.tenancy import split_key
from plat.triggers import AsyncPolicy

log = logging.getLogger(__name__)

DEFAULT_POLICY = AsyncPolicy()
KEPT_BODY = 64 * 1024  # of an answer, in the store (`plat call ID`)
TIMEOUT_MARGIN = 5.0  # the gateway times the call out first: that answer is a 504
# Request bodies of waiting calls kept in memory, so that running one needs no read
# of the store; past this the rest are read back when they run.
KEPT_IN_MEMORY = 32 * 1024 * 1024


class QueueFull(PlatError):
    status = 429
    code = "queue_full"


class CallExists(PlatError):
    status = 409
    code = "call_exists"


@dataclass(frozen=True)
class QueueState:
    """One function's queue for the metrics: calls waiting (queued or retrying),
    running, and the age of the oldest waiting."""

    function: str
    waiting: int
    running: int
    oldest: float


def policy_of(manifest: Manifest) -> AsyncPolicy:
    return manifest.async_ or DEFAULT_POLICY


def share(manifest: Manifest) -> int:
    """How many of a function's queued calls may run at once."""
    return max(1, manifest.scale.max * manifest.scale.concurrency // 2)


class AsyncQueue:
    def __init__(
        self,
        store: Store,
        ledger: Ledger,
        invoker: Invoker,
        functions: Mapping[str, FunctionState],
        *,
        auth_header: str,
        on_finished: Callable[[QueuedCall], None] | None = None,
    ) -> None:
        """``functions``: the controller's function states (read only);
        ``auth_header``: the admin's, for functions that are not public;
        ``on_finished``: called with a finished call that has a callback, once its
        state is committed."""
        self.store = store
        self.ledger = ledger
        self.invoker = invoker
        self.functions = functions
        self.auth_header = auth_header.encode("latin-1")
        self.on_finished = on_finished
        self._waiting: dict[str, dict[str, float]] = {}  # function -> {id: created_at}
        self._ready: dict[str, deque[str]] = {}
        self._delayed: list[tuple[float, int, str, str]] = []  # (next_at, seq, id, function)
        self._running: dict[str, int] = {}
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._runs: set[asyncio.Task[None]] = set()
        self._kept: dict[str, QueuedCall] = {}
        self._kept_bytes = 0
        self._accepting: set[str] = set()  # ids being committed (two at once: one is a 409)

    # life

    async def start(self) -> None:
        """Pick up every call a previous daemon left waiting or running."""
        now = time.time()
        interrupted = 0
        for call_id, function, state, next_at in await self.store.waiting_calls():
            if state == "running":
                interrupted += 1
                self.ledger.write(call_requeued(call_id, now))
                next_at = now
            self._add(call_id, function, next_at, now)
        if interrupted:
            log.warning(
                "%d queued calls were running when the daemon stopped; they run again", interrupted
            )
        self._task = asyncio.get_running_loop().create_task(self._dispatch(), name="async-queue")

    async def close(self) -> None:
        """Stop dispatching; calls running now stay ``running`` in the store and run
        again at the next start."""
        tasks = [t for t in (self._task, *self._runs) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        self._kept.clear()
        self._kept_bytes = 0

    # intake

    def depth(self, function: str) -> int:
        return len(self._waiting.get(function, ()))

    def states(self) -> list[QueueState]:
        now = time.time()
        out = []
        for function, waiting in self._waiting.items():
            running = self._running.get(function, 0)
            if waiting or running:
                oldest = now - next(iter(waiting.values())) if waiting else 0.0
                out.append(QueueState(function, len(waiting) - running, running, oldest))
        return out

    async def accept(self, call: QueuedCall, manifest: Manifest) -> None:
        """Queue ``call`` durably; raises QueueFull past the function's limit."""
        limit = policy_of(manifest).queue_limit
        if self.depth(call.function) >= limit:
            name = split_key(call.function)[0]
            raise QueueFull(
                f"{name} has {limit} calls queued, its limit",
                hint="retry later, or raise async.queue_limit in plat.yaml",
            )
        waiting = self._waiting.setdefault(call.function, {})
        if call.id in self._accepting or call.id in waiting:
            raise CallExists(
                f"a call with id {call.id} was queued already", hint="send a new X-Call-Id, or none"
            )
        call.budget = policy_of(manifest).retries + 1
        waiting[call.id] = call.created_at
        self._accepting.add(call.id)

        def settle(committed: bool) -> None:
            self._accepting.discard(call.id)
            if committed:
                self._keep(call)
                self._add(call.id, call.function, call.next_at, call.created_at)
            else:
                self._waiting.get(call.function, {}).pop(call.id, None)

        await self._commit(call_inserted(call), settle)

    async def _commit(self, write: Write, settle: Callable[[bool], None]) -> None:
        """Commit ``write``, then ``settle(committed)``; raises the store's error.

        Once handed to the ledger a write lands whatever becomes of the caller, so
        a caller cancelled meanwhile (its client hung up before the 202) must not
        skip ``settle``: the row would be committed and never run until a restart.
        """
        await self.ledger.submit(write, settle)

    async def retry(self, call: QueuedCall) -> QueuedCall:
        """Queue a dead or failed call again, with a fresh set of retries."""
        fs = self.functions.get(call.function)
        policy = policy_of(fs.manifest) if fs is not None else DEFAULT_POLICY
        now = time.time()
        call.state, call.next_at, call.updated_at = "queued", now, now
        call.budget = call.attempts + policy.retries + 1
        call.finished_at = call.error = None
        if call.callback_url:
            call.callback_state, call.callback_attempts = None, 0

        def settle(committed: bool) -> None:
            if committed:
                self._add(call.id, call.function, now, call.created_at)

        await self._commit(call_saved(call), settle)
        return call

    def _add(self, call_id: str, function: str, next_at: float, created_at: float) -> None:
        self._waiting.setdefault(function, {})[call_id] = created_at
        if next_at <= time.time():
            self._ready.setdefault(function, deque()).append(call_id)
        else:
            heapq.heappush(self._delayed, (next_at, next(self._seq), call_id, function))
        self._wake.set()

    def _keep(self, call: QueuedCall) -> None:
        if self._kept_bytes + len(call.body) <= KEPT_IN_MEMORY:
            self._kept[call.id] = call
            self._kept_bytes += len(call.body)

    def _take(self, call_id: str) -> QueuedCall | None:
        call = self._kept.pop(call_id, None)
        if call is not None:
            self._kept_bytes -= len(call.body)
        return call

    # dispatch

    async def _dispatch(self) -> None:
        while True:
            timeout = None
            if self._delayed:
                timeout = max(0.0, self._delayed[0][0] - time.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            now = time.time()
            while self._delayed and self._delayed[0][0] <= now:
                _, _, call_id, function = heapq.heappop(self._delayed)
                self._ready.setdefault(function, deque()).append(call_id)
            for function, ready in list(self._ready.items()):
                fs = self.functions.get(function)
                limit = share(fs.manifest) if fs is not None else len(ready)
                while ready and self._running.get(function, 0) < limit:
                    call_id = ready.popleft()
                    self._running[function] = self._running.get(function, 0) + 1
                    task = asyncio.get_running_loop().create_task(
                        self._run(call_id, function), name=f"async-call-{call_id}"
                    )
                    self._runs.add(task)
                    task.add_done_callback(self._runs.discard)
                if not ready:
                    del self._ready[function]

    async def _run(self, call_id: str, function: str) -> None:
        freed = False

        def free() -> None:
            """The call's slot is free once its answer is in: the function can take
            the next call while this one's outcome is being committed."""
            nonlocal freed
            if freed:
                return
            freed = True
            self._running[function] -= 1
            if not self._running[function]:
                del self._running[function]
            self._wake.set()

        try:
            call = self._take(call_id) or await self.store.get_call(call_id)
            if call is None or call.state in FINISHED:
                self._waiting.get(function, {}).pop(call_id, None)
                return
            await self._attempt(call, free)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("queued call %s of %s failed in the queue", call_id, function)
        finally:
            free()
            if not self._waiting.get(function, True):
                self._waiting.pop(function, None)

    async def _attempt(self, call: QueuedCall, free: Callable[[], None]) -> None:
        fs = self.functions.get(call.function)
        now = time.time()
        if fs is None:
            call.error = "the function was removed before the call ran"
            self._finish(call, "dead", now)
            await self.ledger.durable(call_saved(call))
            self._finished(call)
            return
        manifest = fs.manifest
        policy = policy_of(manifest)
        call.attempts += 1
        call.state, call.updated_at = "running", now
        number = call.attempts
        self.ledger.write(call_started(call))
        timeout = min(policy.timeout or manifest.timeout, manifest.timeout) + TIMEOUT_MARGIN
        started = time.monotonic()
        outcome = await self.invoker.attempt(
            call.function,
            call.method.encode("latin-1"),
            call.target.encode("latin-1", "replace"),
            self._headers(call, manifest),
            call.body,
            timeout,
        )
        free()
        took = time.monotonic() - started
        self.ledger.write(
            attempt_saved(
                Attempt(call.id, number, now, took, outcome.status or None, outcome.error)
            )
        )
        end = time.time()
        call.duration = took
        call.status = outcome.status or None
        call.error = outcome.error
        if not _retryable(outcome):
            call.response_headers = outcome.headers
            call.response_body = outcome.body[:KEPT_BODY]
            self._finish(call, "done" if outcome.status < 400 else "failed", end)
        elif call.attempts < call.budget:
            call.state, call.updated_at = "queued", end
            # Backoff counts the attempts since the call was (re)queued by hand.
            since = call.attempts - (call.budget - policy.retries - 1)
            call.next_at = end + policy.delay(max(since, 1), random.random())
        else:
            call.response_headers = outcome.headers
            call.response_body = outcome.body[:KEPT_BODY]
            self._finish(call, "dead", end)
        await self.ledger.durable(call_saved(call))
        if call.state == "queued":
            self._keep(call)
            heapq.heappush(self._delayed, (call.next_at, next(self._seq), call.id, call.function))
            self._wake.set()
        else:
            self._finished(call)

    def _finish(self, call: QueuedCall, state: str, now: float) -> None:
        call.state, call.finished_at, call.updated_at = state, now, now
        if call.callback_url:
            call.callback_state = "pending"
        self._waiting.get(call.function, {}).pop(call.id, None)

    def _finished(self, call: QueuedCall) -> None:
        if call.callback_state == "pending" and self.on_finished is not None:
            self.on_finished(call)

    def _headers(self, call: QueuedCall, manifest: Manifest) -> list[tuple[bytes, bytes]]:
        """The attempt's headers: the call's, the admin's credentials for a function
        that is not public, and the call's id, trigger and attempt number."""
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in call.headers]
        if manifest.auth != "public":
            headers.append((b"Authorization", self.auth_header))
        headers += (
            (b"X-Call-Id", call.id.encode()),
            (b"X-Plat-Trigger", call.trigger.encode()),
            (b"X-Plat-Attempt", b"%d" % call.attempts),
        )
        return headers


def _retryable(outcome: Outcome) -> bool:
    return outcome.status == 0 or outcome.status >= 500 or outcome.status == 429
