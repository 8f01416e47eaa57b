"""plat.units: the duration and size parsers used by manifests and settings."""

from __future__ import annotations

import math

import pytest

from plat.units import format_duration, parse_duration, parse_size


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30s", 30.0),
        ("500ms", 0.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1.5m", 90.0),
        ("0.25s", 0.25),
        ("30", 30.0),
        ("  30 s  ", 30.0),
        ("10 ms", 0.01),
        (30, 30.0),
        (0.5, 0.5),
        (2.0, 2.0),
    ],
)
def test_parse_duration_accepts(value: str | float, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)
    assert isinstance(parse_duration(value), float)


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("", "not a duration"),
        ("abc", "not a duration"),
        ("30x", "not a duration"),
        ("30S", "not a duration"),
        ("1d", "not a duration"),
        ("-5s", "not a duration"),
        ("1e3s", "not a duration"),
        ("s", "not a duration"),
        ("30s 10ms", "not a duration"),
        ("0", "greater than zero"),
        ("0s", "greater than zero"),
        (0, "greater than zero"),
        (-1, "greater than zero"),
        (-0.5, "greater than zero"),
        (True, "expected a duration"),
        (False, "expected a duration"),
    ],
)
def test_parse_duration_rejects(value: object, needle: str) -> None:
    with pytest.raises(ValueError, match=needle) as info:
        parse_duration(value)  # type: ignore[arg-type]
    if needle == "not a duration":
        # The message shows the accepted forms, so the user can fix the value.
        assert "30s" in str(info.value)
        assert "500ms" in str(info.value)


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_parse_duration_rejects_non_finite(value: float) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("256Mi", 256 * 1024**2),
        ("1Gi", 1024**3),
        ("512Ki", 512 * 1024),
        ("512M", 512 * 1000**2),
        ("2G", 2 * 1000**3),
        ("10K", 10_000),
        ("10k", 10_000),
        ("100B", 100),
        ("100", 100),
        ("0.5Gi", 512 * 1024**2),
        ("1.5Ki", 1536),
        (" 64 Mi ", 64 * 1024**2),
        (4096, 4096),
    ],
)
def test_parse_size_accepts(value: str | int, size: int) -> None:
    assert parse_size(value) == size
    assert isinstance(parse_size(value), int)


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("", "not a size"),
        ("lots", "not a size"),
        ("256MB", "not a size"),
        ("256mi", "not a size"),
        ("1KiB", "not a size"),
        ("1Ti", "not a size"),
        ("-1Mi", "not a size"),
        ("Mi", "not a size"),
        ("0", "greater than zero"),
        ("0Mi", "greater than zero"),
        ("0.1", "greater than zero"),
        (0, "greater than zero"),
        (-5, "greater than zero"),
        (True, "expected a size"),
    ],
)
def test_parse_size_rejects(value: object, needle: str) -> None:
    with pytest.raises(ValueError, match=needle) as info:
        parse_size(value)  # type: ignore[arg-type]
    if needle == "not a size":
        assert "128Mi" in str(info.value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0 ms"),
        (0.0004, "0 ms"),
        (0.012, "12 ms"),
        (0.5, "500 ms"),
        (1.0, "1.00 s"),
        (1.234, "1.23 s"),
        (59.5, "59.50 s"),
        (119.99, "119.99 s"),
        (120.0, "2.0 min"),
        (90 * 60, "90.0 min"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
