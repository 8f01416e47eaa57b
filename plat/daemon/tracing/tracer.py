"""The gateway's side of tracing, per call: continue the caller's trace or start
one, ask the sampler, and time the call's parts.

Spans are not objects on the hot path: a sampled call carries a :class:`CallTrace`
(ids and three durations) into its invocation record, and the spans are made from
the record when someone reads or exports them (:mod:`.spans`). The sampler is the
OpenTelemetry SDK's, chosen by the standard ``OTEL_TRACES_SAMPLER`` and
``OTEL_TRACES_SAMPLER_ARG``; ``OTEL_SDK_DISABLED=true`` turns tracing off (the
gateway then passes the caller's trace headers on untouched).
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping

from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

from plat.daemon.tracing.context import Parent, parse_traceparent, traceparent

_getrandbits = random.getrandbits
# An Invocation's trace fields, in order: method, trace_id, span_id, parent_id,
# upstream_id, instance, acquire_at, wait, upstream, pooled.
TraceFields = (
    tuple[str, str, str, str | None, str, str | None, float | None, float, float | None, bool]
    | tuple[()]
)
# A call without a (valid) traceparent is a root: its sampler is asked with an empty
# context, not None (None means the current one, where a library may have left a span).
_ROOT = Context()
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)


class CallTrace:
    """One sampled call: its ids, and the parts of it the gateway timed.

    ``acquire_at``: when it asked for an instance (perf_counter; 0: it never did,
    being refused before, and its record then has None);
    ``wait``: how long that took (a queue or a start); ``upstream``: the exchange
    with the instance (None when there was none); ``pooled``: the instance it got
    had just been specialised from the warm pool.
    """

    __slots__ = (
        "acquire_at",
        "instance",
        "parent_id",
        "pooled",
        "span_id",
        "trace_id",
        "upstream",
        "upstream_id",
        "wait",
    )

    def __init__(self, trace_id: int, span_id: int, parent_id: int, upstream_id: int) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.upstream_id = upstream_id
        self.acquire_at = 0.0
        self.wait = 0.0
        self.upstream: float | None = None
        self.instance = ""
        self.pooled = False

    def fields(self, started: float, method: bytes) -> TraceFields:
        """The trace fields of the call's Invocation record, in its order (after
        ``call_id``); ``started`` is the call's start (perf_counter)."""
        return (
            method.decode("latin-1"),
            f"{self.trace_id:032x}",
            f"{self.span_id:016x}",
            f"{self.parent_id:016x}" if self.parent_id else None,
            f"{self.upstream_id:016x}",
            self.instance or None,
            self.acquire_at - started if self.acquire_at else None,
            self.wait,
            self.upstream,
            self.pooled,
        )


# description -> (decision without a parent, None: the same with one | True: the
# parent's sampled flag), for the SDK's constant samplers and parent-based ones.
_RULES: dict[str, tuple[bool, bool | None]] = {
    ALWAYS_ON.get_description(): (True, None),
    ALWAYS_OFF.get_description(): (False, None),
    ParentBased(ALWAYS_ON).get_description(): (True, True),
    ParentBased(ALWAYS_OFF).get_description(): (False, True),
}


def _new_id(bits: int) -> int:
    return _getrandbits(bits) or 1  # 0 is the invalid id


def disabled(environ: Mapping[str, str]) -> bool:
    return environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


class Tracer:
    """Decides and starts the trace of each call; ``enabled`` is False when the
    SDK is disabled."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        self.enabled = not disabled(environ)
        # The provider reads OTEL_TRACES_SAMPLER(_ARG) as every SDK user's would.
        self.sampler: Sampler = TracerProvider(shutdown_on_exit=False).sampler
        # The decision of the common samplers without building an SDK context per
        # call (~5 us): (with no parent, with a parent: follow its flag), else None.
        self._rule = _RULES.get(self.sampler.get_description())

    def start(self, header: bytes | None) -> tuple[CallTrace | None, bytes]:
        """The call's trace (None when not sampled) and the ``traceparent`` header
        line (with CRLF) to send the instance."""
        parent = parse_traceparent(header)
        rule = self._rule
        if parent is None:
            trace_id = _new_id(128)
            if rule is not None:
                sampled = rule[0]
            else:
                decision = self.sampler.should_sample(_ROOT, trace_id, "call").decision
                sampled = decision.is_sampled()
        else:
            trace_id = parent.trace_id
            if rule is not None:
                sampled = rule[0] if rule[1] is None else bool(parent.flags & 1)
            else:
                sampled = self._sampled(parent)
        upstream_id = _new_id(64)
        if not sampled:  # not part of the trace: the instance sees the caller's parent
            if parent is None:
                value = traceparent(trace_id, upstream_id, False)
            else:
                # Not part of the trace: the caller's parent and flags, all of them.
                value = b"00-%032x-%016x-%02x" % (trace_id, parent.span_id, parent.flags)
            return None, b"traceparent: " + value + b"\r\n"
        trace = CallTrace(
            trace_id, _new_id(64), 0 if parent is None else parent.span_id, upstream_id
        )
        return trace, b"traceparent: " + traceparent(trace_id, upstream_id, True) + b"\r\n"

    def _sampled(self, parent: Parent) -> bool:
        flags = _SAMPLED if parent.flags & 1 else _NOT_SAMPLED
        context = set_span_in_context(
            NonRecordingSpan(SpanContext(parent.trace_id, parent.span_id, True, flags))
        )
        return self.sampler.should_sample(context, parent.trace_id, "call").decision.is_sampled()
