"""ASGI 3 applications (FastAPI, Starlette, Quart, ...) as plat handlers.

Each request is one ``http`` scope (spec 2.4) run as a task on the shim's event
loop: ``root_path`` is the function's prefix (``/function/<name>``, empty for
``<name>.localhost``), ``path`` and ``raw_path`` include it as uvicorn's do, and
the public host, scheme and client come from the gateway's X-Forwarded-*
headers. ``receive`` gives the body in one message, then ``http.disconnect``
once the response is sent or the client is gone; ``send`` after that raises
``ClientDisconnected`` (an OSError). A body sent in one message is answered
with Content-Length; one sent in several is streamed as it comes.

The ``lifespan`` protocol runs once: startup before the instance is ready (a
``lifespan.startup.failed`` stops the instance from starting, with the app's
message), shutdown after the drain on SIGTERM. An app that does not speak it
(it raises on the lifespan scope) is served without, as uvicorn does.
"""

from __future__ import annotations

import asyncio
import collections
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

from platshim.adapters import LifespanHandler, StartupFailed
from platshim.adapters.mount import function_prefix, mount_of, split_host
from platshim.adapters.reply import BadReply, Reply, Stream, check_status, clean_headers
from platshim.event import Context, Event
from platshim.output import log_error

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
ASGI = {"version": "3.0", "spec_version": "2.4"}
# Body chunks an app may send ahead of the client before its send() waits.
WINDOW = 16
_DONE = object()


class ClientDisconnected(OSError):
    """The client is gone: nothing more can be sent (ASGI spec 2.4)."""


def scope_of(event: Event, prefix: str, key: str, state: dict[str, Any] | None) -> dict[str, Any]:
    mount = mount_of(event.headers, prefix, key)
    headers = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in event.headers._items
        if name.lower() != "host"
    ]
    headers.append((b"host", mount.host.encode("latin-1", "replace")))
    raw = quote(event.path, safe="/:@!$&'()*+,;=-._~")
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": ASGI,
        "http_version": "1.1",
        "method": event.method,
        "scheme": mount.scheme,
        "path": mount.prefix + event.path,
        "raw_path": (mount.prefix + raw).encode("latin-1", "replace"),
        "query_string": event.query_string.encode("latin-1", "replace"),
        "root_path": mount.prefix,
        "headers": headers,
        "client": (mount.client, 0) if mount.client else None,
        "server": split_host(mount.host, mount.scheme),
    }
    if state is not None:
        scope["state"] = dict(state)  # a shallow copy per request, as the spec says
    return scope


class _Exchange:
    """One request's receive and send, and the response as the app sends it."""

    def __init__(self, body: bytes) -> None:
        self.body: bytes | None = body
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.parts: list[bytes] = []
        self.head: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.streaming = False
        self.complete = False
        self.gone = False
        self.ended = asyncio.Event()  # the response is complete or the client gone
        self.queue: collections.deque[Any] = collections.deque()
        self.readable = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()

    async def receive(self) -> dict[str, Any]:
        body, self.body = self.body, None
        if body is not None and not self.gone:
            return {"type": "http.request", "body": body, "more_body": False}
        await self.ended.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if self.gone:
            raise ClientDisconnected("the client has disconnected")
        kind = message.get("type")
        if not self.status:
            if kind != "http.response.start":
                raise BadReply(f"expected http.response.start, got {kind!r}")
            self.status = check_status(message.get("status"))
            try:
                pairs = [
                    (bytes(n).decode("latin-1"), bytes(v).decode("latin-1"))
                    for n, v in message.get("headers") or ()
                ]
            except (TypeError, ValueError):
                raise BadReply("ASGI headers must be (bytes, bytes) pairs") from None
            self.headers = clean_headers(pairs)
            return
        if kind != "http.response.body":
            if kind == "http.response.trailers":
                return
            raise BadReply(f"expected http.response.body, got {kind!r}")
        if self.complete:
            raise BadReply("http.response.body sent after the response was complete")
        body = message.get("body", b"")
        if not isinstance(body, bytes | bytearray | memoryview):
            raise BadReply(f"a response body must be bytes, not {type(body).__name__}")
        more = bool(message.get("more_body", False))
        if not self.streaming:
            self.parts.append(bytes(body))
            if not more:
                self.finish()
            elif not self.head.done():
                self.streaming = True  # several messages: stream them
            if not self.head.done():
                self.head.set_result(True)
            return
        while len(self.queue) >= WINDOW and not self.gone:
            self.writable.clear()
            await self.writable.wait()
        if self.gone:
            raise ClientDisconnected("the client has disconnected")
        if body:
            self.queue.append(bytes(body))
        if not more:
            self.finish()
        self.readable.set()

    def finish(self) -> None:
        self.complete = True
        self.queue.append(_DONE)
        self.readable.set()
        self.ended.set()

    def disconnect(self) -> None:
        self.gone = True
        self.ended.set()
        self.writable.set()
        self.readable.set()

    async def chunks(self, task: asyncio.Future[None]) -> AsyncIterator[bytes]:
        yield b"".join(self.parts)
        while True:
            while not self.queue:
                if task.done():
                    task.result()  # the app's error, if it failed midway
                    return
                self.readable.clear()
                await self.readable.wait()
            item = self.queue.popleft()
            self.writable.set()
            if item is _DONE:
                return
            yield item


class AsgiHandler(LifespanHandler):
    """An ``async`` plat handler serving an ASGI app, with its lifespan."""

    def __init__(self, app: App) -> None:
        self.app = app
        # Read once the function is known (pool instances: at specialisation).
        self.key = os.environ.get("PLAT_FUNCTION", "")
        self.prefix = function_prefix()
        self.state: dict[str, Any] | None = None
        self.background: set[asyncio.Future[None]] = set()
        self._lifespan: asyncio.Task[None] | None = None
        self._lifespan_in: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._lifespan_out: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def __call__(self, event: Event, context: Context) -> Reply:
        exchange = _Exchange(event.body)
        scope = scope_of(event, self.prefix, self.key, self.state)
        scope["plat.context"] = context
        # A task copies the context: the app's output keeps the call's log tag.
        task = asyncio.ensure_future(self.app(scope, exchange.receive, exchange.send))
        try:
            await asyncio.wait((exchange.head, task), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            exchange.disconnect()
            task.cancel()
            raise
        if not exchange.head.done():
            exchange.disconnect()
            task.result()  # raises the app's error
            raise BadReply(
                "the ASGI app returned without sending a response"
                if not exchange.status
                else "the ASGI app returned without sending its body"
            )
        if not exchange.streaming:
            # The app may work on after its response (Starlette BackgroundTasks).
            self._keep(task, exchange, event)
            return Reply(exchange.status, exchange.headers, b"".join(exchange.parts))
        task.add_done_callback(lambda _: exchange.readable.set())

        async def close() -> None:
            if not exchange.complete:
                exchange.disconnect()
            if not task.done():
                self._keep(task, exchange, event)

        stream = Stream(exchange.chunks(task), close)
        return Reply(exchange.status, exchange.headers, stream)

    def _keep(self, task: asyncio.Future[None], exchange: _Exchange, event: Event) -> None:
        """Let the app's task finish after the response; log its failure."""
        self.background.add(task)

        def done(task: asyncio.Future[None]) -> None:
            self.background.discard(task)
            cut = exchange.gone and not exchange.complete
            exchange.disconnect()
            exc = None if task.cancelled() else task.exception()
            if exc is not None and not cut:  # an error on a cut stream is the cut's echo
                log_error(f"the ASGI app raised after answering {event.method} {event.path}", exc)

        task.add_done_callback(done)

    # lifespan

    async def _lifespan_send(self, message: dict[str, Any]) -> None:
        await self._lifespan_out.put(message)

    async def startup(self) -> None:
        """Run the app's lifespan startup; raises StartupFailed with the app's message."""
        self.state = {}
        scope = {"type": "lifespan", "asgi": ASGI, "state": self.state}
        await self._lifespan_in.put({"type": "lifespan.startup"})
        task = asyncio.ensure_future(self.app(scope, self._lifespan_in.get, self._lifespan_send))
        self._lifespan = task  # type: ignore[assignment]
        answer = await self._answer(task)
        if answer is None:
            self.state = None
            self._lifespan = None
            if task.done() and not task.cancelled() and task.exception() is not None:
                exc = task.exception()
                print(
                    f"plat-shim: the ASGI app does not support lifespan "
                    f"({type(exc).__name__}: {exc}); serving it without",
                    flush=True,
                )
            return
        if answer.get("type") == "lifespan.startup.failed":
            raise StartupFailed(str(answer.get("message") or "lifespan.startup.failed"))

    async def shutdown(self) -> None:
        task = self._lifespan
        if task is None or task.done():
            return
        self._lifespan = None
        await self._lifespan_in.put({"type": "lifespan.shutdown"})
        grace = float(os.environ.get("PLAT_SHUTDOWN_GRACE", "5"))
        try:
            answer = await asyncio.wait_for(self._answer(task), grace)
        except TimeoutError:
            log_error(f"the ASGI app's lifespan shutdown did not finish within {grace:g} s")
            task.cancel()
            return
        if answer is not None and answer.get("type") == "lifespan.shutdown.failed":
            log_error(f"the ASGI app's lifespan shutdown failed: {answer.get('message') or ''}")

    async def _answer(self, task: asyncio.Future[None]) -> dict[str, Any] | None:
        """The app's next lifespan message, or None when its task ended first."""
        getter = asyncio.ensure_future(self._lifespan_out.get())
        await asyncio.wait((getter, task), return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            return getter.result()
        getter.cancel()
        return None


def adapt(target: Callable[..., Any], /) -> AsgiHandler:
    return AsgiHandler(target)
