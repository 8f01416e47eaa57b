"""One attempt of a queued call, made through the gateway in process.

The queue calls the function the way a client would: ``Gateway.invoke`` serves an
in-memory request (plat.daemon.http.memory), so admission, scaling, auth,
metrics, tracing, timeouts and the journal treat it as any call, with no second
code path to keep in step, and no HTTP between the queue and the gateway (writing
a head onto a socket pair into the gateway's own server and parsing the answer
back made an attempt cost about twice a synchronous call).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field

from plat.daemon.http.memory import MemoryConnection, MemoryResponse, memory_request
from plat.daemon.http.message import Request, Response

log = logging.getLogger(__name__)

MAX_KEPT_BODY = 1024 * 1024  # of an answer, for the callback; the rest is counted

# Gateway.invoke: (request, response, function key, path after the function's)
Invoke = Callable[[Request, Response, bytes, bytes], Coroutine[object, object, None]]


@dataclass
class Outcome:
    """What one attempt got: a status (0 when there was no answer) and its answer,
    or the error that stopped it."""

    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    truncated: int = 0
    error: str | None = None


class Invoker:
    """Makes attempts through ``invoke`` (the gateway's)."""

    def __init__(self, invoke: Invoke) -> None:
        self.invoke = invoke
        # Attempts given up on (past their timeout) whose call the gateway still
        # serves: the instance is busy until it answers or the gateway times it out.
        self._abandoned: set[asyncio.Task[None]] = set()

    async def attempt(
        self,
        function: str,
        method: bytes,
        target: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        timeout: float,
    ) -> Outcome:
        """Call ``function`` (its key) with ``method``, ``target`` (the path after the
        function's, with the query), ``headers`` and ``body``; the answer, or an
        Outcome naming the error (a timeout included)."""
        loop = asyncio.get_running_loop()
        key = function.encode()
        path = target.partition(b"?")[0] or b"/"
        conn = MemoryConnection(loop)
        request = memory_request(conn, method, b"/function/" + key + target, headers, body)
        response = MemoryResponse(conn, request, MAX_KEPT_BODY)
        task = loop.create_task(self.invoke(request, response, key, path))
        over: asyncio.Future[None] = loop.create_future()  # the call ended, or its time did
        task.add_done_callback(lambda _: _settle(over))
        timer = loop.call_later(timeout, _settle, over)
        try:
            await over
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            timer.cancel()
        if not task.done():
            # As a client that hangs up: the gateway stops the exchange once the
            # answer starts, or cancels the call while it waits for an instance.
            response.abandon()
            if response.on_gone is None:
                task.cancel()
            self._abandoned.add(task)
            task.add_done_callback(self._forget)
            return Outcome(error=f"no answer within {timeout:g} s")
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("an attempt of %s failed in the gateway", function, exc_info=exc)
            return Outcome(error=f"the gateway failed: {exc!r}")
        if not response.status:
            return Outcome(error="no answer")
        return Outcome(
            status=response.status,
            headers=response.headers,
            body=response.body,
            truncated=response.truncated,
            error="the answer was cut off" if response.cut or not response.finished else None,
        )

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._abandoned.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("an abandoned attempt failed in the gateway", exc_info=task.exception())

    async def close(self) -> None:
        """Stop the attempts given up on that the gateway still serves."""
        tasks = list(self._abandoned)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
