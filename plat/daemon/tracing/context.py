"""W3C trace context (https://www.w3.org/TR/trace-context/): ``traceparent``
parsed and written, as bytes, for the gateway's hot path."""

from __future__ import annotations

import re
from typing import NamedTuple

_TRACEPARENT = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?", re.S)
TRACE_ID_RE = r"[0-9a-f]{32}"


class Parent(NamedTuple):
    """The caller's span: ``trace_id`` and ``span_id`` are never 0."""

    trace_id: int
    span_id: int
    flags: int


def parse_traceparent(value: bytes | None) -> Parent | None:
    """The parent a ``traceparent`` header names, or None when it is absent or not
    valid (the call then starts a trace of its own, as the spec asks).

    Version 00 is exactly 55 characters; a later version may append fields after a
    dash, which are ignored; version ff is invalid.
    """
    if value is None:
        return None
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None:
        return None
    version, trace, span, flags, rest = match.groups()
    if (version == b"00" and rest) or version == b"ff":
        return None
    trace_id = int(trace, 16)
    span_id = int(span, 16)
    if trace_id == 0 or span_id == 0:
        return None
    return Parent(trace_id, span_id, int(flags, 16))


def traceparent(trace_id: int, span_id: int, sampled: bool) -> bytes:
    """The ``traceparent`` value naming ``span_id`` as the parent, version 00."""
    return b"00-%032x-%016x-%s" % (trace_id, span_id, b"01" if sampled else b"00")


def trace_hex(trace_id: int) -> str:
    return f"{trace_id:032x}"


def span_hex(span_id: int) -> str:
    return f"{span_id:016x}"
