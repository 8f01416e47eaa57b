"""Tracing end to end in real containers: a call made with a caller's traceparent
shows up in `plat trace ID` with the gateway's spans, the handler's own span
(made with the OpenTelemetry API inside the function) and the call's log line,
and the same spans reach a real OTLP/HTTP receiver with the right parents; a
collector that hangs never slows or fails a call."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.daemon.tracing.otlp_receiver import OTLPReceiver, ReceivedSpan, ReceiverThread
from tests.fixtures import PlatRunner, daemon_session, make_runner
from tests.functions import write_python_function

pytestmark = pytest.mark.container

HANDLER = """
import json
from opentelemetry import trace

tracer = trace.get_tracer("hello-handler")

def handle(event, context):
    with tracer.start_as_current_span("handler-work") as span:
        span.set_attribute("work.items", 3)
        print("working on the call")
    return {
        "trace_id": context.trace_id,
        "traceparent": context.traceparent,
        "seen": event.headers.get("traceparent"),
    }
"""
REQUIREMENTS = "opentelemetry-api>=1.27\nopentelemetry-sdk>=1.27\n"


@pytest.fixture(scope="module")
def receiver() -> Iterator[OTLPReceiver]:
    with ReceiverThread() as running:
        yield running


@pytest.fixture(scope="module")
def plat(tmp_path_factory: pytest.TempPathFactory, receiver: OTLPReceiver) -> Iterator[PlatRunner]:
    runner = make_runner(tmp_path_factory.mktemp("tracing"))
    runner.env.update(receiver.otel_env())
    runner.env["OTEL_BSP_SCHEDULE_DELAY"] = "200"  # export within a fraction of a second
    runner.env["OTEL_EXPORTER_OTLP_TIMEOUT"] = "2"
    with daemon_session(runner) as started:
        folder = write_python_function(
            tmp_path_factory.mktemp("fn"), "hello", HANDLER, requirements=REQUIREMENTS
        )
        started.run("deploy", str(folder))
        yield started


def ids() -> tuple[str, str]:
    return secrets.token_hex(16), secrets.token_hex(8)


def call(plat: PlatRunner, trace_id: str, parent: str) -> dict[str, Any]:
    result = plat.http(
        "GET", "/function/hello", headers={"traceparent": f"00-{trace_id}-{parent}-01"}
    )
    assert result.status == 200, result.body
    body = result.json()
    assert isinstance(body, dict)
    return body


def by_name(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {span["name"]: span for span in spans}


def test_a_call_with_a_traceparent_shows_in_plat_trace_with_the_handlers_span(
    plat: PlatRunner,
) -> None:
    trace_id, caller = ids()
    body = call(plat, trace_id, caller)
    # The handler sees the trace, as the gateway's upstream span's child.
    assert body["trace_id"] == trace_id
    assert body["traceparent"] == body["seen"]
    upstream_id = body["traceparent"].split("-")[2]
    assert upstream_id != caller

    def shown() -> dict[str, Any] | None:
        proc = plat.run("trace", trace_id, "--json", check=False)
        if proc.returncode != 0:
            return None
        data = json.loads(proc.stdout)
        return data if "handler-work" in by_name(data["spans"]) else None

    deadline = time.monotonic() + 20
    data = shown()
    while data is None and time.monotonic() < deadline:
        time.sleep(0.3)
        data = shown()
    assert data is not None, plat.run("trace", trace_id, "--json", check=False)
    spans = by_name(data["spans"])
    server = spans["GET /function/hello"]
    assert server["parent_id"] == caller
    assert server["kind"] == "server" and server["service"] == "plat"
    assert server["attributes"]["http.response.status_code"] == 200
    assert spans["upstream"]["span_id"] == upstream_id
    assert spans["upstream"]["parent_id"] == server["span_id"]
    work = spans["handler-work"]
    assert work["parent_id"] == upstream_id
    assert work["service"] == "hello"
    assert work["attributes"]["work.items"] == 3
    assert server["start"] <= spans["upstream"]["start"] <= spans["upstream"]["end"]
    # The call's log line joins the trace.
    lines = [line for line in data["logs"] if line["line"] == "working on the call"]
    assert lines and lines[0]["trace_id"] == trace_id

    # The terminal waterfall names every span.
    text = plat.run("trace", trace_id).stdout
    for name in ("GET /function/hello", "upstream", "handler-work", "working on the call"):
        assert name in text

    # `plat traces` lists the call; `plat logs` has the line.
    listed = json.loads(plat.run("traces", "hello", "--json").stdout)
    assert trace_id in [row["trace_id"] for row in listed["traces"]]


def test_the_same_spans_reach_an_otlp_receiver(plat: PlatRunner, receiver: OTLPReceiver) -> None:
    trace_id, caller = ids()
    body = call(plat, trace_id, caller)
    upstream_id = body["traceparent"].split("-")[2]

    def three(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan] | None:
        mine = {s.name: s for s in spans if s.trace_id == trace_id}
        wanted = ("GET /function/hello", "upstream", "handler-work")
        return mine if all(name in mine for name in wanted) else None

    got = receiver.wait_for_sync(three, timeout=30)
    server, upstream, work = got["GET /function/hello"], got["upstream"], got["handler-work"]
    assert server.parent_span_id == caller
    assert server.kind == "server" and server.service == "plat"
    assert server.attributes["plat.function"] == "hello"
    assert upstream.span_id == upstream_id and upstream.parent_span_id == server.span_id
    assert upstream.kind == "client"
    assert work.parent_span_id == upstream_id and work.service == "hello"
    assert server.start_ns <= upstream.start_ns <= work.start_ns <= work.end_ns <= server.end_ns


def test_a_hanging_collector_never_slows_or_fails_a_call(
    plat: PlatRunner, receiver: OTLPReceiver
) -> None:
    receiver.hang()
    try:
        started = time.monotonic()
        statuses = [call(plat, *ids()) and 200 for _ in range(60)]
        took = time.monotonic() - started
    finally:
        receiver.recover()
    assert statuses == [200] * 60
    # Each export waits 2 s (OTEL_EXPORTER_OTLP_TIMEOUT) before it gives up: calls
    # that waited on it would take minutes, not seconds.
    assert took < 30, took
    # Afterwards spans flow again.
    trace_id, caller = ids()
    call(plat, trace_id, caller)
    receiver.wait_for_sync(
        lambda spans: [s for s in spans if s.trace_id == trace_id and s.name == "upstream"],
        timeout=30,
    )


def test_a_call_without_a_traceparent_starts_a_trace(plat: PlatRunner) -> None:
    """A call without a traceparent starts a trace; the instance is told its id."""
    result = plat.http("GET", "/function/hello")
    body = result.json()
    assert isinstance(body, dict)
    trace_id = body["trace_id"]
    assert isinstance(trace_id, str) and len(trace_id) == 32
    data = json.loads(plat.run("trace", trace_id, "--json").stdout)
    server = by_name(data["spans"])["GET /function/hello"]
    assert server["parent_id"] is None
