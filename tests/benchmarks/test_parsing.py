"""Unit tests of the benchmark suite's pure parts: wrk's output, figures, Markdown."""

from __future__ import annotations

import math

import pytest

from benchmarks.context import BenchError
from benchmarks.report import Figure, Report, Section, Table, fmt, to_json, to_markdown
from benchmarks.wrk import WrkResult, parse_wrk, require_success

WRK_OUTPUT = """\
Running 5s test @ http://127.0.0.1:46729/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    11.02ms    4.51ms  61.90ms   80.12%
    Req/Sec     2.91k   312.15     3.45k    70.00%
  Latency Distribution
     50%  10.41ms
     75%  12.80ms
     90%  15.28ms
     99%    1.20s
  29047 requests in 5.01s, 2.57MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:   5798.12
Transfer/sec:    525.07KB
"""


def test_parse_wrk_reads_latencies_throughput_and_errors() -> None:
    result = parse_wrk(WRK_OUTPUT, connections=64, threads=2)
    assert result.requests == 29047
    assert result.seconds == pytest.approx(5.01)
    assert result.rps == pytest.approx(5798.12)
    assert result.p50 == pytest.approx(10.41)
    assert result.p90 == pytest.approx(15.28)
    assert result.p99 == pytest.approx(1200.0)  # seconds are converted to ms
    assert result.errors == 3 + 2 + 7


def test_parse_wrk_microseconds_and_no_error_lines() -> None:
    text = WRK_OUTPUT.replace("10.41ms", "224.00us").replace(
        "  Socket errors: connect 0, read 3, write 0, timeout 2\n  Non-2xx or 3xx responses: 7\n",
        "",
    )
    result = parse_wrk(text, connections=1, threads=1)
    assert result.p50 == pytest.approx(0.224)
    assert result.errors == 0


def test_parse_wrk_refuses_output_without_figures() -> None:
    with pytest.raises(BenchError, match="could not parse"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n", 1, 1)


def test_require_success_rejects_runs_of_errors() -> None:
    ok = WrkResult(64, 2, 5.0, 1000, 200.0, 1.0, 2.0, 3.0, errors=5)
    require_success("plat", ok)
    bad = WrkResult(64, 2, 5.0, 1000, 200.0, 1.0, 2.0, 3.0, errors=1000)
    with pytest.raises(BenchError, match="1000 of 1000"):
        require_success("plat", bad)


def test_figure_ratio_is_plat_over_baseline_and_none_without_a_baseline() -> None:
    assert Figure("p50", 3.0, "ms", "direct", 1.5).ratio == pytest.approx(2.0)
    assert Figure("cpu", 1.0, "%", "idle", 0.0).ratio is None
    assert Figure("x", 1.0, "s", "y", math.nan).ratio is None


def test_fmt_units() -> None:
    assert fmt(0.224, "ms") == "0.22 ms"
    assert fmt(150.4, "ms") == "150 ms"
    assert fmt(1234.4, "req/s") == "1,234 req/s"
    assert fmt(math.inf, "s") == "-"


def test_markdown_has_every_section_its_baselines_and_failures() -> None:
    ok = Section(
        "warm",
        "Warm path",
        "method text",
        [Figure("p50 latency, c=1", 1.1, "ms", "direct", 0.25)],
        [Table("wrk results", ["path", "p50"], [["plat", "1.10 ms"]])],
        ["a note"],
    )
    broken = Section("scale", "Scale", error="deploy failed")
    report = Report(
        date="2026-11-27 10:00 UTC",
        mode="quick",
        machine=[("cores", "2")],
        versions=[("plat", "0.1.0")],
        sections=[ok, broken],
    )
    text = to_markdown(report)
    assert "## Summary" in text and "## Warm path" in text and "## Scale" in text
    assert "| Warm path | p50 latency, c=1 | 1.10 ms | direct | 0.25 ms | 4.40\u00d7 |" in text
    assert "**Failed:** deploy failed" in text
    data = to_json(report)
    assert data["sections"][0]["figures"][0]["ratio"] == pytest.approx(4.4)
    assert data["sections"][1]["error"] == "deploy failed"
