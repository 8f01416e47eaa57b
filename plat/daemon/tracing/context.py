"""W3C trace context (https://www.w3.org/TR/trace-context/): ``traceparent``
parsed and written, as bytes, for the gateway's hot path."""

from __future__ import annotations

from typing import NamedTuple

_HEX = frozenset(b"0123456789abcdef")
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
    value = value.strip()
    if len(value) < 55 or value[2:3] != b"-" or value[35:36] != b"-" or value[52:53] != b"-":
        return None
    version = value[:2]
    if version == b"00":
        if len(value) != 55:
            return None
    elif version == b"ff" or (len(value) > 55 and value[55:56] != b"-"):
        return None
    if not _HEX.issuperset(value[:2] + value[3:35] + value[36:52] + value[53:55]):
        return None
    trace_id = int(value[3:35], 16)
    span_id = int(value[36:52], 16)
    if trace_id == 0 or span_id == 0:
        return None
    return Parent(trace_id, span_id, int(value[53:55], 16))


def traceparent(trace_id: int, span_id: int, sampled: bool) -> bytes:
    """The ``traceparent`` value naming ``span_id`` as the parent, version 00."""
    return b"00-%032x-%016x-%s" % (trace_id, span_id, b"01" if sampled else b"00")


def trace_hex(trace_id: int) -> str:
    return f"{trace_id:032x}"


def span_hex(span_id: int) -> str:
    return f"{span_id:016x}"
