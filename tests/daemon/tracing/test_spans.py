"""plat.daemon.tracing.spans: the gateway's spans of a call, made from its invocation
record (a server span and, as its children, the wait for an instance and the
upstream exchange), and the spans handlers recorded."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest

from plat.daemon.store import Invocation, SpanRecord
from plat.daemon.tracing.context import parse_traceparent
from plat.daemon.tracing.spans import (
    GATEWAY_SERVICE,
    WAITED,
    Span,
    call_spans,
    child_id,
    function_span,
)
from plat.daemon.tracing.tracer import Tracer

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SERVER = "b7ad6b7169203331"
CALLER = "00f067aa0ba902b7"
UPSTREAM = "53995c3f42cd8ad8"
TS = 1_700_000_000.5
SPAN_KEYS = {
    "trace_id",
    "span_id",
    "parent_id",
    "name",
    "kind",
    "service",
    "function",
    "tenant",
    "start",
    "end",
    "error",
    "attributes",
}


def near(value: float) -> Any:
    """Equal to a microsecond (pytest.approx's relative default is kilo-seconds here)."""
    return pytest.approx(value, rel=0, abs=1e-6)


def invocation(**changes: Any) -> Invocation:
    """A warm call: 100 ms, asked for an instance after 1 ms, got one at once, then
    80 ms upstream."""
    inv = Invocation(
        ts=TS,
        function="hello",
        version="v3",
        status=200,
        duration=0.1,
        bytes_in=0,
        bytes_out=2,
        cold=False,
        call_id="call-1",
        method="GET",
        trace_id=TRACE,
        span_id=SERVER,
        parent_id=CALLER,
        upstream_id=UPSTREAM,
        instance="hello-1a2b3c4d",
        acquire_at=0.001,
        wait=0.00001,
        upstream=0.08,
        pooled=False,
    )
    return replace(inv, **changes)


def by_name(spans: list[Span]) -> dict[str, Span]:
    named = {span.name: span for span in spans}
    assert len(named) == len(spans)
    return named


def assert_nested(spans: list[Span]) -> None:
    """Every child lies within the server span, on the same trace."""
    server = spans[0]
    assert server.kind == "server"
    for span in spans:
        assert span.trace_id == server.trace_id
        assert span.start <= span.end
        if span is not server:
            assert span.parent_id == server.span_id
            assert server.start - 1e-9 <= span.start and span.end <= server.end + 1e-9


def test_a_warm_call_has_a_server_and_an_upstream_span() -> None:
    spans = call_spans(invocation())
    assert [s.name for s in spans] == ["GET /function/hello", "upstream"]
    server, upstream = spans
    assert server == Span(
        trace_id=TRACE,
        span_id=SERVER,
        parent_id=CALLER,
        name="GET /function/hello",
        kind="server",
        service=GATEWAY_SERVICE,
        function="hello",
        tenant="default",
        start=near(TS - 0.1),  # type: ignore[arg-type]
        end=TS,
        error=False,
        attributes={
            "plat.function": "hello",
            "plat.tenant": "default",
            "plat.version": "v3",
            "plat.instance": "hello-1a2b3c4d",
            "plat.cold": False,
            "plat.call_id": "call-1",
            "http.request.method": "GET",
            "http.response.status_code": 200,
            "url.path": "/function/hello",
            "faas.coldstart": False,
        },
    )
    assert (upstream.span_id, upstream.parent_id, upstream.kind) == (UPSTREAM, SERVER, "client")
    assert upstream.start == near(TS - 0.1 + 0.001 + 0.00001)
    assert upstream.end == near(upstream.start + 0.08)
    assert upstream.service == "plat" and upstream.error is False
    assert upstream.attributes == {
        "plat.instance": "hello-1a2b3c4d",
        "http.response.status_code": 200,
    }
    assert_nested(spans)
    assert set(server.to_json()) == SPAN_KEYS


def test_a_queued_call_shows_its_wait() -> None:
    spans = call_spans(invocation(wait=0.015, upstream=0.08))
    assert [s.name for s in spans] == ["GET /function/hello", "queue", "upstream"]
    queue = by_name(spans)["queue"]
    assert queue.kind == "internal" and queue.error is False
    assert queue.start == near(TS - 0.1 + 0.001)
    assert queue.end - queue.start == near(0.015)
    assert queue.attributes == {}  # no start: nothing about pools
    assert by_name(spans)["upstream"].start == near(queue.end)
    assert_nested(spans)


def test_a_wait_below_the_threshold_is_no_span() -> None:
    assert [s.name for s in call_spans(invocation(wait=WAITED / 2))] == [
        "GET /function/hello",
        "upstream",
    ]
    assert "queue" in by_name(call_spans(invocation(wait=WAITED)))


def test_a_cold_start() -> None:
    spans = call_spans(invocation(cold=True, wait=0.6, duration=0.7, upstream=0.05))
    assert [s.name for s in spans] == ["GET /function/hello", "cold start", "upstream"]
    cold = by_name(spans)["cold start"]
    assert cold.attributes == {"plat.pooled": False}
    assert cold.end - cold.start == near(0.6)
    server = spans[0]
    assert server.attributes["plat.cold"] is True and server.attributes["faas.coldstart"] is True
    assert_nested(spans)


def test_a_pool_specialisation() -> None:
    spans = call_spans(invocation(cold=True, pooled=True, wait=0.03, upstream=0.05))
    assert [s.name for s in spans] == ["GET /function/hello", "pool specialisation", "upstream"]
    assert by_name(spans)["pool specialisation"].attributes == {"plat.pooled": True}
    assert_nested(spans)


def test_a_call_refused_before_any_instance() -> None:
    refused = invocation(status=503, instance=None, upstream=None, wait=2.0, duration=2.01)
    spans = call_spans(refused)
    assert [s.name for s in spans] == ["GET /function/hello", "queue"]
    server, queue = spans
    assert server.error is True and server.attributes["plat.instance"] == ""
    assert queue.error is True  # no instance came
    assert_nested(spans)
    # A refusal at once (a quota): the wait is shown however short, it is where it failed.
    quota = call_spans(invocation(status=429, instance=None, upstream=None, wait=0.000002))
    assert [s.name for s in quota] == ["GET /function/hello", "queue"]
    assert quota[1].error is True and quota[0].error is False  # a 429 is no server error
    # A start that failed: the cold start span is the error.
    failed = call_spans(
        invocation(status=503, cold=True, instance=None, upstream=None, wait=1.0, duration=1.1)
    )
    assert [s.name for s in failed] == ["GET /function/hello", "cold start"]
    assert failed[1].error is True


def test_a_call_refused_before_it_asked_has_the_server_span_only() -> None:
    for acquire_at in (None, -12345.6):  # None; older records: minus the clock
        spans = call_spans(
            invocation(status=401, instance=None, upstream=None, wait=0.0, acquire_at=acquire_at)
        )
        assert [s.name for s in spans] == ["GET /function/hello"]
        assert spans[0].start == near(TS - 0.1)


def test_a_failed_exchange_is_an_error_upstream() -> None:
    spans = call_spans(invocation(status=502, upstream=0.01))
    assert [s.error for s in spans] == [True, True]
    assert by_name(spans)["upstream"].attributes["http.response.status_code"] == 502


def test_the_upstream_span_never_outlasts_the_call() -> None:
    spans = call_spans(invocation(upstream=5.0))
    assert spans[-1].end == TS
    # Rounding between the clocks never makes it end before it starts.
    late = call_spans(invocation(acquire_at=0.1, wait=0.001, upstream=0.01))
    assert late[-1].start <= late[-1].end == TS
    assert_nested(late[:1] + late[2:])


def test_an_untraced_call_has_no_spans() -> None:
    assert call_spans(invocation(trace_id=None, span_id=None)) == []
    assert call_spans(invocation(trace_id=None)) == []
    assert call_spans(invocation(span_id=None)) == []
    bare = Invocation(TS, "hello", "v1", 200, 0.01, 0, 0, False, "c")
    assert call_spans(bare) == []


def test_a_root_call_has_no_parent() -> None:
    (server, _) = call_spans(invocation(parent_id=None))
    assert server.parent_id is None


def test_a_tenants_call_names_the_plain_function() -> None:
    spans = call_spans(invocation(function="hello.acme", method="POST"))
    server = spans[0]
    assert server.name == "POST /function/hello"
    assert (server.function, server.tenant) == ("hello", "acme")
    assert server.attributes["url.path"] == "/function/hello.acme"
    assert server.attributes["plat.tenant"] == "acme"
    assert all((s.function, s.tenant, s.service) == ("hello", "acme", "plat") for s in spans)


def test_a_record_without_a_method_names_the_call() -> None:
    assert call_spans(invocation(method=None))[0].name == "CALL /function/hello"


def test_the_upstream_span_is_the_parent_sent_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler's spans hang under the span id the instance was told."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    started = time.perf_counter()
    trace, line = Tracer().start(f"00-{TRACE}-{CALLER}-01".encode())
    assert trace is not None
    told = parse_traceparent(line.split(b": ", 1)[1].strip())
    assert told is not None
    trace.acquire_at = started + 0.001
    trace.wait = 0.0001
    trace.instance = "hello-1"
    trace.upstream = 0.002
    inv = Invocation(
        time.time(), "hello", "v1", 200, 0.004, 0, 0, False, "c", *trace.fields(started, b"GET")
    )
    spans = by_name(call_spans(inv))
    upstream = spans["upstream"]
    assert upstream.span_id == f"{told.span_id:016x}"
    assert upstream.trace_id == f"{told.trace_id:032x}" == TRACE
    assert spans["GET /function/hello"].parent_id == CALLER
    assert upstream.parent_id == spans["GET /function/hello"].span_id != CALLER


def test_child_ids_are_stable_and_distinct() -> None:
    queued = call_spans(invocation(wait=0.01))
    assert queued == call_spans(invocation(wait=0.01))  # the same ids, read twice
    parts = ["queue", "cold start", "pool specialisation"]
    ids = {child_id(SERVER, part) for part in parts}
    assert len(ids) == 3
    assert ids.isdisjoint({SERVER, UPSTREAM, CALLER})
    assert all(len(i) == 16 and int(i, 16) != 0 for i in ids)
    assert all(i == i.lower() for i in ids)
    other = child_id("b7ad6b7169203332", "queue")
    assert other != child_id(SERVER, "queue")
    spans = call_spans(invocation(cold=True, wait=0.5, duration=0.6))
    assert len({s.span_id for s in spans}) == len(spans) == 3
    assert by_name(spans)["cold start"].span_id == child_id(SERVER, "cold start")


def record(**changes: Any) -> SpanRecord:
    base = SpanRecord(
        function="hello.acme",
        instance="hello-1",
        trace_id=TRACE,
        span_id="1111111111111111",
        parent_id=UPSTREAM,
        name="work",
        kind="internal",
        start=TS - 0.05,
        end=TS - 0.01,
        error=True,
        status="database unreachable",
        attributes={"user": "ann"},
    )
    return replace(base, **changes)


def test_a_function_span_keeps_its_status_description() -> None:
    rec = record()
    span = function_span(rec)
    assert span == Span(
        trace_id=TRACE,
        span_id="1111111111111111",
        parent_id=UPSTREAM,
        name="work",
        kind="internal",
        service="hello",
        function="hello",
        tenant="acme",
        start=TS - 0.05,
        end=TS - 0.01,
        error=True,
        attributes={"user": "ann", "otel.status_description": "database unreachable"},
    )
    assert rec.attributes == {"user": "ann"}  # the record is not changed
    assert set(span.to_json()) == SPAN_KEYS


def test_a_function_span_without_status_adds_nothing() -> None:
    span = function_span(record(status="", error=False, function="hello", parent_id=None))
    assert span.attributes == {"user": "ann"}
    assert (span.tenant, span.service, span.parent_id) == ("default", "hello", None)


def test_a_handler_cannot_forge_the_status_description_away() -> None:
    forged = function_span(record(attributes={"otel.status_description": "all fine"}))
    assert forged.attributes["otel.status_description"] == "database unreachable"
