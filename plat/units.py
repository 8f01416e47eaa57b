"""Parsing of the human units used in manifests: durations and sizes."""

from __future__ import annotations

import math
import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_FACTORS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|K|M|G|k|B)?\s*$")
_SIZE_FACTORS = {
    None: 1,
    "B": 1,
    "K": 1000,
    "k": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
}


def parse_duration(value: str | int | float) -> float:
    """Seconds from ``30s``, ``500ms``, ``2m``, ``1h`` or a bare number of seconds.

    Raises ValueError naming the accepted forms.
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 500ms or 2m")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration; use e.g. 30s, 500ms, 2m or 1h")
        seconds = float(match.group(1)) * _DURATION_FACTORS[match.group(2)]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError("a duration must be a finite number greater than zero, e.g. 30s")
    return seconds


def parse_size(value: str | int) -> int:
    """Bytes from ``256Mi``, ``1Gi``, ``512M`` or a bare number of bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 256Mi or 1Gi")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a size; use e.g. 128Mi, 1Gi or 512M")
        size = int(float(match.group(1)) * _SIZE_FACTORS[match.group(2)])
    if size <= 0:
        raise ValueError("a size must be greater than zero")
    return size


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    return f"{seconds / 60:.1f} min"


def format_size(size: int) -> str:
    """``256Mi``, ``1.5Gi``, ``512Ki`` or bytes: the units manifests use."""
    for unit, factor in (("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if size >= factor:
            value = size / factor
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.1f}{unit}"
    return f"{size}B"
