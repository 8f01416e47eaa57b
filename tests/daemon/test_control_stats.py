"""The statistics behind `plat stats`: nearest-rank percentiles and per-function summaries."""

from __future__ import annotations

import pytest

from plat.daemon.control import percentile, summarize
from plat.daemon.store import Invocation


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 0.5, None),
        ([1.0], 0.99, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.0),
        ([float(i) for i in range(1, 101)], 0.95, 95.0),
        ([float(i) for i in range(1, 101)], 0.99, 99.0),
        ([float(i) for i in range(1, 101)], 1.0, 100.0),
    ],
)
def test_percentile(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected


def _call(status: int, duration: float, cold: bool = False) -> Invocation:
    return Invocation(0.0, "fn", "v", status, duration, 10, 20, cold, "c")


def test_summarize_counts_errors_client_errors_and_cold_starts() -> None:
    records = [_call(200, 0.01), _call(200, 0.02, cold=True), _call(500, 0.5), _call(404, 0.001)]
    out = summarize(records)
    assert out["invocations"] == 4
    assert out["errors"] == 1
    assert out["client_errors"] == 1
    assert out["error_rate"] == 0.25
    assert out["cold_starts"] == 1
    assert out["p50"] == 0.01
    assert out["p99"] == 0.5
    assert (out["bytes_in"], out["bytes_out"]) == (40, 80)


def test_summarize_empty() -> None:
    out = summarize([])
    assert out["invocations"] == 0
    assert out["error_rate"] == 0.0
    assert out["p50"] is None
