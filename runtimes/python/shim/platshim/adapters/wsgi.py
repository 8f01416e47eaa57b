"""WSGI applications (PEP 3333: Flask, Django, Bottle, Falcon, ...) as plat handlers.

The app runs in the shim's worker threads, as under a threaded WSGI server. Its
environ puts it where the gateway serves it: ``SCRIPT_NAME`` is the function's
prefix (``/function/<name>``, empty for ``<name>.localhost``) and ``PATH_INFO``
the rest, so ``url_for`` links point back through the gateway; the public host,
scheme and client address come from the gateway's X-Forwarded-* headers.

A response with a Content-Length (or a list body) is read whole in the worker
thread; any other iterable is streamed chunk by chunk. ``close()`` of the
iterable is always called, once.
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from platshim.adapters.mount import function_prefix, mount_of, split_host
from platshim.adapters.reply import BadReply, Reply, Stream, check_status, clean_headers
from platshim.event import Context, Event

# Request headers the environ gives their own keys (CGI), not HTTP_*.
_CGI_HEADERS = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}


def environ_of(event: Event, context: Context, prefix: str, key: str) -> dict[str, Any]:
    """The PEP 3333 environ of one request."""
    mount = mount_of(event.headers, prefix, key)
    server_name, server_port = split_host(mount.host, mount.scheme)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": event.method,
        "SCRIPT_NAME": mount.prefix,
        # PEP 3333: the bytes of the unquoted path, as latin-1 characters.
        "PATH_INFO": event.path.encode("utf-8", "surrogateescape").decode("latin-1"),
        "QUERY_STRING": event.query_string,
        "SERVER_NAME": server_name,
        "SERVER_PORT": str(server_port),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": mount.client or "127.0.0.1",
        "CONTENT_LENGTH": str(len(event.body)) if event.body else "",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": mount.scheme,
        "wsgi.input": io.BytesIO(event.body),
        "wsgi.input_terminated": True,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "plat.context": context,
    }
    for name in event.headers:
        lower = name.lower()
        if lower == "content-length":
            continue  # the body as read (chunked ones too) is what counts
        if "_" in name:
            # HTTP_X_USER could come from X-User or X_User: only the first is
            # a header's (as gunicorn and nginx decide).
            continue
        value = ", ".join(event.headers.getlist(name))
        key_name = _CGI_HEADERS.get(lower) or "HTTP_" + name.upper().replace("-", "_")
        environ[key_name] = value
    environ["HTTP_HOST"] = mount.host
    if not environ["CONTENT_LENGTH"]:
        del environ["CONTENT_LENGTH"]
    return environ


class _Start:
    """``start_response`` of one call, and what the app gave it."""

    __slots__ = ("headers", "sized", "status", "written")

    def __init__(self) -> None:
        self.status: int | None = None
        self.headers: list[tuple[str, str]] = []
        self.sized = False  # the app gave a Content-Length: its body is not a stream
        self.written: list[bytes] = []  # through the legacy write() callable

    def __call__(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if self.status is not None and exc_info is None:
            raise RuntimeError("start_response was called twice without exc_info")
        if not isinstance(status, str):
            raise BadReply(f"the WSGI status must be a string like '200 OK', not {status!r}")
        code = status.split(" ", 1)[0]
        self.status = check_status(int(code) if code.isdigit() else code)
        try:
            pairs = [(str(n), str(v)) for n, v in headers]
        except (TypeError, ValueError):
            raise BadReply("the WSGI headers must be a list of (name, value) pairs") from None
        self.sized = any(name.lower() == "content-length" for name, _ in pairs)
        self.headers = clean_headers(pairs)
        return self.written.append


def _close(result: Iterable[bytes]) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()


class WsgiHandler:
    """A plat handler (plain, run in a worker thread) serving a WSGI app."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        # Read once the function is known (pool instances: at specialisation).
        self.key = os.environ.get("PLAT_FUNCTION", "")
        self.prefix = function_prefix()

    def __call__(self, event: Event, context: Context) -> Reply:
        start = _Start()
        result = self.app(environ_of(event, context, self.prefix, self.key), start)
        try:
            if isinstance(result, list | tuple):
                body = b"".join([*start.written, *result])
                return self._whole(start, body, result)
            chunks = iter(result)
            first = next((c for c in chunks if c), b"")
            status = start.status
            if status is None:
                raise BadReply("the WSGI app returned without calling start_response")
            if start.sized or first == b"":
                body = b"".join([*start.written, first, *chunks])
                return self._whole(start, body, result)
        except BaseException:
            _close(result)
            raise
        # Later chunks are made in other threads: in this call's context (its log tag).
        run = contextvars.copy_context().run
        head = b"".join(start.written) + first
        stream = Stream(_pieces(head, chunks), _closer(result, run), run)
        return Reply(status, start.headers, stream)

    def _whole(self, start: _Start, body: bytes, result: Iterable[bytes]) -> Reply:
        _close(result)
        if start.status is None:
            raise BadReply("the WSGI app returned without calling start_response")
        return Reply(start.status, start.headers, body)


def _pieces(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def _closer(result: Iterable[bytes], run: Callable[..., object]) -> Callable[[], Any]:
    async def close() -> None:
        await asyncio.get_running_loop().run_in_executor(None, run, _close, result)

    return close


def adapt(target: Callable[..., Any], /) -> WsgiHandler:
    return WsgiHandler(target)
