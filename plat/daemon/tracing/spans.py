"""Spans as the API shows and the exporter sends them, made from what the store
keeps: a sampled call's invocation record gives the gateway's spans (the server
span and its children), a function's own span record gives one span."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any, Literal

from plat.daemon.store import Invocation, SpanRecord
from plat.tenancy import split_key

SpanKind = Literal["server", "client", "internal", "producer", "consumer"]
GATEWAY_SERVICE = "plat"
# A wait for an instance longer than this was a queue or a start, not a free slot.
WAITED = 50e-6


@dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: str
    service: str
    function: str  # the plain name; ``tenant`` apart
    tenant: str
    start: float  # seconds since the epoch
    end: float
    error: bool
    attributes: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def child_id(span_id: str, part: str) -> str:
    """A stable id for a part of a call the gateway timed but did not send on."""
    digest = hashlib.blake2b(f"{span_id}/{part}".encode(), digest_size=8).hexdigest()
    return digest if int(digest, 16) else "0000000000000001"


def call_spans(inv: Invocation) -> list[Span]:
    """The gateway's spans of one sampled call: ``<METHOD> /function/<name>`` and,
    as its children, the wait for an instance (``queue``, or ``cold start`` /
    ``pool specialisation``) and the ``upstream`` exchange."""
    if inv.trace_id is None or inv.span_id is None:
        return []
    name, tenant = split_key(inv.function)
    start = inv.ts - inv.duration
    method = inv.method or "CALL"
    common = {"function": name, "tenant": tenant, "service": GATEWAY_SERVICE}
    attributes: dict[str, Any] = {
        "plat.function": name,
        "plat.tenant": tenant,
        "plat.version": inv.version,
        "plat.instance": inv.instance or "",
        "plat.cold": inv.cold,
        "plat.call_id": inv.call_id,
        "http.request.method": method,
        "http.response.status_code": inv.status,
        "url.path": f"/function/{name}" if tenant == "default" else f"/function/{name}.{tenant}",
        "faas.coldstart": inv.cold,
    }
    spans = [
        Span(
            inv.trace_id,
            inv.span_id,
            inv.parent_id,
            f"{method} /function/{name}",
            "server",
            start=start,
            end=inv.ts,
            error=inv.status >= 500,
            attributes=attributes,
            **common,
        )
    ]
    # None (or, in records of older daemons, below 0): it never asked for an instance.
    acquire_at = inv.acquire_at if inv.acquire_at is not None and inv.acquire_at >= 0 else None
    asked = acquire_at is not None
    # The parts are timed on another clock than the call's end: kept within the call.
    acquired = min(start + (acquire_at or 0.0), inv.ts)
    wait = inv.wait or 0.0
    # A call refused when it asked for an instance (a full queue, a quota) shows
    # that wait, however short: it is where the call failed.
    refused = asked and inv.instance is None and inv.upstream is None
    if wait >= WAITED or refused:
        part = "queue"
        if inv.cold:
            part = "pool specialisation" if inv.pooled else "cold start"
        spans.append(
            Span(
                inv.trace_id,
                child_id(inv.span_id, part),
                inv.span_id,
                part,
                "internal",
                start=acquired,
                end=min(acquired + wait, inv.ts),
                error=inv.instance is None,  # no instance came
                attributes={"plat.pooled": inv.pooled} if inv.cold else {},
                **common,
            )
        )
    if inv.upstream is not None and inv.upstream_id is not None:
        began = min(acquired + wait, inv.ts)
        spans.append(
            Span(
                inv.trace_id,
                inv.upstream_id,
                inv.span_id,
                "upstream",
                "client",
                start=began,
                end=min(began + inv.upstream, inv.ts),
                error=inv.status >= 500,
                attributes={
                    "plat.instance": inv.instance or "",
                    "http.response.status_code": inv.status,
                },
                **common,
            )
        )
    return spans


def function_span(record: SpanRecord) -> Span:
    """A span a function's handler recorded; its service is the function."""
    name, tenant = split_key(record.function)
    return Span(
        record.trace_id,
        record.span_id,
        record.parent_id,
        record.name,
        record.kind,
        name,
        name,
        tenant,
        record.start,
        record.end,
        record.error,
        {
            **record.attributes,
            **({"otel.status_description": record.status} if record.status else {}),
        },
    )
