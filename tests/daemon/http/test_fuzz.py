"""Property tests of plat.daemon.http.server's request parsing, with h11 as the oracle.

Generated request heads (request lines, header names and values, framing headers,
chunked bodies), pipelined one to three per connection and sent in pieces, go to
the real server over loopback (an echo handler, on its own loop in a thread) and,
byte for byte, to an h11 server connection. The properties:

- no crash: the server logs no error and its loop reports no exception;
- no hang: every answer arrives within ANSWER_TIMEOUT, and a request that never
  completes is answered 408 (or, with no byte sent, closed) within its deadline;
- every refusal is a 4xx or 5xx with a JSON body, and the connection closes after it;
- every request h11 accepts reaches the handler with the same method, target and
  body, answered in order, except where plat is deliberately stricter (STRICTER).

Where plat is deliberately stricter than h11 (each one checked by ``stricter``):

- only HTTP/1.0 and HTTP/1.1 are served: h11 takes any ``HTTP/d.d``; plat answers
  505, and 400 for HTTP/0.9 (as nginx does);
- CONNECT is 405: the server tunnels nothing;
- the target ``*`` is 400 unless the method is OPTIONS (RFC 9112, section 3.2.4);
- methods llhttp does not know (any token, for h11) are 400;
- a repeated Content-Length, even with the same value, and Content-Length with
  Transfer-Encoding, are 400 (llhttp's strict mode; RFC 9112 section 6.3 allows a
  server to reject both);
- a header value with a control byte other than tab (0x01-0x08, 0x0e-0x1f, DEL)
  is 400: RFC 9110's field-vchar excludes them, h11 only refuses NUL, CR and LF;
- a target that is neither a path (``/...``), ``*`` nor an absolute URL is 400
  (llhttp's URL parser; h11 takes any run of visible characters).

Where plat is looser than h11 (accepts what h11 refuses; ``looser``):

- ``Transfer-Encoding: gzip, chunked`` (chunked last, as RFC 9112 requires): llhttp
  reads the chunked body; h11 knows no coding but chunked;
- empty lines (CR, LF) before a request line are skipped, as RFC 9112 (section
  2.2) says a server should; h11 refuses them.

Fast by default (under ~15 s); ``PLAT_FUZZ_PROFILE=long`` runs many more examples
(tests/fuzzing.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st

from plat.daemon.http.message import Request, Response
from plat.daemon.http.rules import MAX_HEAD
from plat.daemon.http.server import HttpServer
from tests.fuzzing import fuzz_settings

ANSWER_TIMEOUT = 5.0
HEAD_TIMEOUT = BODY_TIMEOUT = 0.4

# Control bytes h11 lets through in a header value and llhttp does not (RFC 9110's
# field-vchar excludes them; both refuse NUL, CR and LF, both accept tab).
CONTROL = frozenset([*range(0x01, 0x09), *range(0x0E, 0x20), 0x7F])
KNOWN_METHODS = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "PURGE"]
UNKNOWN_METHODS = ["BREW", "get", "X-CUSTOM", "FOO!"]


# the server under test, in a thread


class EchoServer:
    """HttpServer with a handler that echoes method, target and body in ``X-Echo``."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.errors: list[str] = []
        self.loop.set_exception_handler(lambda _loop, ctx: self.errors.append(str(ctx)))
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.server: HttpServer = self._run(self._start())

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def _start(self) -> HttpServer:
        server = HttpServer(
            self.echo,
            keepalive_timeout=5.0,
            linger_timeout=1.0,
            head_timeout=HEAD_TIMEOUT,
            body_timeout=BODY_TIMEOUT,
        )
        await server.start("127.0.0.1", 0)
        return server

    @staticmethod
    async def echo(request: Request, response: Response) -> None:
        body = await request.read(1 << 20)
        echo = {
            "method": request.method.decode("latin-1"),
            "target": request.target.decode("latin-1"),
            "body": body.hex(),
        }
        response.send(200, [b"X-Echo: " + json.dumps(echo).encode() + b"\r\n"], b"ok")

    def close(self) -> None:
        self._run(self.server.close(grace=1.0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class ErrorLog(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.ERROR)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(record.getMessage())


@pytest.fixture(scope="module")
def echo_server() -> Iterator[EchoServer]:
    server = EchoServer()
    handler = ErrorLog(server.errors)
    logger = logging.getLogger("plat.daemon")
    logger.addHandler(handler)
    yield server
    logger.removeHandler(handler)
    server.close()


# generated requests


@dataclass
class Message:
    """One request as bytes, and what it was made of (for the rules h11 does not know)."""

    data: bytes
    parts: dict[str, Any] = field(default_factory=dict)


TOKEN = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
PATH_PIECES = [*"abcXYZ019-._~!$&'()*+,;=:@/?%", "%20", "%zz", *'"{}|\\^`<>[]#', "\x7f", "\x80"]
VALUE_CHARS = st.sampled_from(
    [*"abc XYZ 019 -_.,;:=/\"'()<>@[]{}?!*", "\t", "\x80", "\xff", "\x00", "\x01", "\x7f", "\r"]
)


@st.composite
def targets(draw: st.DrawFn) -> str:
    path = "/" + "".join(draw(st.lists(st.sampled_from(PATH_PIECES), max_size=8)))
    return str(
        draw(
            st.one_of(
                st.just(path),
                st.just(path),
                st.just("*"),
                st.just("http://example.test" + path),
                st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E)).map(
                    lambda rest: "!" + rest  # neither a path, *, nor a URL
                ),
            )
        )
    )


@st.composite
def headers(draw: st.DrawFn) -> list[tuple[str, str]]:
    names = st.one_of(
        st.sampled_from(
            ["X-A", "Accept", "User-Agent", "Cookie", "X-Plat-Probe", "Upgrade", "Expect"]
        ),
        st.text(TOKEN, min_size=1, max_size=12),
        st.sampled_from(["Bad Name", "X\x00Y", "X-\x80", ""]),
    )
    values = st.one_of(
        st.text(st.sampled_from("abcXYZ019-_./ ;=,"), max_size=20),
        st.text(VALUE_CHARS, max_size=12),
        st.sampled_from(["100-continue", "websocket", "1", "  padded  "]),
    )
    out = draw(st.lists(st.tuples(names, values), max_size=4))
    hosts = draw(st.sampled_from([1, 1, 1, 1, 0, 2]))
    out[:0] = [("Host", "example.test")] * hosts
    if draw(st.booleans()):
        out.append(("Connection", draw(st.sampled_from(["keep-alive", "close", "Upgrade"]))))
    return out


@st.composite
def framed_bodies(draw: st.DrawFn) -> tuple[list[tuple[str, str]], bytes, str]:
    """Framing headers and the body as sent: (headers, bytes, kind)."""
    body = draw(st.binary(max_size=40))
    kind = draw(
        st.sampled_from(
            [
                *["none", "none", "length", "length", "chunked", "chunked", "bad-length"],
                *["two-lengths", "length-and-chunked", "other-coding", "bad-chunk"],
            ]
        )
    )
    if kind == "none":
        return [], b"", kind
    if kind == "length":
        return [("Content-Length", str(len(body)))], body, kind
    if kind == "bad-length":
        value = draw(st.sampled_from(["abc", "-1", "1 1", "+5", "0x10", ""]))
        return [("Content-Length", value)], body, kind
    if kind == "two-lengths":
        return [("Content-Length", str(len(body)))] * 2, body, kind
    sizes = draw(st.lists(st.integers(1, 12), max_size=4))
    chunks = []
    rest = body
    for size in sizes:
        piece, rest = rest[:size], rest[size:]
        if piece:
            hexsize = draw(st.sampled_from(["%x", "%X", "%x;ext=1"])) % len(piece)
            chunks.append(hexsize.encode() + b"\r\n" + piece + b"\r\n")
    if kind == "bad-chunk":
        chunks.append(draw(st.sampled_from([b"zz\r\n", b"5\r\nab\r\n", b"1\r\nab\r\n"])))
    trailer = draw(st.sampled_from([b"", b"", b"X-Trailer: 1\r\n"]))
    sent = b"".join(chunks) + b"0\r\n" + trailer + b"\r\n"
    coding = {
        "chunked": "chunked",
        "bad-chunk": "chunked",
        "other-coding": draw(
            st.sampled_from(["gzip", "gzip, chunked", "chunked, gzip", "Chunked"])
        ),
    }.get(kind, "chunked")
    framing = [("Transfer-Encoding", coding)]
    if kind == "length-and-chunked":
        framing.append(("Content-Length", str(len(sent))))
    return framing, sent, kind


@st.composite
def messages(draw: st.DrawFn) -> Message:
    if draw(st.integers(0, 19)) == 0:  # now and then, bytes with no shape at all
        return Message(draw(st.binary(min_size=1, max_size=60)) + b"\r\n\r\n")
    method = draw(st.sampled_from(KNOWN_METHODS * 3 + UNKNOWN_METHODS + ["CONNECT"]))
    target = draw(targets())
    version = draw(
        st.sampled_from(
            ["HTTP/1.1"] * 8
            + ["HTTP/1.0", "HTTP/0.9", "HTTP/2.0", "HTTP/1.2", "HTTP/3.0", "HTTP/1.x"]
            + ["http/1.1", "HTTP/11", ""]
        )
    )
    fields = draw(headers())
    framing, body, kind = draw(framed_bodies())
    line = f"{method} {target} {version}" if version else f"{method} {target}"
    fields = fields + framing
    head = line + "\r\n" + "".join(f"{name}: {value}\r\n" for name, value in fields) + "\r\n"
    return Message(head.encode("latin-1") + body, {"kind": kind})


@st.composite
def valid_requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["GET", "POST", "PUT"]))
    body = draw(st.binary(min_size=1, max_size=30)) if method != "GET" else b""
    framing = ""
    if body:
        framing = draw(
            st.sampled_from([f"Content-Length: {len(body)}\r\n", "Transfer-Encoding: chunked\r\n"])
        )
        if framing.startswith("Transfer"):
            body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    head = f"{method} /x HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n{framing}\r\n"
    return head.encode() + body


# the oracle


@dataclass
class Parsed:
    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""


def h11_reads(data: bytes) -> tuple[list[Parsed], str]:
    """What h11, as a server answering each request 200, makes of ``data``: the requests
    it accepts, in order, and how it ends: "end" (nothing left), "error", "incomplete"
    or "closed" (the connection closes after the last request)."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    conn.receive_data(data)
    out: list[Parsed] = []
    current: Parsed | None = None
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            return out, "error"
        if event is h11.NEED_DATA:
            return out, ("end" if current is None and not conn.trailing_data[0] else "incomplete")
        if isinstance(event, h11.Request):
            raw = [(bytes(n), bytes(v)) for n, v in event.headers.raw_items()]
            current = Parsed(event.method, event.target, event.http_version, raw)
        elif isinstance(event, h11.Data):
            assert current is not None
            current.body += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            assert current is not None
            out.append(current)
            current = None
            if conn.their_state is h11.MIGHT_SWITCH_PROTOCOL and out[-1].method == b"CONNECT":
                return out, "closed"
            conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
            conn.send(h11.EndOfMessage())
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return out, "closed"
            conn.start_next_cycle()
        elif event is h11.PAUSED:  # an Upgrade request's answer is pending
            continue


def stricter(parsed: Parsed, message: Message) -> set[int] | None:
    """The statuses plat refuses a request h11 accepts with (see the module's doc).
    ``message`` is what it was made from (h11 merges repeated Content-Lengths)."""
    names = [name.lower() for name, _ in parsed.headers]
    if parsed.version not in (b"1.0", b"1.1"):
        return {400, 505}
    if parsed.method == b"CONNECT":
        return {400, 405}  # 400 when llhttp refuses the target already
    if parsed.method.decode() not in KNOWN_METHODS:
        return {400}
    if parsed.target == b"*" and parsed.method != b"OPTIONS":
        return {400}
    if message.parts.get("kind") == "two-lengths" or (
        b"content-length" in names and b"transfer-encoding" in names
    ):
        return {400}
    if any(CONTROL & set(value) for _, value in parsed.headers):
        return {400}
    if not parsed.target.startswith((b"/", b"http://example.test/")) and parsed.target != b"*":
        return {400}
    return None


def looser(message: Message) -> bool:
    """Whether plat may serve a request h11 refuses (see the module's doc)."""
    head = message.data.partition(b"\r\n\r\n")[0].lower()
    return message.parts.get("kind") == "other-coding" and head.rstrip().endswith(b"gzip, chunked")


# talking to the server


@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


class Client:
    """A socket to the server and an h11 client connection that reads its answers."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = h11.Connection(h11.CLIENT)

    def send(self, data: bytes, cuts: list[int]) -> None:
        start = 0
        for cut in sorted(cuts):
            if start < cut < len(data):
                self.sock.sendall(data[start:cut])
                start = cut
        self.sock.sendall(data[start:])

    def answer(self, method: bytes = b"GET", timeout: float = ANSWER_TIMEOUT) -> Answer | None:
        """The next answer (read as the answer to ``method``), or None when the
        connection closed first; raises TimeoutError after ``timeout``."""
        conn = self.conn
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        if conn.our_state is h11.IDLE:
            conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
            conn.send(h11.EndOfMessage())
        deadline = time.monotonic() + timeout
        status, fields, body = 0, {}, b""
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                return None  # closed before a whole answer
            if event is h11.NEED_DATA:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no answer within {timeout} s")
                self.sock.settimeout(left)
                try:
                    data = self.sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                conn.receive_data(data)
            elif isinstance(event, h11.Response):
                status = event.status_code
                fields = {bytes(n): bytes(v) for n, v in event.headers}
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return Answer(status, fields, body)
            elif isinstance(event, h11.ConnectionClosed):
                return None

    def refusal(self) -> Answer | None:
        """An answer read without h11 (a refusal to HEAD has no body; h11 would have
        to be told the method of a request it never parsed), or None when the
        connection closed first. A refusal closes the connection: its body is what
        comes before the end."""
        data = bytes(self.conn.trailing_data[0])
        self.sock.settimeout(ANSWER_TIMEOUT)
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip()
        if status >= 400:
            while chunk := self.sock.recv(65536):
                body += chunk
        return Answer(status, fields, body)

    def closes(self) -> bool:
        self.sock.settimeout(ANSWER_TIMEOUT)
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        return True

    def close(self) -> None:
        self.sock.close()


def assert_refusal(
    answer: Answer | None, statuses: set[int] | None = None, *, head: bool = False
) -> None:
    """A 4xx or 5xx with a JSON body (which an answer to HEAD may leave out)."""
    assert answer is not None, "closed without an answer"
    assert 400 <= answer.status < 600, answer
    if statuses is not None:
        assert answer.status in statuses, answer
    assert answer.headers[b"content-type"] == b"application/json; charset=utf-8", answer
    if head and not answer.body:
        return
    payload = json.loads(answer.body)
    assert set(payload) == {"error", "message"}, payload


def assert_no_errors(server: EchoServer) -> None:
    errors, server.errors[:] = list(server.errors), []
    assert not errors, errors


# the properties


@fuzz_settings("http-heads", fast=250, long=5000)
@given(batch=st.lists(messages(), min_size=1, max_size=3), cuts=st.lists(st.integers(1, 300)))
def test_heads_are_accepted_and_refused_as_h11_does(
    echo_server: EchoServer, batch: list[Message], cuts: list[int]
) -> None:
    data = b"".join(message.data for message in batch)
    parsed, ending = h11_reads(data)
    client = Client(echo_server.server.port)
    try:
        client.send(data, cuts)
        # h11 stops at the first message it refuses: each request it accepts is the
        # message at its place in the batch
        for request, message in zip(parsed, batch, strict=False):
            refused = stricter(request, message)
            if refused is not None:
                assert_refusal(client.refusal(), refused, head=request.method == b"HEAD")
                assert client.closes()
                return
            answer = client.answer(request.method)
            assert answer is not None, f"closed instead of answering {request}"
            assert answer.status == 200, (request, answer)
            echo = json.loads(answer.headers[b"x-echo"])
            assert echo["method"].encode("latin-1") == request.method
            assert echo["target"].encode("latin-1") == request.target
            assert bytes.fromhex(echo["body"]) == request.body
        if ending == "error":
            rest = batch[len(parsed)] if len(parsed) < len(batch) else None
            if rest is not None and not rest.data.strip(b"\r\n"):
                return  # empty lines before a request line: plat skips them (looser)
            answer = client.refusal()
            if answer is not None and answer.status == 200:
                # plat served what h11 refused: only where it is documented as looser
                assert rest is not None and looser(rest), (batch, answer)
                return
            assert_refusal(answer, head=rest is not None and rest.data.startswith(b"HEAD "))
            assert client.closes()
    finally:
        client.close()
        assert_no_errors(echo_server)


@fuzz_settings("http-incomplete", fast=12, long=100)
@given(request=valid_requests(), share=st.floats(0.0, 0.999))
def test_a_request_that_never_completes_ends_within_its_deadline(
    echo_server: EchoServer, request: bytes, share: float
) -> None:
    sent = request[: int(len(request) * share)]
    client = Client(echo_server.server.port)
    try:
        started = time.monotonic()
        client.send(sent, [])
        limit = HEAD_TIMEOUT + BODY_TIMEOUT + 2.0
        answer = client.answer(timeout=limit)
        if sent:
            assert_refusal(answer, {408})
        else:
            assert answer is None  # nothing was asked: closed without a word
        assert client.closes()
        assert time.monotonic() - started < limit
    finally:
        client.close()
        assert_no_errors(echo_server)


@fuzz_settings("http-pipelined", fast=25, long=300)
@given(
    batch=st.lists(valid_requests(), min_size=2, max_size=40), cuts=st.lists(st.integers(1, 4000))
)
def test_pipelined_valid_requests_are_all_answered_in_order(
    echo_server: EchoServer, batch: list[bytes], cuts: list[int]
) -> None:
    data = b"".join(batch)
    parsed, ending = h11_reads(data)
    assert ending == "end" and len(parsed) == len(batch)
    client = Client(echo_server.server.port)
    try:
        client.send(data, cuts)
        for request in parsed:
            answer = client.answer(request.method)
            assert answer is not None and answer.status == 200
            assert bytes.fromhex(json.loads(answer.headers[b"x-echo"])["body"]) == request.body
    finally:
        client.close()
        assert_no_errors(echo_server)
