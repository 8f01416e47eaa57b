"""A real OTLP/HTTP trace receiver on loopback, for tests and the tracing benchmark.

Why: the daemon exports spans over OTLP/HTTP, so its tests must see what a real
collector would receive, over real HTTP, and must be able to make that collector
fail or stall to check that an unreachable or slow collector never slows calls.

It speaks the OTLP/HTTP wire format (opentelemetry-proto): ``POST /v1/traces``
with an ExportTraceServiceRequest as ``application/x-protobuf`` or as OTLP/JSON
(``application/json``: lowerCamelCase keys, hex trace and span ids), with
``Content-Encoding`` gzip, deflate or none. It answers an ExportTraceServiceResponse
in the request's encoding (``partial_success`` counts spans rejected for malformed
ids); a body it cannot decode gets 400, one larger than ``max_body`` (before or
after decompression) 413, another media type or encoding 415, each with a
google.rpc.Status. It is not a collector: no batching, processors or gRPC.

``python -m tests.daemon.tracing.otlp_receiver [--port N] [--count-only]`` serves
until SIGTERM and prints its URL on the first line; ``GET /stats`` answers its
counters (the benchmark's sink).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import signal
import threading
import time
import zlib
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

T = TypeVar("T")
Mode = Literal["answer", "fail", "hang"]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MAX_BODY = 4 * 1024 * 1024  # a collector's usual limit is in this range
KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")
STATUS_CODES = ("unset", "ok", "error")
_WBITS = {"gzip": 31, "x-gzip": 31, "deflate": 15}
_ID_KEYS = ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id")


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as received, in plain Python (ids in lowercase hex)."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str  # one of KINDS
    start_ns: int
    end_ns: int
    status_code: str  # one of STATUS_CODES
    status_message: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str

    @property
    def service(self) -> str | None:
        value = self.resource.get("service.name")
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class Export:
    """One POST as received: how it was encoded and what it was answered."""

    content_type: str
    encoding: str
    status: int
    spans: int
    size: int  # bytes on the wire


class Malformed(ValueError):
    """The body cannot be decoded as an ExportTraceServiceRequest (400)."""


class TooLarge(ValueError):
    """The body, before or after decompression, exceeds the limit (413)."""


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """``body`` decoded from its Content-Encoding, never more than ``limit`` bytes of it.

    A gzip bomb stops at ``limit + 1`` bytes of output rather than filling memory.
    """
    if encoding in ("", "identity"):
        return body
    inflater = zlib.decompressobj(_WBITS[encoding])
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise Malformed(f"{encoding} body does not decompress: {exc}") from None
    if len(out) > limit:
        raise TooLarge(f"the body decompresses to more than {limit} bytes")
    if not inflater.eof or inflater.unused_data:
        raise Malformed(f"{encoding} body is truncated or has trailing bytes")
    return out


def _hex_ids_to_base64(node: Any) -> None:
    """OTLP/JSON writes ids in hex where proto3 JSON expects base64: convert in place."""
    if isinstance(node, list):
        for item in node:
            _hex_ids_to_base64(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str):
                try:
                    node[key] = base64.b64encode(bytes.fromhex(value)).decode()
                except ValueError:
                    raise Malformed(f"{key} {value[:40]!r} is not hex") from None
            elif key != "attributes":  # attribute values are left as sent
                _hex_ids_to_base64(value)


def decode_request(body: bytes, content_type: str) -> ExportTraceServiceRequest:
    """The ExportTraceServiceRequest in ``body`` (already decompressed)."""
    request = ExportTraceServiceRequest()
    if content_type == PROTOBUF:
        try:
            request.ParseFromString(body)
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise Malformed(f"not an ExportTraceServiceRequest: {exc}") from None
        return request
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise Malformed(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise Malformed("the JSON body is not an object")
    _hex_ids_to_base64(data)
    try:
        json_format.ParseDict(data, request, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise Malformed(f"not an ExportTraceServiceRequest: {exc}") from None
    return request


def any_value(value: AnyValue) -> Any:
    """An attribute value in plain Python (arrays as lists, kvlists as dicts)."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return attributes(value.kvlist_value.values)
    return getattr(value, which)


def attributes(pairs: Sequence[KeyValue]) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in pairs}


def spans_of(request: ExportTraceServiceRequest) -> tuple[list[ReceivedSpan], list[str]]:
    """The request's valid spans, and why each invalid one was rejected."""
    found: list[ReceivedSpan] = []
    rejected: list[str] = []
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                if len(span.trace_id) != 16 or not any(span.trace_id):
                    rejected.append(f"span {span.name!r}: invalid trace id {span.trace_id.hex()!r}")
                    continue
                if len(span.span_id) != 8 or not any(span.span_id):
                    rejected.append(f"span {span.name!r}: invalid span id {span.span_id.hex()!r}")
                    continue
                if span.parent_span_id and len(span.parent_span_id) != 8:
                    rejected.append(f"span {span.name!r}: invalid parent span id")
                    continue
                found.append(
                    ReceivedSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex() or None,
                        name=span.name,
                        kind=KINDS[span.kind] if 0 <= span.kind < len(KINDS) else str(span.kind),
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        status_code=STATUS_CODES[span.status.code]
                        if 0 <= span.status.code < len(STATUS_CODES)
                        else str(span.status.code),
                        status_message=span.status.message,
                        attributes=attributes(span.attributes),
                        resource=resource,
                        scope=scope_spans.scope.name,
                    )
                )
    return found, rejected


def _encode(message: Message, content_type: str) -> bytes:
    if content_type == JSON:
        return json.dumps(json_format.MessageToDict(message)).encode()
    return message.SerializeToString()


class OTLPReceiver:
    """OTLP/HTTP traces on 127.0.0.1 (an ephemeral port unless ``port`` is given).

    ``spans`` holds every accepted span in arrival order, ``exports`` every POST
    (unless ``count_only``, which keeps only the counters: a long benchmark's sink).
    :meth:`fail` makes it answer 503 (or another status), :meth:`hang` makes it
    read the request and never answer, :meth:`recover` returns to normal and
    releases the requests held by :meth:`hang`. Use it from the event loop it
    was started in (see :class:`ReceiverThread` for synchronous code).
    """

    def __init__(self, *, port: int = 0, max_body: int = MAX_BODY, count_only: bool = False):
        self.port = port
        self.max_body = max_body
        self.count_only = count_only
        self.spans: list[ReceivedSpan] = []
        self.exports: list[Export] = []
        self.counters = {"exports": 0, "spans": 0, "rejected": 0, "bytes": 0, "refused": 0}
        self.mode: Mode = "answer"
        self.fail_status = 503
        self.held = 0  # requests currently held by hang()
        self._release = asyncio.Event()
        self._arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        """The base URL (what ``OTEL_EXPORTER_OTLP_ENDPOINT`` takes)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def traces_url(self) -> str:
        """The traces endpoint (what ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` takes)."""
        return f"{self.url}/v1/traces"

    def otel_env(self) -> dict[str, str]:
        """The standard OTel variables that point an SDK's exporter here."""
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.url,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        }

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        app = web.Application(client_max_size=self.max_body)
        app.router.add_post("/v1/traces", self._traces)
        app.router.add_get("/stats", self._stats)
        # auto_decompress off: the body is inflated here, under max_body (no gzip bombs).
        self._runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=1, auto_decompress=False
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        if not self.port:
            self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def fail(self, status: int = 503) -> None:
        """Answer every export with ``status`` (and record no span) until :meth:`recover`."""
        self.mode, self.fail_status = "fail", status

    def hang(self) -> None:
        """Read every export and never answer it, until :meth:`recover` or :meth:`stop`."""
        self.mode = "hang"
        if self._release.is_set():
            self._release = asyncio.Event()

    def recover(self) -> None:
        """Answer normally again and release the requests :meth:`hang` holds."""
        self.mode = "answer"
        if self._loop is not None:  # thread-safe: a ReceiverThread's user is on another thread
            self._loop.call_soon_threadsafe(self._release.set)

    async def wait_for(
        self, predicate: Callable[[list[ReceivedSpan]], T | None], timeout: float = 10.0
    ) -> T:
        """The first truthy result of ``predicate(spans so far)``, re-checked on each export.

        Raises TimeoutError (naming the spans received) after ``timeout`` seconds.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self._arrived.clear()
            result = predicate(list(self.spans))
            if result:
                return result
            try:
                await asyncio.wait_for(self._arrived.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                names = sorted({s.name for s in self.spans})[:20]
                raise TimeoutError(
                    f"no match within {timeout:g} s; {len(self.spans)} spans received, "
                    f"named {names}"
                ) from None

    def wait_for_sync(
        self, predicate: Callable[[list[ReceivedSpan]], T | None], timeout: float = 10.0
    ) -> T:
        """:meth:`wait_for` for synchronous code while another thread serves: polls."""
        deadline = time.monotonic() + timeout
        while not (result := predicate(list(self.spans))):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no match within {timeout:g} s; {len(self.spans)} spans")
            time.sleep(0.02)
        return result

    # handlers

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response({**self.counters, "held": self.held, "mode": self.mode})

    def _record(self, content_type: str, encoding: str, status: int, spans: int, size: int) -> None:
        self.counters["exports"] += 1
        self.counters["bytes"] += size
        if status >= 300:
            self.counters["refused"] += 1
        if not self.count_only:
            self.exports.append(Export(content_type, encoding, status, spans, size))

    def _status(self, status: int, code: int, message: str, content_type: str) -> web.Response:
        body = _encode(status_pb2.Status(code=code, message=message), content_type)
        return web.Response(status=status, body=body, content_type=content_type)

    async def _traces(self, request: web.Request) -> web.Response:
        content_type = request.content_type
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        if self.mode == "fail":
            self._record(content_type, encoding, self.fail_status, 0, request.content_length or 0)
            reply = PROTOBUF if content_type != JSON else JSON
            return self._status(self.fail_status, code_pb2.UNAVAILABLE, "failing", reply)
        if content_type not in (PROTOBUF, JSON) or encoding not in ("", "identity", *_WBITS):
            self._record(content_type, encoding, 415, 0, request.content_length or 0)
            return web.Response(
                status=415, text=f"unsupported media type {content_type!r} or encoding {encoding!r}"
            )
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self._record(content_type, encoding, 413, 0, request.content_length or 0)
            return self._status(413, code_pb2.RESOURCE_EXHAUSTED, "body too large", content_type)
        if self.mode == "hang":
            self.held += 1
            try:
                await self._release.wait()
            finally:
                self.held -= 1
            self._record(content_type, encoding, 503, 0, len(body))
            return self._status(503, code_pb2.UNAVAILABLE, "released", content_type)
        try:
            message = decode_request(decompress(body, encoding, self.max_body), content_type)
        except TooLarge as exc:
            self._record(content_type, encoding, 413, 0, len(body))
            return self._status(413, code_pb2.RESOURCE_EXHAUSTED, str(exc), content_type)
        except Malformed as exc:
            self._record(content_type, encoding, 400, 0, len(body))
            return self._status(400, code_pb2.INVALID_ARGUMENT, str(exc), content_type)
        response = ExportTraceServiceResponse()
        if self.count_only:
            accepted = sum(len(ss.spans) for rs in message.resource_spans for ss in rs.scope_spans)
        else:
            spans, rejected = spans_of(message)
            self.spans += spans
            accepted = len(spans)
            if rejected:
                response.partial_success.rejected_spans = len(rejected)
                response.partial_success.error_message = "; ".join(rejected)[:1000]
                self.counters["rejected"] += len(rejected)
        self.counters["spans"] += accepted
        self._record(content_type, encoding, 200, accepted, len(body))
        self._arrived.set()
        return web.Response(body=_encode(response, content_type), content_type=content_type)


class ReceiverThread:
    """An :class:`OTLPReceiver` serving from its own thread and event loop, for
    synchronous code (a daemon fixture, a benchmark): ``with ReceiverThread() as
    receiver:`` gives the receiver; use its ``wait_for_sync``."""

    def __init__(self, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.server = OTLPReceiver(**kwargs)

    def __enter__(self) -> OTLPReceiver:
        self._thread.start()
        self._call(self.server.start())
        return self.server

    def __exit__(self, *exc: object) -> None:
        self._call(self.server.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)


async def _serve(port: int, count_only: bool, max_body: int) -> None:
    receiver = OTLPReceiver(port=port, count_only=count_only, max_body=max_body)
    await receiver.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(receiver.url, flush=True)
    try:
        await stop.wait()
    finally:
        await receiver.stop()
    print(json.dumps(receiver.counters), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="An OTLP/HTTP trace receiver on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-body", type=int, default=MAX_BODY)
    parser.add_argument("--count-only", action="store_true", help="keep counters, not spans")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.port, args.count_only, args.max_body))


if __name__ == "__main__":
    main()
