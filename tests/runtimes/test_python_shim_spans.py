"""The Python shim's handler spans: a function with OpenTelemetry's SDK gets its
spans written as ``plat-span:`` lines, children of the request's traceparent; one
without it imports nothing of it and writes none. Real shim processes over HTTP,
run with ``-S`` as the process backend runs them; the venv's site-packages on
PYTHONPATH stands for a function's installed requirements."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import secrets
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.runtimes import ServerProcess, split_tag
from tests.runtimes.shims import PYTHON, running, served

pytestmark = pytest.mark.timeout(60)

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


# --- without OpenTelemetry ---------------------------------------------------------

NO_OTEL_HANDLER = textwrap.dedent(
    """
    import sys


    def handle(event, context):
        print(f"plain {context.trace_id}")
        return sorted(sys.modules)
    """
)


def test_without_opentelemetry_nothing_of_it_is_imported(tmp_path: Path) -> None:
    with running(PYTHON, PYTHON.write(tmp_path / "app", NO_OTEL_HANDLER)) as server:
        plain = server.request("GET", "/").json()
        trace_id, _, traceparent = new_traceparent()
        traced = server.request("GET", "/", headers={"traceparent": traceparent, "X-Call-Id": "n"})
        # Parsing the traceparent imports nothing either.
        assert traced.json() == plain
        assert not [name for name in plain if name.startswith("opentelemetry")]
        assert "platshim.handlerspans" not in plain
        assert f"[call:n trace:{trace_id}] plain {trace_id}" in server.wait_lines("plain", 2)
        assert PREFIX not in server.stdout
        assert server.stderr == ""


def _api_only(root: Path) -> Path:
    """A dependency folder with OpenTelemetry's API but not its SDK."""
    package = root / "opentelemetry"
    package.mkdir(parents=True)
    for entry in (SITE_PACKAGES / "opentelemetry").iterdir():
        if entry.name not in {"sdk", "exporter", "proto"}:
            (package / entry.name).symlink_to(entry)
    for pattern in ("opentelemetry_api-*.dist-info", "typing_extensions.py"):
        for entry in SITE_PACKAGES.glob(pattern):
            (root / entry.name).symlink_to(entry)
    return root


def test_the_api_alone_writes_no_spans(tmp_path: Path) -> None:
    deps = _api_only(tmp_path / "deps")
    folder = PYTHON.write(tmp_path / "app", SPANS_HANDLER)
    with running(PYTHON, folder, PYTHONPATH=str(deps)) as server:
        trace_id, _, traceparent = new_traceparent()
        resp = server.request("GET", "/span?m=api", headers={"traceparent": traceparent})
        assert resp.json() == {"trace_id": trace_id}
        assert server.request("GET", "/provider").text == "ProxyTracerProvider"
        assert PREFIX not in server.stdout
        assert server.stderr == ""


def test_a_broken_opentelemetry_does_not_stop_the_function(tmp_path: Path) -> None:
    files = {"opentelemetry/__init__.py": "raise RuntimeError('broken install')\n"}
    folder = PYTHON.write(tmp_path / "app", NO_OTEL_HANDLER)
    for name, text in files.items():
        os.makedirs(folder / os.path.dirname(name), exist_ok=True)
        (folder / name).write_text(text)
    with running(PYTHON, folder) as server:
        headers = {"traceparent": new_traceparent()[2]}
        assert server.request("GET", "/", headers=headers).status == 200
        assert "handler spans are off: RuntimeError: broken install" in server.stderr
