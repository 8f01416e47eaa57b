"""The OTLP/HTTP receiver the tracing tests rely on, checked against the real
OpenTelemetry SDK exporter (over loopback HTTP) and against hostile bodies: if it
misread what an SDK sends, every tracing test built on it would prove nothing."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from google.rpc import code_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from tests.daemon.tracing.otlp_receiver import JSON, PROTOBUF, OTLPReceiver, ReceiverThread

REPO = Path(__file__).resolve().parents[3]
TRACE = bytes(range(1, 17))
SPAN = bytes(range(1, 9))


def _emit(endpoint: str, compression: Compression = Compression.NoCompression) -> dict[str, str]:
    """A parent and a child span through the SDK's OTLP/HTTP exporter (blocking)."""
    resource = Resource.create({"service.name": "checkout", "deployment.environment": "test"})
    provider = TracerProvider(resource=resource)
    exporter = OTLPSpanExporter(endpoint=endpoint, compression=compression, timeout=5)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests.tracing")
    attrs: dict[str, AttributeValue] = {
        "plat.function": "hello",
        "http.response.status_code": 200,
        "tags": ["a", "b"],
    }
    with (
        tracer.start_as_current_span(
            "GET /function/hello", kind=SpanKind.SERVER, attributes=attrs
        ) as parent,
        tracer.start_as_current_span("upstream", kind=SpanKind.CLIENT) as child,
    ):
        child.set_attribute("plat.cold", False)
        child.set_attribute("ratio", 0.5)
        child.set_status(Status(StatusCode.ERROR, "boom"))
    provider.shutdown()
    return {
        "trace_id": format(parent.get_span_context().trace_id, "032x"),
        "parent": format(parent.get_span_context().span_id, "016x"),
        "child": format(child.get_span_context().span_id, "016x"),
    }


def _export_one(endpoint: str, timeout: float) -> tuple[SpanExportResult, float]:
    """One span exported through the SDK exporter: its result and how long it took."""
    provider = TracerProvider()
    exporter = OTLPSpanExporter(endpoint=endpoint, timeout=timeout)
    span = provider.get_tracer("t").start_span("one")
    span.end()
    assert isinstance(span, ReadableSpan)
    started = time.monotonic()
    result = exporter.export([span])
    elapsed = time.monotonic() - started
    exporter.shutdown()
    return result, elapsed


def _request(*spans: Span) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=list(spans))])]
    )


def _sized(size: int) -> bytes:
    """A valid request of exactly ``size`` bytes (a span with a long name)."""
    n = size - 100
    while _request(Span(trace_id=TRACE, span_id=SPAN, name="x" * n)).ByteSize() < size:
        n += 1
    return _request(Span(trace_id=TRACE, span_id=SPAN, name="x" * n)).SerializeToString()


async def _post(
    url: str, body: bytes, content_type: str = PROTOBUF, encoding: str | None = None
) -> tuple[int, str, bytes]:
    headers = {"Content-Type": content_type}
    if encoding:
        headers["Content-Encoding"] = encoding
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as resp,
    ):
        return resp.status, resp.content_type, await resp.read()


@pytest.mark.parametrize(
    "compression", [Compression.NoCompression, Compression.Gzip, Compression.Deflate]
)
async def test_sdk_exporter_parent_and_child_arrive_linked(
    otlp_receiver: OTLPReceiver, compression: Compression
) -> None:
    ids = await asyncio.to_thread(_emit, otlp_receiver.traces_url, compression)

    spans = await otlp_receiver.wait_for(lambda s: s if len(s) >= 2 else None, timeout=10)
    by_name = {s.name: s for s in spans}
    parent, child = by_name["GET /function/hello"], by_name["upstream"]
    assert parent.trace_id == child.trace_id == ids["trace_id"]
    assert parent.span_id == ids["parent"] and parent.parent_span_id is None
    assert child.span_id == ids["child"] and child.parent_span_id == ids["parent"]
    assert (parent.kind, child.kind) == ("server", "client")
    assert parent.attributes == {
        "plat.function": "hello",
        "http.response.status_code": 200,
        "tags": ["a", "b"],
    }
    assert child.attributes == {"plat.cold": False, "ratio": 0.5}
    assert (child.status_code, child.status_message) == ("error", "boom")
    assert parent.status_code == "unset"
    for span in spans:
        assert span.service == "checkout"
        assert span.resource["deployment.environment"] == "test"
        assert span.resource["telemetry.sdk.name"] == "opentelemetry"
        assert span.scope == "tests.tracing"
        assert 0 < span.start_ns <= span.end_ns
    assert child.start_ns >= parent.start_ns and child.end_ns <= parent.end_ns
    expected = {"gzip": "gzip", "deflate": "deflate"}.get(compression.value, "")
    assert [(e.encoding, e.status) for e in otlp_receiver.exports] == [(expected, 200)] * 2


@pytest.mark.parametrize("encoding", [None, "gzip"])
async def test_otlp_json_with_hex_ids_is_decoded(
    otlp_receiver: OTLPReceiver, encoding: str | None
) -> None:
    payload = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "js"}}]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "browser"},
                        "spans": [
                            {
                                "traceId": "5B8EFFF798038103D269B633813FC60C",
                                "spanId": "EEE19B7EC3C1B174",
                                "parentSpanId": "EEE19B7EC3C1B173",
                                "name": "fetch",
                                "kind": 3,
                                "startTimeUnixNano": "1544712660000000000",
                                "endTimeUnixNano": "1544712661000000000",
                                "attributes": [
                                    {"key": "n", "value": {"intValue": "3"}},
                                    {"key": "l", "value": {"arrayValue": {"values": []}}},
                                    {"key": "m", "value": {"kvlistValue": {"values": []}}},
                                ],
                                "status": {"code": 1},
                                "someFutureField": {"ignored": True},
                            }
                        ],
                    }
                ],
            }
        ]
    }
    body = json.dumps(payload).encode()
    status, ctype, answer = await _post(
        otlp_receiver.traces_url, gzip.compress(body) if encoding else body, JSON, encoding
    )
    assert (status, ctype, json.loads(answer)) == (200, JSON, {})
    [span] = otlp_receiver.spans
    assert span.trace_id == "5b8efff798038103d269b633813fc60c"
    assert (span.span_id, span.parent_span_id) == ("eee19b7ec3c1b174", "eee19b7ec3c1b173")
    assert (span.name, span.kind, span.status_code, span.service) == ("fetch", "client", "ok", "js")
    assert (span.start_ns, span.end_ns) == (1544712660000000000, 1544712661000000000)
    assert span.attributes == {"n": 3, "l": [], "m": {}}


async def test_spans_with_malformed_ids_are_rejected_as_a_partial_success(
    otlp_receiver: OTLPReceiver,
) -> None:
    good = Span(trace_id=TRACE, span_id=SPAN, name="good")
    bad = [
        Span(trace_id=TRACE[:4], span_id=SPAN, name="short trace id"),
        Span(trace_id=bytes(16), span_id=SPAN, name="zero trace id"),
        Span(trace_id=TRACE, span_id=b"", name="no span id"),
        Span(trace_id=TRACE, span_id=SPAN, parent_span_id=b"\x01", name="short parent"),
    ]
    status, _ctype, answer = await _post(
        otlp_receiver.traces_url, _request(good, *bad).SerializeToString()
    )
    assert status == 200
    response = ExportTraceServiceResponse.FromString(answer)
    assert response.partial_success.rejected_spans == 4
    assert "short trace id" in response.partial_success.error_message
    assert [s.name for s in otlp_receiver.spans] == ["good"]
    assert otlp_receiver.counters["rejected"] == 4


MALFORMED = [
    pytest.param(b"not a protobuf", PROTOBUF, None, id="protobuf-garbage"),
    pytest.param(b"\xff" * 64, PROTOBUF, None, id="protobuf-bad-varint"),
    pytest.param(_request(Span(name="x" * 50)).SerializeToString()[:-20], PROTOBUF, None, id="cut"),
    pytest.param(b"\x1f\x8b\x08\x00garbage", PROTOBUF, "gzip", id="bad-gzip"),
    pytest.param(gzip.compress(b"\x0a\x00" * 100)[:-12], PROTOBUF, "gzip", id="truncated-gzip"),
    pytest.param(gzip.compress(b"") + b"tail", PROTOBUF, "gzip", id="gzip-trailing-bytes"),
    pytest.param(b"plain", PROTOBUF, "deflate", id="bad-deflate"),
    pytest.param(b"{not json", JSON, None, id="json-garbage"),
    pytest.param(b"[1, 2]", JSON, None, id="json-array"),
    pytest.param(b'{"resourceSpans": 5}', JSON, None, id="json-wrong-type"),
    pytest.param(
        b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}',
        JSON,
        None,
        id="json-id-not-hex",
    ),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, JSON, None, id="json-deep-nesting"),
    pytest.param(b"\xff\xfe", JSON, None, id="json-not-utf8"),
]


@pytest.mark.parametrize(("body", "content_type", "encoding"), MALFORMED)
async def test_malformed_bodies_get_400_with_a_status(
    otlp_receiver: OTLPReceiver, body: bytes, content_type: str, encoding: str | None
) -> None:
    status, ctype, answer = await _post(otlp_receiver.traces_url, body, content_type, encoding)
    assert status == 400
    assert ctype == content_type
    if content_type == JSON:
        assert json.loads(answer)["code"] == code_pb2.INVALID_ARGUMENT
    else:
        assert status_pb2.Status.FromString(answer).code == code_pb2.INVALID_ARGUMENT
    assert otlp_receiver.spans == []
    # It still serves afterwards.
    ok = _request(Span(trace_id=TRACE, span_id=SPAN, name="after")).SerializeToString()
    assert (await _post(otlp_receiver.traces_url, ok))[0] == 200
    assert [s.name for s in otlp_receiver.spans] == ["after"]


async def test_other_media_types_and_encodings_get_415(otlp_receiver: OTLPReceiver) -> None:
    body = _request(Span(trace_id=TRACE, span_id=SPAN)).SerializeToString()
    assert (await _post(otlp_receiver.traces_url, body, "text/plain"))[0] == 415
    assert (await _post(otlp_receiver.traces_url, body, PROTOBUF, "br"))[0] == 415
    assert otlp_receiver.spans == []


async def test_bodies_over_the_limit_get_413_and_one_at_the_limit_is_accepted() -> None:
    limit = 64 * 1024
    receiver = OTLPReceiver(max_body=limit)
    await receiver.start()
    try:
        url = receiver.traces_url
        body = _sized(limit)
        assert len(body) == limit
        assert (await _post(url, body))[0] == 200
        assert (await _post(url, gzip.compress(body), PROTOBUF, "gzip"))[0] == 200

        status, _ctype, answer = await _post(url, body + b"\x00" * (limit + 1 - len(body)))
        assert status == 413
        assert status_pb2.Status.FromString(answer).code == code_pb2.RESOURCE_EXHAUSTED
        bomb = gzip.compress(b"\x00" * (64 * limit))  # about 64 KiB inflating to 4 MiB
        assert len(bomb) < limit
        assert (await _post(url, bomb, PROTOBUF, "gzip"))[0] == 413
        deflate_bomb = zlib.compress(b"\x00" * (limit + 1))
        assert (await _post(url, deflate_bomb, PROTOBUF, "deflate"))[0] == 413

        async def chunks() -> Any:  # no Content-Length: the limit holds while streaming
            for _ in range(9):
                yield b"\x00" * 8192

        async with (
            aiohttp.ClientSession() as session,
            session.post(url, data=chunks(), headers={"Content-Type": PROTOBUF}) as resp,
        ):
            assert resp.status == 413
        assert len(receiver.spans) == 2
    finally:
        await receiver.stop()


async def test_failing_receiver_answers_503_and_the_exporter_gives_up(
    otlp_receiver: OTLPReceiver,
) -> None:
    otlp_receiver.fail()
    body = _request(Span(trace_id=TRACE, span_id=SPAN)).SerializeToString()
    status, _ctype, answer = await _post(otlp_receiver.traces_url, body)
    assert status == 503
    assert status_pb2.Status.FromString(answer).code == code_pb2.UNAVAILABLE
    result, elapsed = await asyncio.to_thread(_export_one, otlp_receiver.traces_url, 1.0)
    assert result == SpanExportResult.FAILURE
    assert elapsed < 3
    assert otlp_receiver.spans == []
    otlp_receiver.fail(500)
    assert (await _post(otlp_receiver.traces_url, body))[0] == 500

    otlp_receiver.recover()
    result, _elapsed = await asyncio.to_thread(_export_one, otlp_receiver.traces_url, 5.0)
    assert result == SpanExportResult.SUCCESS
    assert [s.name for s in otlp_receiver.spans] == ["one"]


async def test_hanging_receiver_never_answers_until_released(otlp_receiver: OTLPReceiver) -> None:
    otlp_receiver.hang()
    body = _request(Span(trace_id=TRACE, span_id=SPAN)).SerializeToString()
    timeout = aiohttp.ClientTimeout(total=0.5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        with pytest.raises(TimeoutError):
            await session.post(
                otlp_receiver.traces_url, data=body, headers={"Content-Type": PROTOBUF}
            )
    result, elapsed = await asyncio.to_thread(_export_one, otlp_receiver.traces_url, 1.0)
    assert result == SpanExportResult.FAILURE
    assert 0.9 < elapsed < 3
    assert otlp_receiver.held >= 1
    assert otlp_receiver.spans == []

    otlp_receiver.recover()
    for _ in range(100):
        if otlp_receiver.held == 0:
            break
        await asyncio.sleep(0.01)
    assert otlp_receiver.held == 0
    result, _elapsed = await asyncio.to_thread(_export_one, otlp_receiver.traces_url, 5.0)
    assert result == SpanExportResult.SUCCESS


async def test_stop_releases_held_requests_promptly() -> None:
    receiver = OTLPReceiver()
    await receiver.start()
    receiver.hang()
    task = asyncio.create_task(_post(receiver.traces_url, b""))
    for _ in range(200):
        if receiver.held:
            break
        await asyncio.sleep(0.01)
    assert receiver.held == 1
    started = time.monotonic()
    await receiver.stop()
    assert time.monotonic() - started < 3
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_wait_for_times_out_naming_what_arrived(otlp_receiver: OTLPReceiver) -> None:
    body = _request(Span(trace_id=TRACE, span_id=SPAN, name="only")).SerializeToString()
    await _post(otlp_receiver.traces_url, body)
    with pytest.raises(TimeoutError, match=r"1 spans received, named \['only'\]"):
        await otlp_receiver.wait_for(lambda s: len(s) > 1, timeout=0.3)


async def test_concurrent_exports_are_all_kept(otlp_receiver: OTLPReceiver) -> None:
    def body(i: int) -> bytes:
        span_id = i.to_bytes(8, "big")
        return _request(Span(trace_id=TRACE, span_id=span_id, name=f"s{i}")).SerializeToString()

    answers = await asyncio.gather(
        *(_post(otlp_receiver.traces_url, body(i)) for i in range(1, 65))
    )
    assert {status for status, _c, _b in answers} == {200}
    assert sorted(s.name for s in otlp_receiver.spans) == sorted(f"s{i}" for i in range(1, 65))
    assert otlp_receiver.counters["exports"] == otlp_receiver.counters["spans"] == 64


def test_thread_receiver_serves_synchronous_code() -> None:
    with ReceiverThread() as receiver:
        ids = _emit(receiver.traces_url, Compression.Gzip)
        spans = receiver.wait_for_sync(lambda s: s if len(s) == 2 else None, timeout=10)
        child = next(s for s in spans if s.name == "upstream")
        assert child.parent_span_id == ids["parent"]
        receiver.hang()
        result, _elapsed = _export_one(receiver.traces_url, 0.5)
        assert result == SpanExportResult.FAILURE
        receiver.recover()
        assert _export_one(receiver.traces_url, 5.0)[0] == SpanExportResult.SUCCESS
        with pytest.raises(TimeoutError):
            receiver.wait_for_sync(lambda s: len(s) > 3, timeout=0.2)


def test_command_line_sink_counts_and_exits_on_sigterm() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.daemon.tracing.otlp_receiver", "--count-only"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        _emit(f"{url}/v1/traces")
        stats = json.loads(_get(f"{url}/stats"))
        assert (stats["exports"], stats["spans"], stats["refused"]) == (2, 2, 0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert json.loads(proc.stdout.readline())["spans"] == 2
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())
