"""Handler spans: what a function records with OpenTelemetry, as ``plat-span:`` lines.

Imported only when the function has OpenTelemetry (see platshim.tracing): it
imports the SDK. ``install`` sets a global TracerProvider whose processor writes
each finished span as one line on fd 1, ``plat-span:`` and compact JSON, which
plat's log collector takes for a span rather than a log line:

    {"trace_id", "span_id", "parent_id" (or null), "name", "kind", "start", "end"
     (ns since the epoch), "error", "status" (its description), "attributes"}

A line is at most MAX_LINE_BYTES: the largest attributes are dropped first, then
the status description is cut, then the name (last: it names the span in a
waterfall). Around each handler call the
request's W3C context is attached (``HandlerSpans.attach``), so a span the
handler starts is a child of the gateway's "upstream" span.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context as OtelContext
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.trace import StatusCode

from platshim.output import keep_line_state, log_error, write_raw_line

PREFIX = "plat-span:"
# The whole line in bytes: prefix, JSON and newline.
MAX_LINE_BYTES = 16 * 1024


def _attribute(value: Any) -> Any:
    """An attribute value as JSON can carry it (NaN and infinities become text)."""
    if isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, list | tuple):
        return [_attribute(item) for item in value]
    return str(value)


def _line(fields: Mapping[str, Any]) -> str:
    # ASCII only: a lone surrogate in a name cannot break the encoding, and the
    # length of the text is its length in bytes.
    return PREFIX + json.dumps(fields, separators=(",", ":")) + "\n"


def _entry_size(key: str, value: Any) -> int:
    # `"key":value,` within the attributes object.
    return len(json.dumps({key: value}, separators=(",", ":"))) - 1


def encode_span(fields: dict[str, Any]) -> bytes:
    """The ``plat-span:`` line of ``fields`` (changed in place to fit MAX_LINE_BYTES)."""
    line = _line(fields)
    excess = len(line) - MAX_LINE_BYTES
    attributes: dict[str, Any] = fields["attributes"]
    if excess > 0 and attributes:
        sizes = {key: _entry_size(key, value) for key, value in attributes.items()}
        by_size = sorted(sizes, key=sizes.__getitem__)
        while excess > 0 and by_size:
            key = by_size.pop()
            del attributes[key]
            excess -= sizes[key]
        line = _line(fields)
        excess = len(line) - MAX_LINE_BYTES
    for name in ("status", "name"):
        # Each character cut shortens the JSON by at least one byte.
        while excess > 0 and fields[name]:
            text: str = fields[name]
            fields[name] = text[: max(0, len(text) - excess)]
            line = _line(fields)
            excess = len(line) - MAX_LINE_BYTES
    return line.encode("ascii")


def span_fields(span: ReadableSpan) -> dict[str, Any]:
    """The JSON fields of a finished span, as plat's collector reads them."""
    context = span.get_span_context()
    parent = span.parent
    start = span.start_time or 0
    return {
        "trace_id": format(context.trace_id if context else 0, "032x"),
        "span_id": format(context.span_id if context else 0, "016x"),
        "parent_id": format(parent.span_id, "016x") if parent is not None else None,
        "name": str(span.name),
        "kind": span.kind.name.lower(),
        "start": start,
        "end": span.end_time or start,
        "error": span.status.status_code is StatusCode.ERROR,
        "status": span.status.description or "",
        "attributes": {str(k): _attribute(v) for k, v in (span.attributes or {}).items()},
    }


class LineProcessor(SpanProcessor):
    """Writes each finished span as a ``plat-span:`` line, at once, from the thread
    that ends it (one line is a single write: nothing is queued, nothing to flush)."""

    def __init__(self) -> None:
        self._failed = False

    def on_start(self, span: SdkSpan, parent_context: OtelContext | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        try:
            write_raw_line(encode_span(span_fields(span)))
        except Exception as exc:
            # The handler's work matters more than its span: report once, carry on.
            if not self._failed:
                self._failed = True
                log_error(f"cannot write the span {span.name!r}", exc)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class HandlerSpans:
    """Puts a request's trace context around a handler call."""

    def attach(self, headers: Mapping[str, str]) -> object:
        """Make the context of ``headers`` (W3C ``traceparent``/``tracestate``, and
        whatever the global propagator reads) the current one; returns the token
        for ``detach``. Without a valid ``traceparent`` that is an empty context,
        so a span the handler starts is a root span."""
        return otel_context.attach(propagate.extract(headers))

    def detach(self, token: object) -> None:
        """Restore the context of before ``attach`` (in the same thread or task)."""
        otel_context.detach(token)  # type: ignore[arg-type]


def install(service: str) -> HandlerSpans:
    """Send the spans of this process to stdout; ``service`` is their service.name.

    A TracerProvider of the SDK that the function set up itself (at import) keeps
    its own processors and gets the line processor besides; otherwise the global
    TracerProvider becomes one of ours.
    """
    keep_line_state()
    processor = LineProcessor()
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        current.add_span_processor(processor)
    else:
        provider = TracerProvider(
            resource=Resource.create({"service.name": service}), shutdown_on_exit=False
        )
        provider.add_span_processor(processor)
        trace.set_tracer_provider(provider)
    return HandlerSpans()
