"""What tests of the Python shim's handler spans share: a shim kind whose function
has OpenTelemetry's SDK (the venv's site-packages on PYTHONPATH stands for its
installed requirements; run with ``-S`` as the process backend runs it), a handler
that records spans, and readers of the ``plat-span:`` lines a shim writes."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import secrets
import textwrap
import time
from pathlib import Path
from typing import Any

from tests.runtimes import ServerProcess
from tests.runtimes.shims import PYTHON

_spec = importlib.util.find_spec("opentelemetry")
assert _spec is not None and _spec.submodule_search_locations
SITE_PACKAGES = Path(next(iter(_spec.submodule_search_locations))).parent
OTEL = dataclasses.replace(
    PYTHON, name="python-otel", env={**PYTHON.env, "PYTHONPATH": str(SITE_PACKAGES)}
)
MAX_LINE = 16 * 1024
PREFIX = "plat-span:"

SPANS_HANDLER = textwrap.dedent(
    """
    import sys

    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode

    # Made at import, before the shim sets the provider: a proxy that follows it.
    tracer = trace.get_tracer("t")


    def handle(event, context):
        q = event.query
        m = q.get("m", "")
        if event.path == "/span":
            with tracer.start_as_current_span("work") as span:
                span.set_attribute("m", m)
                span.set_attribute("numbers", [1, 2, 3])
                span.set_attribute("ratio", 0.5)
                span.set_attribute("nan", float("nan"))
                print(f"inside {m}")
                with tracer.start_as_current_span("child"):
                    pass
            return {"trace_id": context.trace_id}
        if event.path == "/leak":
            # Leaves its span current in the worker thread: the next call must not see it.
            otel_context.attach(trace.set_span_in_context(tracer.start_span("leaked")))
            return "leaked"
        if event.path == "/error":
            with tracer.start_as_current_span("failing") as span:
                span.set_attribute("m", m)
                raise ValueError(f"span boom {m}")
        if event.path == "/huge":
            with tracer.start_as_current_span(m + "n" * int(q.get("name", "0"))) as span:
                span.set_attribute("m", m)
                span.set_attribute("big", "x" * int(q.get("attr", "0")))
                span.set_attribute("many", ["y" * 100] * int(q.get("items", "0")))
                if "status" in q:
                    span.set_status(Status(StatusCode.ERROR, "s" * int(q["status"])))
                print(f"huge {m}")
            return "ok"
        if event.path == "/partial":
            sys.stdout.write(f"before {m} ")
            sys.stdout.flush()
            with tracer.start_as_current_span("between") as span:
                span.set_attribute("m", m)
            sys.stdout.write("after\\n")
            return "ok"
        if event.path == "/chatty":
            for n in range(30):
                print(f"chat {m} {n}")
                with tracer.start_as_current_span("chat") as span:
                    span.set_attribute("m", m)
            return "ok"
        if event.path == "/provider":
            return type(trace.get_tracer_provider()).__name__
        return {"unknown": event.path}
    """
)


def new_traceparent(flags: str = "01") -> tuple[str, str, str]:
    """(trace id, parent span id, traceparent) of a fresh random trace."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-{flags}"


def span_lines(server: ServerProcess) -> list[bytes]:
    return [line for line in server.stdout_path.read_bytes().split(b"\n") if b"plat-span:" in line]


def spans(server: ServerProcess, **match: Any) -> list[dict[str, Any]]:
    """The spans written so far (each line checked), those whose fields match ``match``."""
    found = []
    for line in span_lines(server):
        assert line.startswith(PREFIX.encode()), line[:200]
        assert len(line) + 1 <= MAX_LINE
        span = json.loads(line[len(PREFIX) :])
        if all(span.get(k) == v or span["attributes"].get(k) == v for k, v in match.items()):
            found.append(span)
    return found


def wait_spans(server: ServerProcess, count: int, **match: Any) -> list[dict[str, Any]]:
    """The matching spans once there are ``count`` of them (or after 5 s)."""
    deadline = time.monotonic() + 5
    found = spans(server, **match)
    while len(found) < count and time.monotonic() < deadline:
        time.sleep(0.02)
        found = spans(server, **match)
    return found


def check_span(span: dict[str, Any]) -> None:
    """The fields and types the contract promises."""
    assert set(span) == {
        "trace_id",
        "span_id",
        "parent_id",
        "name",
        "kind",
        "start",
        "end",
        "error",
        "status",
        "attributes",
    }
    assert len(span["trace_id"]) == 32 and int(span["trace_id"], 16)
    assert len(span["span_id"]) == 16 and int(span["span_id"], 16)
    assert span["parent_id"] is None or len(span["parent_id"]) == 16
    assert span["kind"] in {"internal", "server", "client", "producer", "consumer"}
    assert isinstance(span["start"], int) and isinstance(span["end"], int)
    assert 0 < span["start"] <= span["end"]
    assert isinstance(span["error"], bool) and isinstance(span["status"], str)
