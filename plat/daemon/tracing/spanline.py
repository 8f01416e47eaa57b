"""Spans a function's handler recorded, as its shim reports them: one line on the
instance's output, ``plat-span:`` and a JSON object (see docs/tracing.md).

The line comes from code the daemon does not trust, so everything is checked and
bounded; a line that is not a valid span is kept as a log line instead.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from plat.daemon.store import SpanRecord

PREFIX = "plat-span:"
MAX_LINE = 16 * 1024 + len(PREFIX) + 64
MAX_NAME = 512
MAX_ATTRIBUTES = 128
MAX_VALUE = 4096
KINDS = frozenset({"internal", "server", "client", "producer", "consumer"})
_TRACE = re.compile(r"[0-9a-f]{32}")
_SPAN = re.compile(r"[0-9a-f]{16}")


def _valid_id(value: object, pattern: re.Pattern[str]) -> str | None:
    if isinstance(value, str) and pattern.fullmatch(value) and value.strip("0"):
        return value
    return None


def _text(value: str, limit: int) -> str:
    """``value`` cut to ``limit`` characters, storable: JSON's ``\\ud800`` escapes
    decode to lone surrogates, which UTF-8 (SQLite, OTLP) refuses."""
    value = value[:limit]
    if not value.isascii():
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def _scalar(value: object) -> object:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return _text(value, MAX_VALUE)
    return None


def _attribute(value: object) -> object:
    """A value OTLP can carry (str, bool, int, float, or a list of one of them),
    bounded; None for anything else (a list holding anything else, a nested list
    or mixed types included: the whole attribute is dropped, as the SDK does)."""
    if not isinstance(value, list):
        return _scalar(value)
    if len(value) > 64:
        return None
    items = [_scalar(item) for item in value]
    if None in items or len({type(item) for item in items}) > 1:
        return None
    return items


def _nanos(value: object) -> float | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63:
        return value / 1e9
    return None


def parse_span_line(text: str, function: str, instance: str) -> SpanRecord | None:
    """The span a ``plat-span:`` line reports, or None when the line is not one."""
    if not text.startswith(PREFIX) or len(text) > MAX_LINE:
        return None
    if not text.isascii() and len(text.encode("utf-8", "surrogatepass")) > MAX_LINE:
        return None
    try:
        data: Any = json.loads(text[len(PREFIX) :])
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested too deep
        return None
    if not isinstance(data, dict):
        return None
    trace_id = _valid_id(data.get("trace_id"), _TRACE)
    span_id = _valid_id(data.get("span_id"), _SPAN)
    parent = data.get("parent_id")
    parent_id = None if parent is None else _valid_id(parent, _SPAN)
    name = data.get("name")
    kind = data.get("kind", "internal")
    start, end = _nanos(data.get("start")), _nanos(data.get("end"))
    if (
        trace_id is None
        or span_id is None
        or (parent is not None and parent_id is None)
        or not isinstance(name, str)
        or not name
        or not isinstance(kind, str)
        or kind not in KINDS
        or start is None
        or end is None
        or end < start
    ):
        return None
    raw = data.get("attributes") or {}
    attributes: dict[str, Any] = {}
    if isinstance(raw, dict):
        for key, value in list(raw.items())[:MAX_ATTRIBUTES]:
            kept = _attribute(value)
            if kept is not None and isinstance(key, str) and key:
                attributes[_text(key, MAX_NAME)] = kept
    status = data.get("status")
    return SpanRecord(
        function=function,
        instance=instance,
        trace_id=trace_id,
        span_id=span_id,
        parent_id=parent_id,
        name=_text(name, MAX_NAME),
        kind=kind,
        start=start,
        end=end,
        error=data.get("error") is True,
        status=_text(status, MAX_VALUE) if isinstance(status, str) else "",
        attributes=attributes,
    )
