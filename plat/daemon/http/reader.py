"""Reading requests off a client connection: bytes in, ``Request`` objects out.

``RequestReader`` is the parsing half of the server's connection protocol. It
feeds what arrives to httptools (llhttp), keeps each head under ``MAX_HEAD``,
builds a ``Request`` once a head is complete and feeds it its body. A request
that arrives while another is served waits in a queue; a large read is parsed a
slice at a time and no further while ``QUEUE_AHEAD`` requests wait, so
pipelining cannot pile up parsed requests. Reading pauses while the queue is
full or while a body is buffered past ``BODY_HIGH_WATER`` (message.py).

Upgrade requests are served as plain HTTP/1.1, body included: the reader
ignores ``Upgrade`` (RFC 9110, section 7.8). What it refuses (rules.py) goes to
``_refuse``; serving, refusing and closing are the subclass's (connection.py).
"""

from __future__ import annotations

import asyncio
from collections import deque

import httptools

from plat.daemon.http.message import Request, Response
from plat.daemon.http.rules import (
    BAD_CODING,
    HEAD_TOO_LARGE,
    MAX_HEAD,
    Refusal,
    check_head,
    parser_refusal,
)

# Reads larger than this are parsed a slice at a time; parsing stops while this
# many requests (or more) are queued, the rest of the read is kept as bytes.
FEED_SLICE = 16 * 1024
QUEUE_AHEAD = 64
# Headers noted on the Request (framing, and what most handlers ask for).
_NOTED = frozenset(
    {b"content-length", b"transfer-encoding", b"expect", b"host", b"authorization", b"upgrade"}
)
# A request line's bytes besides the target (method, spaces, version, CRLF), and
# a header line's besides its name and value (": ", CRLF), for MAX_HEAD.
_LINE_OVERHEAD = 16


class _Spent:
    """No callbacks: the protocol of the parser a closed connection keeps."""


# A connection's parser holds its bound callbacks, a reference cycle with the
# connection that only a full garbage collection frees (rare with a long-lived
# heap: a burst of 1,000 clients stayed in memory for minutes). A closed
# connection swaps its parser for this one, and is freed as soon as it is dropped.
SPENT_PARSER = httptools.HttpRequestParser(_Spent())
_HEADER_OVERHEAD = 4


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; the refusal is in ``_refusal``."""


class RequestReader(asyncio.Protocol):
    """Parses requests from ``data_received``; the subclass serves them.

    The subclass sets ``transport`` and ``_active`` (the request being served) and
    provides ``_begin`` (serve this request now), ``_next`` (the served request
    is done, its body read: serve what waits) and ``_refuse``; it is the
    ``Connection`` the requests are bound to.
    """

    transport: asyncio.Transport | None
    _active: tuple[Request, Response] | None

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.closed = False
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._head_partial = 0  # bytes of reads inside a header line llhttp still holds
        self._in_head = False
        self._messages = 0  # request heads begun
        self._reads = 0
        self._parsing: Request | None = None
        self._queue: deque[Request | Refusal] = deque()
        self._backlog = b""
        self._feeding = False
        self._refusal: Refusal | None = None
        self._upgrading: Request | None = None
        self._synthetic = False
        self._paused_body = False
        self._paused_queue = False
        self._stop_reading = False

    # served by the subclass

    def _begin(self, request: Request) -> None:
        raise NotImplementedError

    def _next(self) -> None:
        raise NotImplementedError

    def _refuse(self, refusal: Refusal) -> None:
        raise NotImplementedError

    # asyncio.Protocol

    def data_received(self, data: bytes) -> None:
        if self._stop_reading or self.closed:
            return
        self._reads += 1
        if len(data) > FEED_SLICE or self._backlog:
            self._feed_sliced(data)
        else:
            self._feed(data)

    def eof_received(self) -> bool | None:
        return None  # half-closed clients are treated as gone (as aiohttp does)

    # parsing

    def _feed(self, data: bytes | memoryview) -> None:
        while True:
            in_head = self._in_head
            size = self._head_size
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade as exc:
                data = data[int(exc.args[0]) :]
                self._upgraded()
                if data and not self._stop_reading:
                    continue
                return
            except httptools.HttpParserError as exc:
                refusal, self._refusal = self._refusal, None
                self._refuse(refusal or parser_refusal(exc))
                return
            break
        if in_head and self._in_head:
            if self._head_size != size:
                self._head_partial = 0
            else:  # the whole read is inside one header line that llhttp still holds
                self._head_partial += len(data)
                if self._head_size + self._head_partial > MAX_HEAD:
                    self._refuse(HEAD_TOO_LARGE)

    def _feed_sliced(self, data: bytes) -> None:
        """Parse a slice at a time; stop while QUEUE_AHEAD requests wait (reading is
        paused then) and keep the rest as bytes, fed again by ``_next``."""
        if self._backlog:
            data, self._backlog = self._backlog + data, b""
        view = memoryview(data)
        self._feeding = True
        try:
            for start in range(0, len(view), FEED_SLICE):
                if len(self._queue) >= QUEUE_AHEAD:
                    self._backlog = bytes(view[start:])
                    return
                self._feed(view[start : start + FEED_SLICE])
                if self._stop_reading or self.closed:
                    return
        finally:
            self._feeding = False

    def _upgraded(self) -> None:
        """llhttp stopped after an upgrade request's head. The upgrade is ignored: the
        request is served as HTTP/1.1, its body (which llhttp skips) included, by a
        new parser that first takes a made-up head with the body's framing."""
        request, self._upgrading = self._upgrading, None
        self.parser = httptools.HttpRequestParser(self)
        if request is not None and not request.body_done:
            if request.chunked:
                framing = b"Transfer-Encoding: chunked"
            else:
                framing = b"Content-Length: %d" % (request.content_length or 0)
            self._synthetic = True
            self.parser.feed_data(b"PUT / HTTP/1.1\r\n" + framing + b"\r\n\r\n")

    def _too_large(self) -> None:
        self._refusal = HEAD_TOO_LARGE
        raise _Refused()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._in_head = True
        self._messages += 1
        self._head_size = _LINE_OVERHEAD
        self._head_partial = 0
        self._url = b""
        self._headers = []

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if self._head_size > MAX_HEAD:
            self._too_large()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._head_size += len(name) + len(value) + _HEADER_OVERHEAD
        if self._head_size > MAX_HEAD:
            self._too_large()

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._synthetic:  # the made-up head of _upgraded: the body goes on as before
            self._synthetic = False
            return
        parser = self.parser
        method = parser.get_method()
        version = parser.get_http_version()
        headers = self._headers
        hosts = 0
        upgrade = False
        content_length: int | None = None
        chunked = expects_continue = False
        codings = b""
        host = authorization = None
        for name, value in headers:
            lower = name.lower()
            if lower in _NOTED:
                if lower == b"content-length":
                    content_length = int(value)
                elif lower == b"transfer-encoding":
                    chunked = True
                    codings = value
                elif lower == b"host":
                    hosts += 1
                    if host is None:
                        host = value
                elif lower == b"authorization":
                    if authorization is None:
                        authorization = value
                elif lower == b"upgrade":
                    upgrade = True
                elif value.lower() == b"100-continue" and version == "1.1":
                    expects_continue = True
        url = self._url
        if hosts != 1 or version != "1.1" or method == b"CONNECT" or url == b"*":
            refusal = check_head(method, url, version, hosts)
            if refusal is not None:
                self._refusal = refusal._replace(head_only=method == b"HEAD")
                raise _Refused()
        request = Request(
            self,  # type: ignore[arg-type]  # the subclass completes the Connection protocol
            method,
            url,
            version,
            headers,
            parser.should_keep_alive(),
        )
        request.host = host
        request.authorization = authorization
        request.content_length = content_length
        request.chunked = chunked
        request.expects_continue = expects_continue
        if not request.has_body:
            request.body_done = True
        if upgrade and parser.should_upgrade():
            # llhttp stops at an upgrade request's head, before it checks the framing.
            if chunked and codings.rsplit(b",", 1)[-1].strip().lower() != b"chunked":
                self._refusal = BAD_CODING._replace(head_only=method == b"HEAD")
                raise _Refused()
            self._upgrading = request
        self._parsing = request
        if self._active is None and not self._queue:
            self._begin(request)
        else:
            self._queue.append(request)
            self._set_paused(queue=True)

    def on_body(self, body: bytes) -> None:
        if self._parsing is not None:
            self._parsing.feed_body(body)

    def on_message_complete(self) -> None:
        request = self._parsing
        if request is None or (request is self._upgrading and not request.body_done):
            return  # llhttp skips an upgrade request's body: _upgraded reads it
        self._parsing = None
        request.end_body()
        if request.discarding and self._active is None:
            self._next()  # the handler finished earlier; the body is now read

    # pausing: while a body is buffered past its high-water mark, or requests wait

    def body_buffered(self) -> None:
        self._set_paused(body=True)

    def body_drained(self) -> None:
        if self._paused_body:
            self._set_paused(body=False)

    def _set_paused(self, *, body: bool | None = None, queue: bool | None = None) -> None:
        was = self._paused_body or self._paused_queue
        if body is not None:
            self._paused_body = body
        if queue is not None:
            self._paused_queue = queue
        now = self._paused_body or self._paused_queue
        if now != was and self.transport is not None and not self.closed:
            if now:
                self.transport.pause_reading()
            elif not self._stop_reading:
                self.transport.resume_reading()
