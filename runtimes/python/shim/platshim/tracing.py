"""A request's W3C trace context, and the switch that turns handler spans on.

plat's gateway sends each call a ``traceparent`` (https://www.w3.org/TR/trace-context/)
naming its "upstream" span; the handler sees it as ``context.trace_id``,
``context.traceparent`` and ``context.tracestate``, and the call's log lines carry
the trace id. Parsing it needs the standard library only, so every call can afford it.

Handler spans need OpenTelemetry's SDK, which a function has only when its
requirements name it. Whether it is there is looked up once, without importing
anything (a cold start without it pays a few ``stat`` calls); only then is
``platshim.handlerspans`` imported, which imports the SDK.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from platshim.output import log_error

if TYPE_CHECKING:
    from platshim.handlerspans import HandlerSpans

# Version 00 only: a later version may add fields, and a proxy that does not know it
# must not pretend to. Lower-case hex only, as the specification requires. Checked
# by hand: compiling a regular expression would cost every cold start ~0.1 ms.
_VERSION_00 = "00-"
_TRACEPARENT_LENGTH = 55  # 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>
_HEX = frozenset("0123456789abcdef")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id (32 lower-case hex) of a valid version-00 ``traceparent``, else None.

    Invalid: another version, other lengths, upper-case hex, an all-zero trace or
    parent id, anything around the value (several headers joined by ", " included).
    """
    if (
        traceparent is None
        or len(traceparent) != _TRACEPARENT_LENGTH
        or not traceparent.startswith(_VERSION_00)
        or traceparent[35] != "-"
        or traceparent[52] != "-"
    ):
        return None
    trace_id, parent_id = traceparent[3:35], traceparent[36:52]
    if (
        not _HEX.issuperset(trace_id)
        or not _HEX.issuperset(parent_id)
        or not _HEX.issuperset(traceparent[53:])
        or trace_id == _ZERO_TRACE
        or parent_id == _ZERO_SPAN
    ):
        return None
    return trace_id


def _findable(name: str) -> bool:
    """Whether a top-level module ``name`` could be imported, without importing anything.

    Asks the finders of ``sys.meta_path`` directly, as the import system would
    (importlib.util.find_spec would cost an import of its own).
    """
    for finder in sys.meta_path:
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is None:
            continue
        try:
            if find_spec(name, None) is not None:
                return True
        except (ImportError, ValueError, OSError):
            continue
    return False


_checked = False
_spans: HandlerSpans | None = None


def handler_spans(function: str) -> HandlerSpans | None:
    """The handler spans of this process, or None when OpenTelemetry's SDK is missing.

    Looked up on the first call only (call it once the function's code and
    dependencies are in place: after the handler is loaded, or specialised);
    later calls return the same answer. ``function`` becomes the spans' service.name.
    """
    global _checked, _spans
    if _checked:
        return _spans
    _checked = True
    if not _findable("opentelemetry"):
        return None
    try:
        from platshim.handlerspans import install

        _spans = install(function or "function")
    except ModuleNotFoundError as exc:
        # The API alone (a library's dependency) records nothing: quietly no spans.
        if exc.name != "opentelemetry.sdk":
            log_error(f"handler spans are off: {type(exc).__name__}: {exc}")
    except Exception as exc:
        # A broken install must not keep the function from serving.
        log_error(f"handler spans are off: {type(exc).__name__}: {exc}", exc)
    return _spans
