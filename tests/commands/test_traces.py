"""`plat traces` and `plat trace`: the waterfall's layout on hand-written spans (tree
order, columns, bar positions, hostile names and shapes), the list's table, and the
arguments refused before any request."""

from __future__ import annotations

import json
import random
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from rich.cells import cell_len
from rich.console import Console

from plat.commands.traces import (
    MIN_BAR,
    Span,
    TraceSummary,
    axis,
    bar,
    clean,
    columns,
    parse_trace_id,
    render,
    traces_table,
    tree_order,
    waterfall,
)
from plat.errors import PlatError
from tests.commands.remote import create_tenant, remote
from tests.fixtures import PlatRunner, make_runner, stop_daemon, wait_for
from tests.functions import write_python_function

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def span(
    span_id: str,
    parent_id: str | None,
    start: float,
    end: float,
    name: str | None = None,
    *,
    service: str = "plat",
    kind: str = "internal",
    error: bool = False,
    attributes: dict[str, Any] | None = None,
) -> Span:
    return {
        "span_id": span_id,
        "parent_id": parent_id,
        "name": name or span_id,
        "kind": kind,
        "service": service,
        "function": "hello",
        "tenant": "default",
        "start": start,
        "end": end,
        "error": error,
        "attributes": attributes or {},
    }


def shape(spans: list[Span]) -> list[tuple[str, int]]:
    return [(s["span_id"], depth) for s, depth in tree_order(spans)]


def plain(spans: list[Span], width: int) -> list[str]:
    cols, rows = waterfall(spans, width)
    t0, t1 = axis(spans)
    lines = [text.plain for text in render(cols, rows, t1 - t0)]
    assert all(cell_len(line) == cols.total <= width for line in lines), (width, cols)
    return lines


# One call as the gateway records it, under the caller's span "caller" (not in the trace).
CALL = [
    span("upstream", "server", 10.030, 10.090, kind="client"),
    span("server", "caller", 10.000, 10.100, "GET /function/hello", kind="server",
         attributes={"http.response.status_code": 200}),
    span("queue", "server", 10.001, 10.010),
    span("cold", "server", 10.010, 10.030, "cold start"),
    span("handler", "upstream", 10.040, 10.080, service="hello"),
]  # fmt: skip


def test_an_orphan_is_a_root_and_children_follow_their_parent_by_start() -> None:
    assert shape(CALL) == [
        ("server", 0),
        ("queue", 1),
        ("cold", 1),
        ("upstream", 1),
        ("handler", 2),
    ]


def test_several_calls_in_one_trace_are_roots_in_the_order_they_started() -> None:
    second = [
        span("s2", None, 11.0, 11.5, "POST /function/world", kind="server"),
        span("u2", "s2", 11.1, 11.4),
    ]
    assert shape(second + CALL) == [
        ("server", 0),
        ("queue", 1),
        ("cold", 1),
        ("upstream", 1),
        ("handler", 2),
        ("s2", 0),
        ("u2", 1),
    ]


def test_cycles_self_parents_and_duplicate_ids_still_show_every_span_once() -> None:
    spans = [
        span("a", "b", 1.0, 2.0),
        span("b", "a", 1.5, 2.0),
        span("self", "self", 0.5, 0.6),
        span("dup", None, 3.0, 4.0),
        span("dup", None, 3.5, 3.6),
        span("kid", "dup", 3.2, 3.3),
    ]
    placed = shape(spans)
    assert sorted(placed) == sorted(
        [("self", 0), ("a", 0), ("b", 1), ("dup", 0), ("kid", 1), ("dup", 0)]
    )
    assert placed[:3] == [("self", 0), ("dup", 0), ("kid", 1)]  # roots first, then the cycle


def test_a_child_that_starts_before_its_parent_stays_under_it_and_widens_the_axis() -> None:
    spans = [span("parent", None, 5.0, 6.0), span("child", "parent", 4.0, 5.5)]
    assert shape(spans) == [("parent", 0), ("child", 1)]
    assert axis(spans) == (4.0, 6.0)
    cols, rows = waterfall(spans, 80)
    parent, child = rows
    assert (child.offset, parent.offset + parent.length) == (0, cols.bar)
    assert child.offset < parent.offset < child.offset + child.length


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0.0, 10.0, (0, 10)),  # the whole axis
        (2.0, 5.0, (2, 3)),
        (2.5, 2.6, (2, 1)),  # shorter than a cell: one cell
        (9.99, 10.0, (9, 1)),  # at the very end: inside the column
        (10.0, 10.0, (9, 1)),  # an instant at the end
        (3.0, 3.0, (3, 1)),  # an instant: one cell where it happened
        (4.0, 3.0, (4, 1)),  # an end before the start (skew within a span)
        (-5.0, 20.0, (0, 10)),  # outside the axis: clamped
    ],
)
def test_bars_on_a_ten_cell_axis(start: float, end: float, expected: tuple[int, int]) -> None:
    assert bar(start, end, 0.0, 10.0, 10) == expected


def test_a_trace_of_instants_has_bars_of_one_cell_and_no_division_by_zero() -> None:
    spans = [span("a", None, 7.0, 7.0), span("b", "a", 7.0, 7.0)]
    _, rows = waterfall(spans, 60)
    assert [(r.offset, r.length, r.instant, r.duration) for r in rows] == [
        (0, 1, True, "0.00 ms"),
        (0, 1, True, "0.00 ms"),
    ]
    assert "▏" in plain(spans, 60)[1]
    assert bar(1.0, 2.0, 5.0, 5.0, 10) == (0, 1)
    assert bar(1.0, 2.0, 0.0, 5.0, 0) == (0, 0)


def test_the_waterfall_lines_up_durations_services_and_status() -> None:
    lines = plain(CALL, 120)
    assert lines[0].split()[:3] == ["SPAN", "SERVICE", "DURATION"]
    assert lines[0].rstrip().endswith("100.0 ms")  # the axis: 0 .. the trace's duration
    assert lines[1].startswith("GET /function/hello 200 ")
    assert lines[5].startswith("    handler ")
    assert " hello " in lines[5] and "40.0 ms" in lines[5]
    assert "20.0 ms" in lines[3] and "cold start" in lines[3]
    server_bar = lines[1].index("█")
    assert lines[1].count("█") == len(lines[1]) - server_bar  # the whole axis
    # Bars keep the order of time: queue, then cold start, then upstream.
    assert lines[2].index("█") < lines[3].index("█") < lines[4].index("█")


def test_error_spans_are_red() -> None:
    spans = [*CALL, span("boom", "handler", 10.05, 10.06, "db", service="hello", error=True)]
    cols, rows = waterfall(spans, 100)
    assert [r.style for r in rows if r.error] == ["red"]
    console = Console(width=100, force_terminal=True, color_system="standard", record=True)
    t0, t1 = axis(spans)
    for text in render(cols, rows, t1 - t0):
        console.print(text, no_wrap=True, overflow="crop", crop=True)
    boom = [line for line in console.export_text(styles=True).splitlines() if " db " in line]
    assert boom and "\x1b[31m" in boom[0]


@pytest.mark.parametrize("width", [20, 40, 41, 59, 60, 80, 200, 500])
def test_every_line_fits_the_terminal(width: int) -> None:
    long_name = "a span name that is much longer than any terminal column " * 3
    spans = [*CALL, span("long", "handler", 10.05, 10.07, long_name, service="s" * 40)]
    plain(spans, width)  # asserts that every line fits
    cols, _ = waterfall(spans, width)
    assert (cols.service == 0) == (width < 60)
    if width >= 40:
        assert cols.bar >= MIN_BAR
        assert cols.name >= 12


def test_forty_columns_still_shows_names_and_bars() -> None:
    lines = plain(CALL, 40)
    assert lines[2].startswith("  queue ")
    assert lines[4].startswith("  upstream ")
    assert all("█" in line for line in lines[1:])


def test_very_deep_nesting_keeps_names_visible_and_fits() -> None:
    depth = 3000  # deeper than Python's recursion limit
    spans = [span(f"s{i}", f"s{i - 1}" if i else None, i, 2 * depth - i) for i in range(depth)]
    random.Random(1).shuffle(spans)
    assert shape(spans) == [(f"s{i}", i) for i in range(depth)]
    lines = plain(spans, 80)
    assert lines[1].startswith("s0 ")
    deepest = lines[-1]
    assert "…s2999" in deepest  # the indent is capped and marked, the name is shown


def test_a_thousand_spans_are_placed_once_each_parent_before_its_children_fast() -> None:
    rng = random.Random(7)
    spans = [span("root", "caller", 0.0, 1.0)]
    for i in range(1, 1000):
        parent = spans[rng.randrange(len(spans))]
        start = rng.uniform(parent["start"], parent["end"])
        spans.append(span(f"s{i}", parent["span_id"], start, rng.uniform(start, parent["end"])))
    rng.shuffle(spans)
    began = time.monotonic()
    placed = tree_order(spans)
    lines = plain(spans, 120)
    assert time.monotonic() - began < 2
    assert len(lines) == 1001
    ids = [s["span_id"] for s, _ in placed]
    assert sorted(ids) == sorted(s["span_id"] for s in spans)
    where = {span_id: index for index, span_id in enumerate(ids)}
    depth = {s["span_id"]: d for s, d in placed}
    for s in spans:
        if s["parent_id"] in where:
            assert where[s["parent_id"]] < where[s["span_id"]]
            assert depth[s["span_id"]] == depth[s["parent_id"]] + 1


def test_hostile_names_cannot_drive_the_terminal() -> None:
    spans = [span("x", None, 0.0, 1.0, "\x1b[2J\x1b[31mboom\nline\r[red]x[/red]", service="\x07s")]
    lines = plain(spans, 100)
    assert "\x1b" not in "".join(lines) and "\n" not in "".join(lines)
    assert "[red]x[/red]" in lines[1]  # shown as written, not as markup
    assert clean("a\x00b\u2028c\x9bd") == "a\ufffdb\ufffdc\ufffdd"


def test_columns_give_the_bar_the_room_the_names_leave() -> None:
    cols = columns(200, ["short"], ["plat"], ["1.00 ms"])
    assert (cols.name, cols.service, cols.duration) == (5, 7, 8)
    assert cols.total == 200
    narrow = columns(40, ["x" * 100], ["plat"], ["1.00 ms"])
    assert narrow.service == 0 and narrow.total == 40 and narrow.bar >= MIN_BAR


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "xyz",
        TRACE[:-1],
        TRACE + "0",
        TRACE[:-1] + "g",
        "0" * 32,
        f"00-{TRACE}-00f067aa0ba902b7-01",
        "x" * 10_000,
    ],
)
def test_a_malformed_trace_id_is_refused(raw: str) -> None:
    with pytest.raises(PlatError, match="32 hex digits expected") as info:
        parse_trace_id(raw)
    assert len(info.value.message) < 120


def test_a_trace_id_is_read_in_either_case() -> None:
    assert parse_trace_id(f" {TRACE.upper()}\n") == TRACE


def summary(tenant: str = "default", **extra: Any) -> TraceSummary:
    row: TraceSummary = {
        "trace_id": TRACE,
        "function": "hello",
        "tenant": tenant,
        "version": "v1",
        "ts": 1000.0,
        "duration": 0.0123,
        "status": 200,
        "cold": False,
        "call_id": "c1",
    }
    row.update(extra)  # type: ignore[typeddict-item]
    return row


def table_text(rows: list[TraceSummary], width: int = 160, now: float = 1090.0) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(traces_table(rows, now, width))
    return console.export_text()


def test_the_list_shows_a_tenant_column_only_beside_other_tenants() -> None:
    default = table_text([summary(), summary(status=503, cold=True, ts=1089.5)])
    assert "TENANT" not in default
    header, first, second = default.splitlines()
    assert header.split() == ["TRACE", "ID", "FUNCTION", "STATUS", "DURATION", "START", "AGE"]
    assert first.split() == [TRACE, "hello", "200", "12.3", "ms", "warm", "1m"]
    assert second.split() == [TRACE, "hello", "503", "12.3", "ms", "cold", "0s"]
    mixed = table_text([summary(), summary("acme")])
    assert "TENANT" in mixed and "acme" in mixed


def test_a_narrow_terminal_lists_whole_trace_ids_on_lines_of_their_own() -> None:
    text = table_text([summary("acme", function="[bold]x", status=500)], width=40)
    assert text.splitlines() == [TRACE, "  [bold]x acme 500 12.3 ms warm 1m"]
    assert all(len(line) <= 40 for line in table_text([summary()], width=79).splitlines())


def test_refused_arguments_reach_no_daemon(tmp_path: Path) -> None:
    runner = make_runner(tmp_path)
    bad = runner.run("trace", "not-a-trace", check=False)
    assert bad.returncode == 1, bad.stderr
    assert "32 hex digits expected" in bad.stderr and "Traceback" not in bad.stderr
    both = runner.run("traces", "--slowest", "--errors", check=False)
    assert both.returncode == 1 and "exclude each other" in both.stderr
    zero = runner.run("traces", "--limit", "0", check=False)
    assert zero.returncode == 2 and "Traceback" not in zero.stderr
    assert not (runner.home / "run").exists()  # no daemon was started to ask


# -- end to end: the real CLI against a real daemon (process backend) and gateway --------

# A handler with a span of its own (opentelemetry-sdk is in its requirements) and a
# log line; ?status=N answers N, ?sleep=S takes S seconds first.
TRACED = """
import time

from opentelemetry import trace


def handle(event, context):
    query = dict(event.query)
    with trace.get_tracer("hello").start_as_current_span("work"):
        print("working in", context.trace_id)
        time.sleep(float(query.get("sleep", "0")))
    return {"statusCode": int(query.get("status", "200")), "body": "ok"}
"""
PLAIN = """
def handle(event, context):
    return "ok"
"""
SLEEPY = """
import time


def handle(event, context):
    time.sleep(float(dict(event.query).get("sleep", "0")))
    return "ok"
"""
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def plat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatRunner]:
    """A daemon on the process backend whose idle functions of min 0 stop after 1 s."""
    runner = make_runner(tmp_path_factory.mktemp("traces"))
    runner.env["PLAT_SCALE_TO_ZERO_AFTER"] = "1s"
    try:
        runner.run("daemon", "start", "--backend", "process")
        yield runner
    finally:
        stop_daemon(runner)


@pytest.fixture(scope="module")
def hello(plat: PlatRunner, tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = write_python_function(
        tmp_path_factory.mktemp("fn"), "hello", TRACED, requirements="opentelemetry-sdk\n"
    )
    plat.run("deploy", str(folder))
    return "hello"


def call(plat: PlatRunner, path: str, trace_id: str | None = None, **headers: str) -> str:
    """Calls ``path`` through the gateway with a traceparent; the trace id."""
    trace_id = trace_id or secrets.token_hex(16)
    headers["traceparent"] = f"00-{trace_id}-{CALLER_SPAN}-01"
    plat.http("GET", path, headers=headers)
    return trace_id


def listed(runner: PlatRunner, *args: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(runner.run("traces", *args, "--json").stdout)["traces"]
    return rows


def test_nothing_traced_says_so_with_the_settings_that_turn_tracing_off(
    plat: PlatRunner,
) -> None:
    empty = plat.run("traces", "--since", "1s")
    assert empty.stdout == ""
    assert "no traced calls in the last 1s" in empty.stderr
    assert "OTEL_SDK_DISABLED" in empty.stderr and "OTEL_TRACES_SAMPLER" in empty.stderr


def test_a_call_with_a_traceparent_is_listed_and_drawn(plat: PlatRunner, hello: str) -> None:
    trace_id = call(plat, f"/function/{hello}")
    (row,) = [r for r in listed(plat, hello) if r["trace_id"] == trace_id]
    assert (row["function"], row["tenant"], row["status"]) == ("hello", "default", 200)
    assert trace_id in plat.run("traces").stdout

    data = json.loads(plat.run("trace", trace_id.upper(), "--json").stdout)
    assert data["trace_id"] == trace_id
    by_name = {s["name"]: s for s in data["spans"]}
    server, upstream, work = by_name["GET /function/hello"], by_name["upstream"], by_name["work"]
    assert server["parent_id"] == CALLER_SPAN  # the caller's span: not in the trace
    assert upstream["parent_id"] == server["span_id"]
    assert work["parent_id"] == upstream["span_id"] and work["service"] == "hello"

    shown = plat.run("trace", trace_id)
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"trace {trace_id}")
    (server_line,) = [line for line in lines if line.startswith("GET /function/hello 200 ")]
    (upstream_line,) = [line for line in lines if line.startswith("  upstream ")]
    (work_line,) = [line for line in lines if line.startswith("    work ")]
    assert " hello " in work_line and "█" in work_line
    assert lines.index(server_line) < lines.index(upstream_line) < lines.index(work_line)
    assert all(len(line) <= 200 for line in lines)
    assert f"working in {trace_id}" in shown.stdout.split("logs", 1)[1]


def test_errors_and_slowest_pick_their_calls(plat: PlatRunner, hello: str) -> None:
    failed = call(plat, f"/function/{hello}?status=503")
    slow = call(plat, f"/function/{hello}?sleep=0.4")
    quick = call(plat, f"/function/{hello}")
    assert [r["trace_id"] for r in listed(plat, hello, "--limit", "3")] == [quick, slow, failed]
    errors = listed(plat, hello, "--errors")
    assert failed in [r["trace_id"] for r in errors]
    assert all(r["status"] >= 500 for r in errors)
    assert listed(plat, hello, "--slowest", "--limit", "1")[0]["trace_id"] == slow
    table = plat.run("traces", hello, "--errors").stdout
    assert failed in table and " 503 " in table and slow not in table
    drawn = plat.run("trace", failed).stdout
    assert "GET /function/hello 503" in drawn


def test_unknown_traces_and_functions_are_the_apis_errors(plat: PlatRunner) -> None:
    unknown = secrets.token_hex(16)
    missing = plat.run("trace", unknown, check=False)
    assert missing.returncode == 1 and f"no trace {unknown} is kept" in missing.stderr
    assert "Traceback" not in missing.stderr
    nope = plat.run("traces", "nope", check=False)
    assert nope.returncode == 1 and "no function named 'nope'" in nope.stderr
    bad = plat.run("traces", "--since", "forever", check=False)
    assert bad.returncode == 1 and "bad since" in bad.stderr
    assert "Traceback" not in nope.stderr + bad.stderr


def test_a_tenant_sees_only_its_own_traces(plat: PlatRunner, hello: str, tmp_path: Path) -> None:
    acme = remote(plat, create_tenant(plat, "acme"))
    beta = remote(plat, create_tenant(plat, "beta"))
    acme.run("deploy", str(write_python_function(tmp_path, "hello", PLAIN)))
    theirs = call(plat, "/function/hello.acme")
    ours = call(plat, f"/function/{hello}")
    assert [r["trace_id"] for r in listed(acme)] == [theirs]
    assert "GET /function/hello 200" in acme.run("trace", theirs).stdout
    denied = beta.run("trace", theirs, check=False)
    assert denied.returncode == 1 and f"no trace {theirs} is kept" in denied.stderr
    assert listed(beta) == []
    # The admin lists every tenant's calls, with a TENANT column beside the default's.
    table = plat.run("traces").stdout
    assert "TENANT" in table and theirs in table and ours in table
    chosen = json.loads(plat.run("--tenant", "acme", "traces", "--json").stdout)["traces"]
    assert [(r["trace_id"], r["tenant"]) for r in chosen] == [(theirs, "acme")]


def instances(plat: PlatRunner, name: str) -> int:
    (found,) = [f for f in json.loads(plat.run("ls", "--json").stdout) if f["name"] == name]
    return int(found["instances"])


def test_a_cold_start_and_a_wait_in_the_queue_show_as_their_own_rows(
    plat: PlatRunner, tmp_path: Path
) -> None:
    scale = "scale: {min: 0, max: 1, concurrency: 1}\n"
    plat.run("deploy", str(write_python_function(tmp_path, "lazy", SLEEPY, extra_manifest=scale)))
    assert wait_for(lambda: instances(plat, "lazy") == 0, timeout=30)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(call, plat, "/function/lazy?sleep=0.5")
        time.sleep(0.2)  # the first call holds the only slot when the second comes
        second = pool.submit(call, plat, "/function/lazy")
        cold, queued = first.result(), second.result()
    rows = {r["trace_id"]: r for r in listed(plat, "lazy")}
    assert rows[cold]["cold"] is True and rows[queued]["cold"] is False
    started = plat.run("trace", cold).stdout.splitlines()
    # A pool of started instances makes most cold starts a specialisation of one.
    start = ("  cold start ", "  pool specialisation ")
    assert any(line.startswith(start) and "█" in line for line in started), "\n".join(started)
    waited = plat.run("trace", queued).stdout.splitlines()
    assert any(line.startswith("  queue ") and "█" in line for line in waited), "\n".join(waited)
    assert "cold" in plat.run("traces", "lazy").stdout
