"""plat's Python runtime shim: an HTTP/1.1 server that calls the user's handler.

Started as ``python3 /opt/plat/shim/plat_shim.py`` with the function's folder as
the working directory. It depends on the standard library only, so it runs on
any Python >= 3.11 base image (python:3.12-slim, Debian bookworm's python3).

Contract (the instance contract of plat, see docs/runtimes.md):

* Environment: ``PLAT_HANDLER`` (``module.function``, default ``handler.handle``,
  resolved relative to the working directory), ``PORT`` (default 8080),
  ``PLAT_HOST`` (default 0.0.0.0), ``PLAT_FUNCTION``, ``PLAT_VERSION``,
  ``PLAT_WORKERS`` (threads for synchronous handlers, default 32).
* The handler module is imported before the port is bound. If the import fails
  the traceback goes to stderr and the process exits with status 1, so a broken
  deploy never looks ready.
* ``handle(event, context)`` gets ``event.body`` (bytes), ``event.headers``
  (case-insensitive), ``event.method``, ``event.query`` (first values;
  ``getlist`` for all) and ``event.path``; its return value becomes the response
  (str, bytes, None -> 204, ``{"statusCode", "headers", "body"}``, or any JSON
  value). ``async def`` handlers run on the event loop, plain ones in a thread
  pool, so one slow request never blocks the others.
* A request carrying ``X-Plat-Probe: 1`` is answered ``200 {"status":"ready"}``
  by the shim without calling the handler (``503 {"status":"stopping"}`` while
  draining; ``503 {"status":"busy"}`` with ``X-Plat-Status: busy`` while every
  handler thread is stuck, so the daemon can replace a wedged instance).
* A handler exception becomes ``500 {"error": "handler_error", ...}``; the
  traceback goes to stderr only.
* Call ids: a request's ``X-Call-Id`` header (``[A-Za-z0-9._-]{1,128}``, set by
  plat's gateway) is ``context.call_id``. While the call runs, every line written
  to ``sys.stdout``/``sys.stderr`` (print, logging, the shim's own traceback)
  starts with ``[call:<id>] ``, which plat's log collector strips and stores as
  the line's call id. Output outside calls is not tagged.
* SIGTERM/SIGINT: stop accepting, let in-flight requests finish (up to
  ``PLAT_SHUTDOWN_GRACE`` seconds, default 5), exit 0.
* Pool mode (``PLAT_POOL_TOKEN`` set): a generic, pre-started instance of the
  runtime image. It binds the port at once without a handler, answers probes,
  and 503 to anything else until the daemon POSTs ``/.plat/specialize`` with the
  token in ``X-Plat-Pool-Token`` and a JSON body ``{"function", "version",
  "handler", "env"}``; by then the daemon has placed the function's code in the
  working directory and its dependencies on the path (both mounted read-only).
  The shim sets ``env``, imports the handler and serves that function only; the
  endpoint is gone from then on. A failed import answers 500 with the error, and
  the daemon discards the instance.

The HTTP layer is a small hand-written HTTP/1.1 parser on asyncio streams:
keep-alive, pipelining, Content-Length and chunked request bodies,
``Expect: 100-continue``. Responses always carry Content-Length.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import importlib
import inspect
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import Any, NoReturn, TextIO, cast
from urllib.parse import parse_qsl, unquote, urlsplit

MAX_HEAD = 64 * 1024
SPECIALIZE_PATH = "/.plat/specialize"
POOL_TOKEN_HEADER = "x-plat-pool-token"
# Longer than the idle timeout of usual client pools (aiohttp: 15 s), so the
# client, not the shim, closes idle connections and no request races a close.
KEEPALIVE_SECONDS = float(os.environ.get("PLAT_KEEPALIVE_TIMEOUT", "75"))
SHUTDOWN_GRACE = float(os.environ.get("PLAT_SHUTDOWN_GRACE", "5"))

_REASONS = {status.value: status.phrase for status in HTTPStatus}
_NO_BODY_STATUSES = frozenset({204, 304})
_FORBIDDEN_RESPONSE_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
_CALL_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
# A call's unfinished line is written out (tagged) once it grows past this many characters.
MAX_HELD_LINE = 64 * 1024


class Headers(Mapping[str, str]):
    """Request headers: case-insensitive; a repeated header's values joined by ", "."""

    __slots__ = ("_index", "_items")

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items
        index: dict[str, tuple[str, str]] = {}
        for name, value in items:
            key = name.lower()
            previous = index.get(key)
            index[key] = (previous[0], f"{previous[1]}, {value}") if previous else (name, value)
        self._index = index

    def __getitem__(self, name: str) -> str:
        return self._index[name.lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (entry[0] for entry in self._index.values())

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        entry = self._index.get(name.lower())
        return entry[1] if entry else default

    def getlist(self, name: str) -> list[str]:
        """Every value of a header, in the order received."""
        key = name.lower()
        return [value for item, value in self._items if item.lower() == key]

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


class Query(dict[str, str]):
    """Query parameters: a dict of each name's first value; ``getlist`` gives all."""

    __slots__ = ("_pairs",)

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__()
        self._pairs = pairs
        for name, value in pairs:
            self.setdefault(name, value)

    def getlist(self, name: str) -> list[str]:
        """Every value of a parameter (``?a=1&a=2`` -> ``["1", "2"]``)."""
        return [value for item, value in self._pairs if item == name]

    getall = getlist


class Event:
    """One HTTP request, in the shape of OpenFaaS python3-http's ``event``."""

    __slots__ = ("_json", "body", "headers", "method", "path", "query", "query_string")

    def __init__(
        self, method: str, path: str, query_string: str, headers: Headers, body: bytes
    ) -> None:
        self.method = method
        self.path = path
        self.query_string = query_string
        self.query = Query(parse_qsl(query_string, keep_blank_values=True))
        self.headers = headers
        self.body = body
        self._json: Any = _UNSET

    @property
    def json(self) -> Any:
        """The body parsed as JSON, or None when it is empty or not valid JSON."""
        if self._json is _UNSET:
            try:
                self._json = json.loads(self.body) if self.body.strip() else None
            except ValueError:
                self._json = None
        return self._json

    def __repr__(self) -> str:
        return f"Event({self.method} {self.path!r}, {len(self.body)} bytes)"


class Context:
    """Facts about the instance and the request that are not part of the request."""

    __slots__ = ("call_id", "function", "hostname", "request_id", "version")

    def __init__(
        self, function: str, version: str, hostname: str, request_id: str, call_id: str = ""
    ) -> None:
        self.function = function
        self.version = version
        self.hostname = hostname
        self.request_id = request_id
        self.call_id = call_id

    def __repr__(self) -> str:
        return f"Context(function={self.function!r}, hostname={self.hostname!r})"


_UNSET: Any = object()


# --- call ids on log lines ------------------------------------------------------------------


class CallLog:
    """The log state of one call: its line tag and, per stream, its unfinished line."""

    __slots__ = ("cut", "done", "held", "tag")

    def __init__(self, call_id: str) -> None:
        self.tag = f"[call:{call_id}] "
        self.held = ["", ""]  # per stream (stdout, stderr): text after the last newline
        self.cut = [False, False]  # per stream: another writer ended this call's open line
        self.done = False  # the call has returned; later output is not held


_current_call: contextvars.ContextVar[CallLog | None] = contextvars.ContextVar(
    "plat_current_call", default=None
)
_calls_running = 0  # calls with a call id in progress (changed on the event loop only)
_UNTAGGED: Any = object()  # the writer of output from outside calls


class TaggedStream:
    """Stands in for sys.stdout/sys.stderr: during a call, each line starts with its tag.

    Outside calls (no ``CallLog`` in the context) a write goes straight to the
    wrapped stream. During a call, the call's unfinished line is held, as a
    line-buffered stream would, until its newline, ``flush()`` or the end of the
    call, and complete lines go out tagged in a single write: a line printed by a
    thread (``print`` writes its text and its newline separately) is never split
    by another thread's output. A line left unfinished on the real stream (a
    flushed partial line, or untagged output while calls run) is ended before
    someone else writes, so no tag ever lands in the middle of a line.
    Everything else (``fileno``, ``buffer``, ``encoding``, ...) is the wrapped
    stream's.
    """

    def __init__(self, stream: TextIO, index: int) -> None:
        self.wrapped = stream
        self._index = index
        self._lock = threading.RLock()
        # Who left the real stream in the middle of a line: a CallLog, _UNTAGGED or None.
        self._owner: Any = None

    def write(self, text: str) -> int:
        call = _current_call.get()
        if call is None:
            if not _calls_running or not isinstance(text, str) or not text:
                return self.wrapped.write(text)
            with self._lock:  # untagged output among tagged calls: keep lines apart
                out = self._end_other_line(_UNTAGGED) + text
                self._owner = None if text[-1] == "\n" else _UNTAGGED
                self.wrapped.write(out)
            return len(text)
        if not isinstance(text, str):
            return self.wrapped.write(text)
        size = len(text)
        i = self._index
        with self._lock:
            if call.cut[i]:
                # Its line was ended for it: the newline that would have ended it goes.
                call.cut[i] = False
                if text[:1] == "\n" and not call.held[i]:
                    text = text[1:]
            if "\n" in text:
                lines, _, rest = (call.held[i] + text).rpartition("\n")
                call.held[i] = rest
                out = self._line_start(call) + lines.replace("\n", "\n" + call.tag) + "\n"
                self._owner = None
            else:
                out = ""
                call.held[i] += text
            if call.done or len(call.held[i]) > MAX_HELD_LINE:
                out += self._release(call)
            if out:
                self.wrapped.write(out)
        return size

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        call = _current_call.get()
        if call is not None and call.held[self._index]:
            with self._lock:
                out = self._release(call)
                if out:
                    self.wrapped.write(out)
        self.wrapped.flush()

    def end_call(self, call: CallLog) -> None:
        """Write out what the call left unfinished, ending the line."""
        if call.held[self._index] or self._owner is call:
            with self._lock:
                out = self._release(call)
                if self._owner is call:
                    out += "\n"
                    self._owner = None
                    call.cut[self._index] = True
                if out:
                    self.wrapped.write(out)

    # The helpers run under the lock.

    def _end_other_line(self, writer: Any) -> str:
        # A newline when the real stream is in the middle of someone else's line.
        owner = self._owner
        if owner is None or owner is writer:
            return ""
        if owner is not _UNTAGGED:
            owner.cut[self._index] = True
        self._owner = None
        return "\n"

    def _line_start(self, call: CallLog) -> str:
        # What goes before the call's next text: nothing if it continues its own line.
        if self._owner is call:
            return ""
        return self._end_other_line(call) + call.tag

    def _release(self, call: CallLog) -> str:
        # The call's held text, written without waiting for the end of its line.
        held = call.held[self._index]
        if not held:
            return ""
        call.held[self._index] = ""
        out = self._line_start(call) + held
        self._owner = call
        return out

    def __getattr__(self, name: str) -> Any:
        # encoding, errors, buffer, fileno, isatty, line_buffering, reconfigure, ...
        if name == "wrapped":  # not set yet (copy, pickle): no endless recursion
            raise AttributeError(name)
        return getattr(self.wrapped, name)

    def __repr__(self) -> str:
        return f"<plat TaggedStream {self.wrapped!r}>"


_tagged_streams: list[TaggedStream] = []


def tag_output() -> None:
    """Put TaggedStreams in place of sys.stdout and sys.stderr (idempotent)."""
    for index, name in enumerate(("stdout", "stderr")):
        stream = getattr(sys, name)
        if stream is None or isinstance(stream, TaggedStream):
            continue
        tagged = TaggedStream(stream, index)
        setattr(sys, name, cast(TextIO, tagged))
        _tagged_streams.append(tagged)


def end_call(call: CallLog) -> None:
    call.done = True
    for stream in _tagged_streams:
        stream.end_call(call)


class BadRequest(Exception):
    """The client broke HTTP; answered with ``status`` and the connection closed."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class InvalidResponse(Exception):
    """The handler returned something that cannot become an HTTP response."""


# --- responses -----------------------------------------------------------------------------

_date_cache: tuple[int, str] = (0, "")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _http_date() -> str:
    """The ``Date`` header (RFC 9110 IMF-fixdate), made once a second. Written out
    rather than taken from email.utils, whose import costs ~12 ms of a cold start."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        t = time.gmtime(now)
        _date_cache = (
            now,
            f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT",
        )
    return _date_cache[1]


def _json_bytes(value: Any) -> bytes:
    try:
        return json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise InvalidResponse(f"the return value is not JSON-serializable: {exc}") from None


def _body_bytes(body: Any) -> tuple[bytes, str | None]:
    """Body bytes and the content type they imply."""
    if body is None:
        return b"", None
    if isinstance(body, str):
        return body.encode("utf-8"), "text/plain; charset=utf-8"
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body), "application/octet-stream"
    return _json_bytes(body), "application/json"


def _check_header(name: str, value: str) -> None:
    if not name or any(ch not in _TOKEN_CHARS for ch in name):
        raise InvalidResponse(f"invalid response header name {name!r}")
    if any(ch in value for ch in "\r\n\0"):
        raise InvalidResponse(f"the value of response header {name!r} contains a line break")


def render_result(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """(status, headers, body) for a handler's return value; see the module docstring."""
    if isinstance(result, dict) and "statusCode" in result:
        status = result["statusCode"]
        if isinstance(status, str) and status.isdigit():
            status = int(status)
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise InvalidResponse(f"statusCode must be an integer from 100 to 599, not {status!r}")
        raw_headers = result.get("headers") or {}
        if not isinstance(raw_headers, Mapping):
            raise InvalidResponse("headers must be a mapping of header names to values")
        headers: list[tuple[str, str]] = []
        for name, value in raw_headers.items():
            values = value if isinstance(value, list | tuple) else [value]
            for item in values:
                text = str(item)
                _check_header(str(name), text)
                if str(name).lower() not in _FORBIDDEN_RESPONSE_HEADERS:
                    headers.append((str(name), text))
        body, content_type = _body_bytes(result.get("body"))
        if content_type and body and not any(n.lower() == "content-type" for n, _ in headers):
            headers.append(("Content-Type", content_type))
        return status, headers, body
    if result is None:
        return 204, [], b""
    body, content_type = _body_bytes(result)
    return 200, [("Content-Type", content_type or "application/octet-stream")], body


def build_response(
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    *,
    keep_alive: bool,
    head_only: bool = False,
) -> bytes:
    """The bytes of one HTTP/1.1 response (head and, unless suppressed, body)."""
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    no_body = status in _NO_BODY_STATUSES or status < 200
    if not no_body:
        lines.append(f"Content-Length: {len(body)}")
    lines.append(f"Date: {_http_date()}")
    if not keep_alive:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
    return head if no_body or head_only else head + body


def _json_response(
    status: int,
    payload: dict[str, Any],
    *,
    keep_alive: bool,
    extra: tuple[tuple[str, str], ...] = (),
) -> bytes:
    headers = [("Content-Type", "application/json"), *extra]
    return build_response(status, headers, _json_bytes(payload), keep_alive=keep_alive)


def _user_traceback(exc: BaseException) -> str:
    """The traceback without the shim's and the thread pool's own frames."""
    tb = exc.__traceback__
    while tb is not None and (
        tb.tb_frame.f_code.co_filename == __file__
        or "concurrent" in tb.tb_frame.f_code.co_filename.replace("\\", "/").split("/")
    ):
        tb = tb.tb_next
    if tb is None:  # the error is the shim's own: show everything
        return "".join(traceback.format_exception(exc))
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _log_error(message: str, exc: BaseException | None = None) -> None:
    # One write per report so that tracebacks of concurrent requests do not interleave.
    text = f"plat-shim: {message}\n"
    if exc is not None:
        text += _user_traceback(exc)
    sys.stderr.write(text)
    sys.stderr.flush()


# --- requests ------------------------------------------------------------------------------


def parse_head(data: bytes) -> tuple[str, str, str, list[tuple[str, str]]]:
    """(method, target, version, headers) from a request head ending in CRLFCRLF."""
    lines = data.rstrip(b"\r\n").split(b"\r\n")
    try:
        method, target, version = lines[0].decode("latin-1").split(" ")
    except ValueError:
        raise BadRequest("malformed request line") from None
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequest(f"unsupported protocol {version!r}", 505)
    if not method or any(ch not in _TOKEN_CHARS for ch in method):
        raise BadRequest("malformed method")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise BadRequest("malformed header line")
        headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
    return method, target, version, headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BadRequest("malformed chunk size") from None
        if size < 0:
            raise BadRequest("malformed chunk size")
        if size == 0:
            # Trailer fields (rarely sent) end with an empty line; they are dropped.
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return b"".join(parts)
        chunk = await reader.readexactly(size + 2)
        if chunk[-2:] != b"\r\n":
            raise BadRequest("chunk not followed by CRLF")
        parts.append(chunk[:-2])


# --- server --------------------------------------------------------------------------------


class Shim:
    """The server: one instance per process."""

    def __init__(
        self,
        handler: Callable[..., Any] | None,
        function: str,
        version: str,
        *,
        pool_token: str | None = None,
    ) -> None:
        self.handler: Callable[..., Any] | None = None
        self.is_async = False
        if handler is not None:
            self.use(handler)
        # Set while a generic pool instance waits to be specialised (handler None).
        self.pool_token = pool_token
        self.function = function
        self.version = version
        self.spec = os.environ.get("PLAT_HANDLER") or "handler.handle"
        self.address = ""
        self.hostname = socket.gethostname()
        self.workers = int(os.environ.get("PLAT_WORKERS", "32"))
        self.executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="handler")
        # Handler threads running now, those whose caller gave up included.
        self.threads_busy = 0
        self._threads_lock = threading.Lock()
        self.closing = False
        self.busy = 0
        self.idle: set[asyncio.StreamWriter] = set()

    def use(self, handler: Callable[..., Any]) -> None:
        self.handler = handler
        # An object whose __call__ is ``async def`` counts as an async handler too.
        self.is_async = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
            type(handler).__call__
        )

    def _call(self, event: Event, context: Context) -> Any:
        assert self.handler is not None
        with self._threads_lock:
            self.threads_busy += 1
        try:
            return self.handler(event, context)
        finally:
            with self._threads_lock:
                self.threads_busy -= 1

    def wedged(self) -> bool:
        """Every worker thread is stuck in a handler: no call given now could run."""
        return not self.is_async and self.handler is not None and self.threads_busy >= self.workers

    def serving_line(self) -> str:
        return (
            f"plat-shim: python {sys.version.split()[0]} serving {self.function or 'function'} "
            f"({self.spec}) on {self.address}"
        )

    def specialize(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """Become the function the daemon names (pool mode); (status, JSON answer)."""
        try:
            payload = json.loads(body)
            env = {str(k): str(v) for k, v in dict(payload.get("env") or {}).items()}
            function = str(payload["function"])
            version = str(payload["version"])
            spec = str(payload.get("handler") or "handler.handle")
            app = str(payload.get("app") or "")
            paths = [str(p) for p in payload.get("paths") or []]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return 400, {"error": "bad_request", "message": f"invalid specialisation: {exc}"}
        if app:  # the process backend names the folders; containers have them mounted
            try:
                os.chdir(app)
            except OSError as exc:
                return 400, {"error": "bad_request", "message": f"cannot use {app}: {exc}"}
        for path in reversed(paths):
            sys.path.insert(0, path)
        os.environ.update(env)
        os.environ.update({"PLAT_FUNCTION": function, "PLAT_VERSION": version})
        os.environ["PLAT_HANDLER"] = spec
        # The code and dependencies appeared after start-up: forget cached listings.
        importlib.invalidate_caches()
        try:
            handler = load_handler(spec)
        except Exception as exc:
            message = (
                f"cannot load the handler {spec!r} from {os.getcwd()} "
                f"({type(exc).__name__}: {exc}); the function will not start"
            )
            _log_error(message, exc)
            return 500, {"error": "handler_failed", "message": message}
        self.function, self.version, self.spec = function, version, spec
        self.use(handler)
        self.pool_token = None
        print(self.serving_line(), flush=True)
        return 200, {"status": "ready"}

    async def invoke(self, event: Event) -> tuple[int, list[tuple[str, str]], bytes]:
        """Run the handler for one request; with a call id, its output is tagged."""
        call_id = event.headers.get("x-call-id", "")
        if call_id and not _CALL_ID.fullmatch(call_id):
            call_id = ""
        request_id = event.headers.get("x-request-id") or call_id
        context = Context(self.function, self.version, self.hostname, request_id, call_id)
        if not call_id:
            return await self._invoke(event, context, None)
        global _calls_running
        call = CallLog(call_id)
        token = _current_call.set(call)
        _calls_running += 1
        try:
            return await self._invoke(event, context, call)
        finally:
            _calls_running -= 1
            _current_call.reset(token)
            end_call(call)

    async def _invoke(
        self, event: Event, context: Context, call: CallLog | None
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        handler = self.handler
        assert handler is not None
        try:
            if self.is_async:
                result = await handler(event, context)
            else:
                loop = asyncio.get_running_loop()
                if call is None:
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
            _log_error(f"the handler raised {kind} on {event.method} {event.path}", exc)
            payload = {
                "error": "handler_error",
                "message": f"the function raised {type(exc).__name__}; see `plat logs`",
            }
            return 500, [("Content-Type", "application/json")], _json_bytes(payload)
        try:
            return render_result(result)
        except InvalidResponse as exc:
            _log_error(f"invalid return value on {event.method} {event.path}: {exc}")
            payload = {"error": "invalid_response", "message": f"the function returned {exc}"}
            return 500, [("Content-Type", "application/json")], _json_bytes(payload)

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve requests on one connection until either side closes it."""
        loop = asyncio.get_running_loop()
        try:
            while not self.closing:
                self.idle.add(writer)
                idle_timer = loop.call_later(KEEPALIVE_SECONDS, writer.close)
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                except asyncio.CancelledError:
                    # Shutdown cancels idle keep-alive connections (Python 3.11 does it
                    # inside readuntil); nothing is lost, so end quietly.
                    return
                except asyncio.LimitOverrunError:
                    writer.write(
                        _json_response(
                            431,
                            {"error": "bad_request", "message": "request head too large"},
                            keep_alive=False,
                        )
                    )
                    return
                finally:
                    idle_timer.cancel()
                    self.idle.discard(writer)
                head = head.lstrip(b"\r\n")
                if not head:
                    continue
                self.busy += 1
                try:
                    keep_alive = await self.request(head, reader, writer)
                finally:
                    self.busy -= 1
                if not keep_alive:
                    return
        except BadRequest as exc:
            payload = {"error": "bad_request", "message": str(exc)}
            writer.write(_json_response(exc.status, payload, keep_alive=False))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away mid-request; nobody is left to answer
        finally:
            self.idle.discard(writer)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()

    async def request(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Read the rest of one request, answer it; returns whether to keep the connection."""
        method, target, version, header_items = parse_head(head)
        headers = Headers(header_items)
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        # HTTP/1.1 keeps connections open unless told not to; HTTP/1.0 only when asked.
        keep_alive = "close" not in tokens if version == "HTTP/1.1" else "keep-alive" in tokens

        encoding = headers.get("transfer-encoding")
        length_text = headers.get("content-length")
        if encoding is not None:
            if encoding.split(",")[-1].strip().lower() != "chunked":
                raise BadRequest(f"unsupported transfer-encoding {encoding!r}", 501)
            # Both framings at once is a smuggling pattern: honour chunked, then close.
            keep_alive = keep_alive and length_text is None
            length = -1
        elif length_text is not None:
            if not length_text.isdigit():
                raise BadRequest("invalid content-length")
            length = int(length_text)
        else:
            length = 0
        if length and version == "HTTP/1.1" and headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if length < 0:
            body = await _read_chunked(reader)
        elif length:
            body = await reader.readexactly(length)
        else:
            body = b""

        if self.closing:
            keep_alive = False
        if headers.get("x-plat-probe") == "1":
            if self.closing:
                writer.write(_json_response(503, {"status": "stopping"}, keep_alive=keep_alive))
            elif self.wedged():
                busy = {"status": "busy", "message": f"all {self.workers} handler threads are busy"}
                writer.write(
                    _json_response(
                        503, busy, keep_alive=keep_alive, extra=(("X-Plat-Status", "busy"),)
                    )
                )
            else:
                writer.write(_json_response(200, {"status": "ready"}, keep_alive=keep_alive))
            await writer.drain()
            return keep_alive
        if self.handler is None:
            if (
                method == "POST"
                and target == SPECIALIZE_PATH
                and self.pool_token
                and headers.get(POOL_TOKEN_HEADER) == self.pool_token
            ):
                status, payload = self.specialize(body)
            else:
                status, payload = 503, {
                    "error": "not_specialized",
                    "message": "this is a pre-started pool instance that serves no function yet",
                }
            writer.write(_json_response(status, payload, keep_alive=keep_alive))
            await writer.drain()
            return keep_alive

        if target.startswith(("http://", "https://")):
            parts = urlsplit(target)
            raw_path, query = parts.path or "/", parts.query
        else:
            raw_path, _, query = target.partition("?")
        event = Event(method, unquote(raw_path) or "/", query, headers, body)
        status, out_headers, out_body = await self.invoke(event)
        if self.closing:
            keep_alive = False  # SIGTERM arrived meanwhile: tell the client not to reuse us
        writer.write(
            build_response(
                status, out_headers, out_body, keep_alive=keep_alive, head_only=method == "HEAD"
            )
        )
        await writer.drain()
        return keep_alive

    async def serve(self, host: str, port: int) -> None:
        """Listen until SIGTERM/SIGINT, then drain and return."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            server = await asyncio.start_server(
                self.connection, host, port, limit=MAX_HEAD, reuse_address=True, backlog=1024
            )
        except OSError as exc:
            _log_error(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
            raise SystemExit(1) from None
        self.address = f"http://{host}:{port}"
        if self.handler is not None:
            print(self.serving_line(), flush=True)
        await stop.wait()
        self.closing = True
        server.close()
        for writer in list(self.idle):
            writer.close()
        deadline = loop.time() + SHUTDOWN_GRACE
        while self.busy and loop.time() < deadline:
            await asyncio.sleep(0.02)
        if self.busy:
            _log_error(f"stopping with {self.busy} request(s) still running")


def load_handler(spec: str) -> Callable[..., Any]:
    """Import the handler named by ``spec`` (``module.func``, ``module:func``, ``file.py``).

    The working directory goes first on sys.path so the user's modules win.
    Raises ImportError/AttributeError/TypeError (and whatever the module raises).
    """
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
    elif spec.endswith(".py") or "." not in spec:
        module_name, attr = spec, "handle"
    else:
        module_name, _, attr = spec.rpartition(".")
    module_name = module_name.removesuffix(".py").replace("/", ".")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    module = importlib.import_module(module_name)
    handler = getattr(module, attr, None)
    if handler is None:
        raise AttributeError(f"module {module_name!r} has no attribute {attr!r}")
    if not callable(handler):
        raise TypeError(f"{module_name}.{attr} is not callable")
    return handler  # type: ignore[no-any-return]


def main() -> None:
    spec = os.environ.get("PLAT_HANDLER") or "handler.handle"
    # Before the import, so that logging handlers made at import time write through the tags.
    tag_output()
    host = os.environ.get("PLAT_HOST") or "0.0.0.0"
    port = int(os.environ.get("PORT") or "8080")
    # Out of the environment, so that the function's code never sees it.
    pool_token = os.environ.pop("PLAT_POOL_TOKEN", "")
    if pool_token:
        run(Shim(None, "", "", pool_token=pool_token), host, port)
    try:
        handler = load_handler(spec)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        _log_error(
            f"cannot load the handler {spec!r} from {os.getcwd()} "
            f"({type(exc).__name__}: {exc}); the function will not start",
            exc,
        )
        sys.exit(1)
    shim = Shim(handler, os.environ.get("PLAT_FUNCTION", ""), os.environ.get("PLAT_VERSION", ""))
    run(shim, host, port)


def run(shim: Shim, host: str, port: int) -> NoReturn:
    asyncio.run(shim.serve(host, port))
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit: a handler thread that is still stuck must not hold up the exit
    # (ThreadPoolExecutor joins its threads at interpreter shutdown).
    os._exit(0)


if __name__ == "__main__":
    main()
