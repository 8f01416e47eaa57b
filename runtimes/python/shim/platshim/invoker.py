"""Calling the handler: ``async def`` ones on the event loop, plain ones in worker threads.

Each call gets its ``Context`` (with the call id of ``X-Call-Id``, under which
its output is tagged); an exception or an unrenderable result becomes a 500.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from platshim.adapters import Handler
from platshim.event import Context, Event
from platshim.output import CALL_ID, begin_call, finish_call, log_error
from platshim.responses import InvalidResponse, Response, json_bytes, render_result


class Invoker:
    """The function served and the workers that call its handler (none until ``use``)."""

    def __init__(self, workers: int) -> None:
        self.handler: Handler | None = None
        self.is_async = False
        self.function = ""
        self.version = ""
        self.spec = ""
        self.hostname = socket.gethostname()
        self.workers = workers
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="handler")
        # Handler threads running now, those whose caller gave up included.
        self.threads_busy = 0
        self._threads_lock = threading.Lock()

    def use(self, handler: Handler, function: str, version: str, spec: str) -> None:
        """Serve ``handler`` as the function ``function`` at ``version`` (from ``spec``)."""
        self.function, self.version, self.spec = function, version, spec
        self.handler = handler
        # An object whose __call__ is ``async def`` counts as an async handler too.
        self.is_async = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
            type(handler).__call__
        )

    def wedged(self) -> bool:
        """Every worker thread is stuck in a handler: no call given now could run."""
        return not self.is_async and self.handler is not None and self.threads_busy >= self.workers

    def _call(self, event: Event, context: Context) -> Any:
        assert self.handler is not None
        with self._threads_lock:
            self.threads_busy += 1
        try:
            return self.handler(event, context)
        finally:
            with self._threads_lock:
                self.threads_busy -= 1

    async def invoke(self, event: Event) -> Response:
        """Run the handler for one request; with a call id, its output is tagged."""
        call_id = event.headers.get("x-call-id", "")
        if call_id and not CALL_ID.fullmatch(call_id):
            call_id = ""
        request_id = event.headers.get("x-request-id") or call_id
        context = Context(self.function, self.version, self.hostname, request_id, call_id)
        if not call_id:
            return await self._invoke(event, context, tagged=False)
        call = begin_call(call_id)
        try:
            return await self._invoke(event, context, tagged=True)
        finally:
            finish_call(call)

    async def _invoke(self, event: Event, context: Context, *, tagged: bool) -> Response:
        handler = self.handler
        assert handler is not None
        try:
            if self.is_async:
                result = await handler(event, context)
            else:
                loop = asyncio.get_running_loop()
                if not tagged:
                    result = await loop.run_in_executor(self.executor, self._call, event, context)
                else:
                    # run_in_executor does not carry the context (and so the call) along.
                    run = contextvars.copy_context().run
                    result = await loop.run_in_executor(
                        self.executor, run, self._call, event, context
                    )
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            kind = type(exc).__name__
            log_error(f"the handler raised {kind} on {event.method} {event.path}", exc)
            payload = {
                "error": "handler_error",
                "message": f"the function raised {kind}; see `plat logs`",
            }
            return 500, [("Content-Type", "application/json")], json_bytes(payload)
        try:
            return render_result(result)
        except InvalidResponse as exc:
            log_error(f"invalid return value on {event.method} {event.path}: {exc}")
            payload = {"error": "invalid_response", "message": f"the function returned {exc}"}
            return 500, [("Content-Type", "application/json")], json_bytes(payload)
