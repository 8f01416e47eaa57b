"""Sends spans over OTLP/HTTP with the OpenTelemetry SDK, when the standard
variables ask for it (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, with ``OTEL_EXPORTER_OTLP_HEADERS``,
``..._TIMEOUT``, ``..._COMPRESSION`` and the ``OTEL_BSP_*`` batch settings).

The gateway only appends a sampled call's record to a bounded queue. A task turns
the queue into SDK spans a few times a second and hands them to the SDK's batch
processor, whose own thread encodes and posts them; its queue is bounded too, so a
collector that is slow or away costs dropped spans (counted by the SDK's log), never
a slower or failed call.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Iterable, Mapping

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from plat import __version__
from plat.daemon.store import Invocation, SpanRecord
from plat.daemon.tracing.spans import GATEWAY_SERVICE, Span, call_spans, function_span
from plat.daemon.tracing.tracer import disabled

log = logging.getLogger(__name__)

DRAIN_INTERVAL = 0.5
MAX_QUEUED = 20_000  # calls and spans waiting to become SDK spans
_KINDS = {
    "server": SpanKind.SERVER,
    "client": SpanKind.CLIENT,
    "internal": SpanKind.INTERNAL,
    "producer": SpanKind.PRODUCER,
    "consumer": SpanKind.CONSUMER,
}
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_SCOPE = InstrumentationScope("plat", __version__)


def wanted(environ: Mapping[str, str]) -> str | None:
    """Why spans should be exported (the endpoint variable's value), or None."""
    if disabled(environ):
        return None
    exporters = environ.get("OTEL_TRACES_EXPORTER", "otlp").replace(" ", "").split(",")
    if "otlp" not in exporters:
        return None
    return environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )


def readable(span: Span, resource: Resource) -> ReadableSpan:
    parent = None
    if span.parent_id:
        # A server span's parent is the caller's (remote); the others' are local.
        remote = span.kind == "server"
        parent = SpanContext(int(span.trace_id, 16), int(span.parent_id, 16), remote, _SAMPLED)
    return ReadableSpan(
        name=span.name,
        context=SpanContext(int(span.trace_id, 16), int(span.span_id, 16), False, _SAMPLED),
        parent=parent,
        resource=resource,
        attributes=span.attributes,
        kind=_KINDS.get(span.kind, SpanKind.INTERNAL),
        status=_status(span),
        start_time=int(span.start * 1e9),
        end_time=int(span.end * 1e9),
        instrumentation_scope=_SCOPE,
    )


def _status(span: Span) -> Status:
    if not span.error:
        return Status(StatusCode.UNSET)
    description = span.attributes.get("otel.status_description")
    return Status(StatusCode.ERROR, description if isinstance(description, str) else None)


class Exporter:
    """Queues calls and function spans; ``start`` begins the drain task, ``close``
    sends what is left (bounded by the exporter's timeout)."""

    def __init__(self, endpoint: str, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        self.endpoint = endpoint
        protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
        )
        if protocol != "http/protobuf":
            log.warning("OTLP protocol %r is not supported; exporting with http/protobuf", protocol)
        self.processor = BatchSpanProcessor(OTLPSpanExporter())
        # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES apply to the gateway's spans.
        self.resource = Resource.create({"service.name": GATEWAY_SERVICE})
        self._functions: dict[str, Resource] = {}
        self._calls: deque[Invocation] = deque()
        self._spans: deque[SpanRecord] = deque()
        self.dropped = 0
        self._task: asyncio.Task[None] | None = None

    def offer(self, record: Invocation) -> None:
        """A sampled call (hot path: an append)."""
        self._calls.append(record)
        if len(self._calls) > MAX_QUEUED:
            self._calls.popleft()
            self.dropped += 1

    def offer_span(self, record: SpanRecord) -> None:
        self._spans.append(record)
        if len(self._spans) > MAX_QUEUED:
            self._spans.popleft()
            self.dropped += 1

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain(), name="otlp-export")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.drain()
        # The SDK's shutdown sends what it holds, waiting for its exporter's timeout
        # at most: in a thread, so the rest of the daemon stops meanwhile.
        await asyncio.to_thread(self.processor.shutdown)

    async def _drain(self) -> None:
        while True:
            await asyncio.sleep(DRAIN_INTERVAL)
            try:
                self.drain()
            except Exception:
                log.exception("preparing spans for export failed")

    def drain(self) -> None:
        calls, spans = self._calls, self._spans
        self._calls, self._spans = deque(), deque()
        for record in calls:
            try:
                self._hand(call_spans(record), self.resource)
            except Exception:  # one bad record must not lose the rest of the batch
                log.exception("could not export the spans of call %s", record.call_id)
        for span_record in spans:
            try:
                span = function_span(span_record)
                self._hand([span], self._resource_of(span_record.function, span))
            except Exception:
                log.exception("could not export span %s", span_record.span_id)

    def _hand(self, spans: Iterable[Span], resource: Resource) -> None:
        for span in spans:
            self.processor.on_end(readable(span, resource))

    def _resource_of(self, key: str, span: Span) -> Resource:
        resource = self._functions.get(key)
        if resource is None:
            if len(self._functions) > 10_000:
                self._functions.clear()
            resource = self._functions[key] = Resource(
                {"service.name": span.service, "plat.tenant": span.tenant}
            )
        return resource
