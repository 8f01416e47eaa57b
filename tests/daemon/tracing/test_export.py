"""The OTLP exporter of the daemon against the real receiver: what the standard
variables turn on, the spans of a call and of a handler as a collector gets
them, and a bad record that does not lose the rest of its batch."""

from __future__ import annotations

import asyncio
import time

import pytest

from plat.daemon.store import Invocation, SpanRecord
from plat.daemon.tracing.export import Exporter, wanted
from tests.daemon.tracing.otlp_receiver import OTLPReceiver, ReceivedSpan

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def call(trace_id: str = TRACE, call_id: str = "c1", status: int = 200) -> Invocation:
    now = time.time()
    return Invocation(
        now, "hello.acme", "v1", status, 0.010, 0, 2, False, call_id,
        "GET", trace_id, "1111111111111111", "00f067aa0ba902b7", "2222222222222222",
        "inst1", 0.001, 0.002, 0.006, False,
    )  # fmt: skip


def handler_span() -> SpanRecord:
    now = time.time()
    return SpanRecord(
        "hello.acme", "inst1", TRACE, "3333333333333333", "2222222222222222", "load-user",
        "internal", now - 0.004, now - 0.001, True, "user not found", {"user.id": "7"},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "http://c:4318"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t/v1/traces"}, "http://t/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_TRACES_EXPORTER": "console, otlp"}, "http://c"),
    ],
)  # fmt: skip
def test_export_is_on_only_when_the_variables_ask(
    env: dict[str, str], expected: str | None
) -> None:
    assert wanted(env) == expected


async def exported(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch, *records: Invocation | SpanRecord
) -> dict[str, ReceivedSpan]:
    for name, value in receiver.otel_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    exporter = Exporter(receiver.url)
    for record in records:
        if isinstance(record, Invocation):
            exporter.offer(record)
        else:
            exporter.offer_span(record)
    exporter.drain()
    await asyncio.to_thread(exporter.processor.force_flush, 5000)
    await exporter.close()
    return {s.name: s for s in receiver.spans}


async def test_a_call_and_a_handler_span_arrive_linked_with_their_status(
    otlp_receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    got = await exported(otlp_receiver, monkeypatch, call(status=503), handler_span())
    server, upstream, work = got["GET /function/hello"], got["upstream"], got["load-user"]
    assert server.parent_span_id == "00f067aa0ba902b7" and server.kind == "server"
    assert server.service == "plat" and server.status_code == "error"
    assert server.attributes["plat.tenant"] == "acme"
    assert upstream.parent_span_id == server.span_id == "1111111111111111"
    assert work.parent_span_id == upstream.span_id == "2222222222222222"
    assert work.service == "hello" and work.resource["plat.tenant"] == "acme"
    assert (work.status_code, work.status_message) == ("error", "user not found")


async def test_a_bad_record_does_not_lose_the_rest_of_its_batch(
    otlp_receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = call(trace_id="not-hex-at-all", call_id="bad")
    got = await exported(otlp_receiver, monkeypatch, bad, call(call_id="good"))
    assert got["GET /function/hello"].attributes["plat.call_id"] == "good"
