"""Calling the handler: ``async def`` ones on the event loop, plain ones in worker threads.

Each call gets its ``Context`` (with the call id of ``X-Call-Id``, under which
its output is tagged, and the trace of ``traceparent``); an exception or an
unrenderable result becomes a 500. When the function has OpenTelemetry, the
request's trace context is current while the handler runs (platshim.tracing).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from platshim.adapters import Handler, LifespanHandler
from platshim.adapters.reply import BadReply, Reply
from platshim.event import Context, Event
from platshim.output import CALL_ID, begin_call, finish_call, log_error
from platshim.responses import InvalidResponse, Response, json_bytes, render_result
from platshim.tracing import handler_spans, trace_id_of

if TYPE_CHECKING:
    from platshim.handlerspans import HandlerSpans


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
        # Set by ``use`` when the function has OpenTelemetry.
        self.spans: HandlerSpans | None = None

    def use(self, handler: Handler, function: str, version: str, spec: str) -> None:
        """Serve ``handler`` as the function ``function`` at ``version`` (from ``spec``)."""
        self.function, self.version, self.spec = function, version, spec
        self.handler = handler
        # An object whose __call__ is ``async def`` counts as an async handler too.
        self.is_async = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
            type(handler).__call__
        )
        # After the import: its dependencies are on the path by now (pool mode too),
        # and a TracerProvider it set up itself is kept.
        self.spans = handler_spans(function)

    async def start(self) -> None:
        """Whatever the handler does before it serves (an ASGI app's lifespan startup);
        raises platshim.adapters.StartupFailed (or the app's error) when it cannot."""
        if isinstance(self.handler, LifespanHandler):
            await self.handler.startup()

    async def stop(self) -> None:
        """Whatever the handler does after its last call (lifespan shutdown); never raises."""
        if isinstance(self.handler, LifespanHandler):
            try:
                await self.handler.shutdown()
            except Exception as exc:
                log_error(f"the handler's shutdown raised {type(exc).__name__}", exc)

    def wedged(self) -> bool:
        """Every worker thread is stuck in a handler: no call given now could run."""
        return not self.is_async and self.handler is not None and self.threads_busy >= self.workers

    def _call(self, event: Event, context: Context) -> Any:
        assert self.handler is not None
        with self._threads_lock:
            self.threads_busy += 1
        try:
            spans = self.spans
            if spans is None:
                return self.handler(event, context)
            # In the worker thread: its context is the one the handler's spans see.
            token = spans.attach(event.headers)
            try:
                return self.handler(event, context)
            finally:
                spans.detach(token)
        finally:
            with self._threads_lock:
                self.threads_busy -= 1

    async def invoke(self, event: Event) -> Response | Reply:
        """Run the handler for one request; with a call id, its output is tagged."""
        call_id = event.headers.get("x-call-id", "")
        if call_id and not CALL_ID.fullmatch(call_id):
            call_id = ""
        request_id = event.headers.get("x-request-id") or call_id
        traceparent = event.headers.get("traceparent")
        trace_id = trace_id_of(traceparent)
        context = Context(self.function, self.version, self.hostname, request_id, call_id)
        if trace_id is not None:
            context.trace_id = trace_id
            context.traceparent = traceparent
            context.tracestate = event.headers.get("tracestate")
        if not call_id:
            return await self._invoke(event, context, tagged=False)
        call = begin_call(call_id, trace_id)
        try:
            return await self._invoke(event, context, tagged=True)
        finally:
            finish_call(call)

    async def _invoke(self, event: Event, context: Context, *, tagged: bool) -> Response | Reply:
        handler = self.handler
        assert handler is not None
        try:
            if self.is_async:
                spans = self.spans
                if spans is None:
                    result = await handler(event, context)
                else:
                    token = spans.attach(event.headers)
                    try:
                        result = await handler(event, context)
                    finally:
                        spans.detach(token)
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
        except BadReply as exc:  # an adapter's application answered what HTTP cannot carry
            log_error(f"invalid response on {event.method} {event.path}: {exc}")
            message = f"the function's response cannot be sent: {exc}"
            payload = {"error": "invalid_response", "message": message}
            return 500, [("Content-Type", "application/json")], json_bytes(payload)
        except Exception as exc:
            kind = type(exc).__name__
            log_error(f"the handler raised {kind} on {event.method} {event.path}", exc)
            payload = {
                "error": "handler_error",
                "message": f"the function raised {kind}; see `plat logs`",
            }
            return 500, [("Content-Type", "application/json")], json_bytes(payload)
        if isinstance(result, Reply):
            return result
        try:
            return render_result(result)
        except InvalidResponse as exc:
            log_error(f"invalid return value on {event.method} {event.path}: {exc}")
            payload = {"error": "invalid_response", "message": f"the function returned {exc}"}
            return 500, [("Content-Type", "application/json")], json_bytes(payload)
