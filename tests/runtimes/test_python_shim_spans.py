"""The Python shim's handler spans: a function with OpenTelemetry's SDK gets its
spans written as ``plat-span:`` lines, children of the request's traceparent. Real
shim processes over HTTP; without the SDK see test_python_shim_no_spans.py."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.runtimes import ServerProcess, split_tag
from tests.runtimes.shims import PYTHON, running, served
from tests.runtimes.spans import (
    MAX_LINE,
    OTEL,
    SITE_PACKAGES,
    SPANS_HANDLER,
    check_span,
    new_traceparent,
    spans,
    wait_spans,
)

pytestmark = pytest.mark.timeout(60)

ASYNC_SPANS_HANDLER = textwrap.dedent(
    """
    import asyncio

    from opentelemetry import trace

    tracer = trace.get_tracer("a")


    async def child(name):
        with tracer.start_as_current_span(name):
            await asyncio.sleep(0.01)


    def in_thread():
        with tracer.start_as_current_span("thread"):
            pass


    async def handle(event, context):
        with tracer.start_as_current_span("async-work") as span:
            span.set_attribute("m", event.query.get("m", ""))
            await asyncio.sleep(0.02)
            await asyncio.gather(child("gathered"), asyncio.create_task(child("task")))
            await asyncio.to_thread(in_thread)
        return {"trace_id": context.trace_id}
    """
)


@pytest.fixture(scope="module")
def otel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from served(OTEL, tmp_path_factory, SPANS_HANDLER)


def test_sync_handler_span_is_a_child_of_the_traceparent(otel: ServerProcess) -> None:
    trace_id, parent, traceparent = new_traceparent()
    headers = {"traceparent": traceparent, "X-Call-Id": "sp-1"}
    assert otel.request("GET", "/span?m=s1", headers=headers).json() == {"trace_id": trace_id}
    found = {span["name"]: span for span in wait_spans(otel, 2, trace_id=trace_id)}
    assert set(found) == {"work", "child"}
    work, child = found["work"], found["child"]
    for span in found.values():
        check_span(span)
    assert work["parent_id"] == parent
    assert child["parent_id"] == work["span_id"]
    assert (work["kind"], work["error"], work["status"]) == ("internal", False, "")
    assert work["attributes"] == {"m": "s1", "numbers": [1, 2, 3], "ratio": 0.5, "nan": "nan"}
    # The span lines are not tagged; the handler's print is.
    assert f"[call:sp-1 trace:{trace_id}] inside s1" in otel.stdout.splitlines()


def test_oversized_tracestate_does_not_break_the_span(otel: ServerProcess) -> None:
    trace_id, parent, traceparent = new_traceparent()
    state = ",".join(f"v{n}=" + "x" * 200 for n in range(250))  # 50 KB, 250 members
    headers = {"traceparent": traceparent, "tracestate": state}
    assert otel.request("GET", "/span?m=state", headers=headers).status == 200
    found = {span["name"]: span for span in wait_spans(otel, 2, trace_id=trace_id)}
    assert found["work"]["parent_id"] == parent


def test_span_without_traceparent_is_a_root(otel: ServerProcess) -> None:
    assert otel.request("GET", "/span?m=root1").json() == {"trace_id": None}
    (work,) = wait_spans(otel, 1, name="work", m="root1")
    assert work["parent_id"] is None


def test_unsampled_traceparent_records_nothing(otel: ServerProcess) -> None:
    trace_id, _, traceparent = new_traceparent("00")
    otel.request("GET", "/span?m=unsampled", headers={"traceparent": traceparent})
    otel.request("GET", "/span?m=after-unsampled")  # its span is written after any of the first
    wait_spans(otel, 1, m="after-unsampled")
    assert spans(otel, trace_id=trace_id) == []


def test_error_in_a_span_marks_it(otel: ServerProcess) -> None:
    trace_id, parent, traceparent = new_traceparent()
    resp = otel.request("GET", "/error?m=e1", headers={"traceparent": traceparent})
    assert resp.status == 500
    (span,) = wait_spans(otel, 1, trace_id=trace_id)
    check_span(span)
    assert (span["name"], span["parent_id"], span["error"]) == ("failing", parent, True)
    assert "span boom e1" in span["status"]


def test_concurrent_sync_calls_keep_their_own_trace(otel: ServerProcess) -> None:
    calls = {f"cs-{n}": new_traceparent() if n % 4 else None for n in range(24)}

    def call(m: str) -> Any:
        entry = calls[m]
        headers = {"traceparent": entry[2]} if entry else {}
        return otel.request("GET", f"/span?m={m}", headers=headers).json()["trace_id"]

    with ThreadPoolExecutor(max_workers=24) as pool:
        answers = dict(zip(calls, pool.map(call, calls), strict=True))
    for m, entry in calls.items():
        (work,) = wait_spans(otel, 1, name="work", m=m)
        if entry is None:
            assert answers[m] is None
            assert work["parent_id"] is None
            assert all(work["trace_id"] != e[0] for e in calls.values() if e)
        else:
            assert (answers[m], work["trace_id"], work["parent_id"]) == (entry[0], *entry[:2])


def test_a_leaked_context_does_not_reach_the_next_call(tmp_path: Path) -> None:
    folder = OTEL.write(tmp_path / "app", SPANS_HANDLER)
    # One worker thread: both calls run in it.
    with running(OTEL, folder, PLAT_WORKERS="1") as server:
        _, _, traceparent = new_traceparent()
        for headers in ({"traceparent": traceparent}, {}):
            assert server.request("GET", "/leak", headers=headers).text == "leaked"
        assert server.request("GET", "/span?m=next").status == 200
        (work,) = wait_spans(server, 1, name="work", m="next")
        assert work["parent_id"] is None


def test_async_handler_spans(tmp_path: Path) -> None:
    folder = OTEL.write(tmp_path / "app", ASYNC_SPANS_HANDLER)
    with running(OTEL, folder) as server:
        calls = {f"as-{n}": new_traceparent() for n in range(12)}

        def call(m: str) -> Any:
            headers = {"traceparent": calls[m][2], "X-Call-Id": m}
            return server.request("GET", f"/?m={m}", headers=headers).json()["trace_id"]

        with ThreadPoolExecutor(max_workers=12) as pool:
            assert list(pool.map(call, calls)) == [entry[0] for entry in calls.values()]
        for trace_id, parent, _ in calls.values():
            found = {span["name"]: span for span in wait_spans(server, 4, trace_id=trace_id)}
            assert set(found) == {"async-work", "gathered", "task", "thread"}
            work = found.pop("async-work")
            check_span(work)
            assert work["parent_id"] == parent
            assert {span["parent_id"] for span in found.values()} == {work["span_id"]}


def test_huge_attributes_are_dropped_to_fit(otel: ServerProcess) -> None:
    trace_id, parent, traceparent = new_traceparent()
    headers = {"traceparent": traceparent}
    otel.request("GET", "/huge?m=h1&attr=100000&items=100", headers=headers)
    (span,) = wait_spans(otel, 1, trace_id=trace_id)
    check_span(span)
    assert (span["name"], span["parent_id"]) == ("h1", parent)
    # The largest go first; what fits stays.
    assert span["attributes"] == {"m": "h1", "many": ["y" * 100] * 100}


def test_huge_name_and_status_are_cut_to_fit(otel: ServerProcess) -> None:
    trace_id, _, traceparent = new_traceparent()
    query = "m=h2&attr=50000&name=40000&status=40000"
    otel.request("GET", f"/huge?{query}", headers={"traceparent": traceparent})
    (span,) = wait_spans(otel, 1, trace_id=trace_id)
    check_span(span)
    assert span["attributes"] == {}
    assert span["status"] == ""
    assert span["name"].startswith("h2nnn")
    assert 15000 < len(span["name"]) < MAX_LINE
    assert span["error"] is True


def test_large_spans_stay_whole_among_concurrent_output(otel: ServerProcess) -> None:
    ids = [f"big-{n}" for n in range(16)]

    def call(m: str) -> int:
        headers = {"X-Call-Id": m, "traceparent": new_traceparent()[2]}
        return otel.request("GET", f"/huge?m={m}&attr=15000", headers=headers).status

    with ThreadPoolExecutor(max_workers=16) as pool:
        assert list(pool.map(call, ids)) == [200] * 16
    for m in ids:
        (span,) = wait_spans(otel, 1, m=m)
        assert span["attributes"]["big"] == "x" * 15000
    lines = otel.stdout.splitlines()
    for m in ids:
        (line,) = [line for line in lines if line.endswith(f"huge {m}")]
        assert split_tag(line)[0::2] == (m, f"huge {m}")


def test_span_lines_start_lines_among_untagged_output(otel: ServerProcess) -> None:
    # Calls without a call id write untagged, from many threads at once.
    ids = [f"chat-{n}" for n in range(16)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = pool.map(lambda m: otel.request("GET", f"/chatty?m={m}").status, ids)
        assert list(statuses) == [200] * 16
    for m in ids:
        assert len(wait_spans(otel, 30, m=m)) == 30


def test_span_line_ends_an_unfinished_line(otel: ServerProcess) -> None:
    trace_id, _, traceparent = new_traceparent()
    headers = {"traceparent": traceparent, "X-Call-Id": "part-1"}
    assert otel.request("GET", "/partial?m=p1", headers=headers).text == "ok"
    (span,) = wait_spans(otel, 1, trace_id=trace_id)
    assert span["name"] == "between"
    lines = otel.stdout.splitlines()
    tag = f"[call:part-1 trace:{trace_id}] "
    assert f"{tag}before p1 " in lines
    assert f"{tag}after" in lines


def test_a_provider_of_the_function_is_kept(tmp_path: Path) -> None:
    source = textwrap.dedent(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )

        EXPORTER = InMemorySpanExporter()
        PROVIDER = TracerProvider()
        PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(PROVIDER)


        def handle(event, context):
            with trace.get_tracer("own").start_as_current_span("mine"):
                pass
            return {
                "own": [span.name for span in EXPORTER.get_finished_spans()],
                "same": trace.get_tracer_provider() is PROVIDER,
            }
        """
    )
    with running(OTEL, OTEL.write(tmp_path / "app", source)) as server:
        trace_id, parent, traceparent = new_traceparent()
        answer = server.request("GET", "/", headers={"traceparent": traceparent}).json()
        assert answer == {"own": ["mine"], "same": True}
        (span,) = wait_spans(server, 1, trace_id=trace_id)
        assert (span["name"], span["parent_id"]) == ("mine", parent)
        assert "Overriding" not in server.stderr


def test_pool_instance_finds_the_sdk_when_specialised(tmp_path: Path) -> None:
    folder = PYTHON.write(tmp_path / "app", SPANS_HANDLER)
    with running(PYTHON, folder, PLAT_POOL_TOKEN="tok") as server:
        body = {"function": "pooled", "version": "1", "paths": [str(SITE_PACKAGES)]}
        resp = server.request(
            "POST", "/.plat/specialize", json.dumps(body), {"X-Plat-Pool-Token": "tok"}
        )
        assert resp.status == 200, resp.text
        assert server.request("GET", "/provider").text == "TracerProvider"
        trace_id, _, traceparent = new_traceparent()
        server.request("GET", "/span?m=pool", headers={"traceparent": traceparent})
        found = wait_spans(server, 2, trace_id=trace_id)
        assert {span["name"] for span in found} == {"work", "child"}
