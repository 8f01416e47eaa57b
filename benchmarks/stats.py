"""Summary statistics of a benchmark's samples."""

from __future__ import annotations

import statistics
from collections.abc import Iterable


def median(values: Iterable[float]) -> float:
    items = list(values)
    return statistics.median(items) if items else float("nan")


def p95(values: list[float]) -> float:
    """The 95th percentile (inclusive method); the one value of a single sample."""
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=20, method="inclusive")[18]
