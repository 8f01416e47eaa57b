"""plat.daemon.tracing.tracer: per call, the sampler the standard OTEL_* variables
choose decides; the instance is told a traceparent naming the gateway's upstream
span (sampled), the caller's own parent (not sampled), or a fresh root (neither).
The SDK's TracerProvider reads the variables from os.environ, hence setenv."""

from __future__ import annotations

import dataclasses
import time

import pytest
from opentelemetry import context as otel_context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

from plat.daemon.store import Invocation
from plat.daemon.tracing import tracer as tracer_module
from plat.daemon.tracing.context import Parent, parse_traceparent
from plat.daemon.tracing.tracer import CallTrace, Tracer, disabled

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
SAMPLED = f"00-{TRACE}-{SPAN}-01".encode()
UNSAMPLED = f"00-{TRACE}-{SPAN}-00".encode()
# A trace id whose low 64 bits are all ones: above any ratio's bound but 1.0's.
HIGH = "4bf92f3577b34da6ffffffffffffffff"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)


def make(monkeypatch: pytest.MonkeyPatch, sampler: str, arg: str | None = None) -> Tracer:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    if arg is not None:
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", arg)
    tracer = Tracer()
    assert tracer.enabled
    return tracer


def sent(line: bytes) -> Parent:
    """The parent the instance is told, from the header line the gateway writes."""
    assert line.startswith(b"traceparent: ") and line.endswith(b"\r\n"), line
    value = line[len(b"traceparent: ") : -2]
    assert len(value) == 55 and value[:3] == b"00-", value
    parent = parse_traceparent(value)
    assert parent is not None, value
    return parent


def assert_sampled_call(trace: CallTrace | None, line: bytes, caller: Parent | None) -> None:
    """Sampled: the same trace as the caller's, the instance's parent is our upstream
    span, and the server span's parent is the caller's span."""
    assert trace is not None
    told = sent(line)
    assert told.flags == 1
    assert told.span_id == trace.upstream_id
    assert told.trace_id == trace.trace_id
    assert trace.span_id not in (0, trace.upstream_id)
    if caller is None:
        assert trace.parent_id == 0
        assert trace.trace_id != 0
    else:
        assert (trace.trace_id, trace.parent_id) == (caller.trace_id, caller.span_id)
        assert told.span_id != caller.span_id


def assert_unsampled_call(trace: CallTrace | None, line: bytes, header: bytes | None) -> None:
    """Not sampled: no record; the instance sees the caller's parent as it was, or a
    fresh root with flags 00."""
    assert trace is None
    told = sent(line)
    caller = parse_traceparent(header)
    if caller is None:
        assert told.flags == 0
        assert told.trace_id not in (0, int(TRACE, 16))
        assert told.span_id != 0
    else:
        assert line == b"traceparent: " + header.strip() + b"\r\n"  # type: ignore[union-attr]
        assert told == caller


def test_always_on_samples_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    tracer = make(monkeypatch, "always_on")
    for header in (None, SAMPLED, UNSAMPLED):
        trace, line = tracer.start(header)
        assert_sampled_call(trace, line, parse_traceparent(header))


def test_always_off_samples_no_call(monkeypatch: pytest.MonkeyPatch) -> None:
    tracer = make(monkeypatch, "always_off")
    for header in (None, SAMPLED, UNSAMPLED):
        trace, line = tracer.start(header)
        assert_unsampled_call(trace, line, header)


def test_a_fresh_root_is_fresh_on_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    tracer = make(monkeypatch, "always_off")
    told = [sent(tracer.start(None)[1]) for _ in range(200)]
    assert len({p.trace_id for p in told}) == 200
    assert len({p.span_id for p in told}) == 200


@pytest.mark.parametrize("sampler", ["traceidratio", "parentbased_traceidratio"])
def test_ratio_one_samples_roots(monkeypatch: pytest.MonkeyPatch, sampler: str) -> None:
    tracer = make(monkeypatch, sampler, "1")
    for _ in range(50):
        trace, line = tracer.start(None)
        assert_sampled_call(trace, line, None)


@pytest.mark.parametrize("sampler", ["traceidratio", "parentbased_traceidratio"])
def test_ratio_zero_samples_no_root(monkeypatch: pytest.MonkeyPatch, sampler: str) -> None:
    tracer = make(monkeypatch, sampler, "0")
    for _ in range(50):
        trace, line = tracer.start(None)
        assert_unsampled_call(trace, line, None)


def test_traceidratio_ignores_the_callers_decision(monkeypatch: pytest.MonkeyPatch) -> None:
    never = make(monkeypatch, "traceidratio", "0")
    assert_unsampled_call(*never.start(SAMPLED), SAMPLED)
    always = make(monkeypatch, "traceidratio", "1")
    assert_sampled_call(*always.start(UNSAMPLED), parse_traceparent(UNSAMPLED))


def test_traceidratio_decides_on_the_callers_trace_id(monkeypatch: pytest.MonkeyPatch) -> None:
    half = make(monkeypatch, "traceidratio", "0.5")
    low = f"00-{'0' * 31}1-{SPAN}-00".encode()  # low 64 bits tiny: below any bound
    high = f"00-{HIGH}-{SPAN}-01".encode()
    for _ in range(5):  # the same trace id is decided the same way every time
        assert_sampled_call(*half.start(low), parse_traceparent(low))
        assert_unsampled_call(*half.start(high), high)


def test_parentbased_always_on_follows_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    tracer = make(monkeypatch, "parentbased_always_on")
    assert_sampled_call(*tracer.start(SAMPLED), parse_traceparent(SAMPLED))
    assert_unsampled_call(*tracer.start(UNSAMPLED), UNSAMPLED)
    assert_sampled_call(*tracer.start(None), None)  # a root: always on


def test_parentbased_always_on_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    tracer = Tracer()
    assert "ParentBased" in tracer.sampler.get_description()
    assert_sampled_call(*tracer.start(SAMPLED), parse_traceparent(SAMPLED))
    assert_unsampled_call(*tracer.start(UNSAMPLED), UNSAMPLED)
    assert_sampled_call(*tracer.start(None), None)


def test_parentbased_traceidratio_follows_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    tracer = make(monkeypatch, "parentbased_traceidratio", "0")
    assert_sampled_call(*tracer.start(SAMPLED), parse_traceparent(SAMPLED))
    assert_unsampled_call(*tracer.start(UNSAMPLED), UNSAMPLED)
    assert_unsampled_call(*tracer.start(None), None)
    high = f"00-{HIGH}-{SPAN}-01".encode()  # sampled by the caller: the ratio is not asked
    assert_sampled_call(*tracer.start(high), parse_traceparent(high))


def test_an_invalid_header_starts_a_trace_of_our_own(monkeypatch: pytest.MonkeyPatch) -> None:
    tracer = make(monkeypatch, "parentbased_always_on")
    for header in (SAMPLED.upper(), SAMPLED + b"-x", b"ff" + SAMPLED[2:], b"", b"\xff" * 55):
        trace, line = tracer.start(header)
        assert_sampled_call(trace, line, None)
        assert trace is not None and trace.trace_id != int(TRACE, 16)
    off = make(monkeypatch, "always_off")
    trace, line = off.start(SAMPLED.upper())
    assert_unsampled_call(trace, line, None)


def test_a_future_versions_parent_is_sent_on_as_version_00(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    future = b"cc" + SAMPLED[2:] + b"-more-fields"
    trace, line = make(monkeypatch, "always_on").start(future)
    assert_sampled_call(trace, line, parse_traceparent(SAMPLED))
    trace, line = make(monkeypatch, "always_off").start(future)
    assert trace is None and line == b"traceparent: " + SAMPLED + b"\r\n"


def test_a_root_ignores_any_context_current_in_the_daemon(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A call without a traceparent is a root: a span some library left current in
    the daemon's context must not decide for it."""
    tracer = make(monkeypatch, "parentbased_traceidratio", "0")
    leaked = SpanContext(int(TRACE, 16), int(SPAN, 16), True, TraceFlags(TraceFlags.SAMPLED))
    token = otel_context.attach(set_span_in_context(NonRecordingSpan(leaked)))
    try:
        trace, line = tracer.start(None)
    finally:
        otel_context.detach(token)
    assert_unsampled_call(trace, line, None)


@pytest.mark.parametrize("value", ["true", "TRUE", " True "])
def test_sdk_disabled_turns_tracing_off(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", value)
    assert Tracer().enabled is False
    assert Tracer({"OTEL_SDK_DISABLED": value}).enabled is False
    assert disabled({"OTEL_SDK_DISABLED": value})


@pytest.mark.parametrize("value", ["", "false", "1", "yes", "truee"])
def test_other_values_leave_tracing_on(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", value)
    assert Tracer().enabled is True
    assert Tracer({"OTEL_SDK_DISABLED": value}).enabled is True
    assert Tracer({}).enabled is True


def test_the_mapping_given_wins_over_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert Tracer({}).enabled is True
    monkeypatch.delenv("OTEL_SDK_DISABLED")
    assert Tracer({"OTEL_SDK_DISABLED": "true"}).enabled is False


def test_ids_are_never_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    tracer = make(monkeypatch, "always_on")
    monkeypatch.setattr(tracer_module, "_getrandbits", lambda bits: 0)
    trace, line = tracer.start(None)
    assert trace is not None
    assert (trace.trace_id, trace.span_id, trace.upstream_id) == (1, 1, 1)
    assert sent(line) == Parent(1, 1, 1)
    off = make(monkeypatch, "always_off")
    assert sent(off.start(None)[1]) == Parent(1, 1, 0)


def test_ids_are_random_and_in_range(monkeypatch: pytest.MonkeyPatch) -> None:
    tracer = make(monkeypatch, "always_on")
    traces = [tracer.start(None)[0] for _ in range(1000)]
    ids = [(t.trace_id, t.span_id, t.upstream_id) for t in traces if t is not None]
    assert len(ids) == 1000
    assert all(0 < a < 2**128 and 0 < b < 2**64 and 0 < c < 2**64 for a, b, c in ids)
    assert len({a for a, _, _ in ids}) == 1000
    assert len({x for _, b, c in ids for x in (b, c)}) == 2000
    assert max(a for a, _, _ in ids) >= 2**120  # 128 bits drawn, not 64


TRACE_FIELDS = [
    "method",
    "trace_id",
    "span_id",
    "parent_id",
    "upstream_id",
    "instance",
    "acquire_at",
    "wait",
    "upstream",
    "pooled",
]


def test_invocation_has_the_trace_fields_in_the_order_call_trace_gives() -> None:
    names = [f.name for f in dataclasses.fields(Invocation)]
    assert names[names.index("call_id") + 1 :] == TRACE_FIELDS


def test_call_trace_fields_make_an_invocation(monkeypatch: pytest.MonkeyPatch) -> None:
    tracer = make(monkeypatch, "parentbased_always_on")
    started = time.perf_counter()
    trace, _ = tracer.start(SAMPLED)
    assert trace is not None
    trace.acquire_at = started + 0.002
    trace.wait = 0.25
    trace.instance = "hello-1a2b3c4d"
    trace.upstream = 0.125
    trace.pooled = True
    fields = trace.fields(started, b"POST")
    assert len(fields) == len(TRACE_FIELDS)
    inv = Invocation(time.time(), "hello", "v1", 200, 0.4, 3, 5, True, "call-1", *fields)
    assert inv.method == "POST"
    assert inv.trace_id == TRACE
    assert inv.span_id == f"{trace.span_id:016x}" and len(inv.span_id) == 16
    assert inv.parent_id == SPAN
    assert inv.upstream_id == f"{trace.upstream_id:016x}"
    assert inv.instance == "hello-1a2b3c4d"
    assert inv.acquire_at == pytest.approx(0.002)
    assert (inv.wait, inv.upstream, inv.pooled) == (0.25, 0.125, True)


def test_a_root_calls_fields_before_any_instance() -> None:
    trace = CallTrace(1, 2, 0, 3)
    fields = trace.fields(100.0, b"G\xe9T")  # a method is bytes off the wire
    inv = Invocation(1.0, "hello", "v1", 401, 0.01, 0, 0, False, "c", *fields)
    assert inv.method == "G\xe9T"
    assert (inv.trace_id, inv.span_id, inv.upstream_id) == (
        "0" * 31 + "1",
        "0" * 15 + "2",
        "0" * 15 + "3",
    )
    assert inv.parent_id is None and inv.instance is None
    assert (inv.wait, inv.upstream, inv.pooled) == (0.0, None, False)
    # It never asked for an instance: no time since the start, not minus the clock.
    assert inv.acquire_at is None


def test_an_unsampled_callers_flags_reach_the_instance_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Flags other than sampled (e.g. 02, random trace id) are the caller's to keep."""
    tracer = make(monkeypatch, "always_off")
    header = f"00-{HIGH}-00f067aa0ba902b7-03".encode()
    trace, line = tracer.start(header)
    assert trace is None
    assert line == b"traceparent: " + header + b"\r\n"
