"""plat.slo: the ``slo:`` block of plat.yaml, through the manifest's loader, and the
burn-rate policy it is watched with."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from plat.errors import ManifestError, PlatError
from plat.manifest import load_manifest, validate_manifest
from plat.slo import ALL_WINDOWS, POLICY, SHOWN_WINDOWS, Latency, Slo, parse_percentile
from tests.fuzzing import fuzz_settings
from tests.test_manifest import HEAD, load_error, make_function

FAST = fuzz_settings("slo", fast=150, long=2000)


def loaded(tmp_path: Path, slo: str) -> Slo | None:
    return load_manifest(make_function(tmp_path / "fn", HEAD + f"slo: {slo}\n")).slo


def test_the_design_example_reads_as_two_objectives(tmp_path: Path) -> None:
    slo = loaded(tmp_path, "{availability: 99.9, latency: {p95: 300ms}}")
    assert slo is not None
    assert slo.availability == 99.9
    assert slo.latency == Latency(percentile=95.0, threshold=0.3)
    assert slo.slis == ["availability", "latency"]
    assert slo.objective("availability") == 99.9 and slo.objective("latency") == 95.0
    assert math.isclose(slo.budget("availability"), 0.001)
    assert math.isclose(slo.budget("latency"), 0.05)


@pytest.mark.parametrize(
    ("text", "availability", "latency"),
    [
        ("{availability: 99.95}", 99.95, None),
        ("{availability: 99}", 99.0, None),
        ("{availability: 0.5}", 0.5, None),
        ("{latency: {p99: 1s}}", None, (99.0, 1.0)),
        ("{latency: {p99.9: 2.5s}}", None, (99.9, 2.5)),
        ("{latency: {p50: 20ms}}", None, (50.0, 0.02)),
        ("{latency: {p1: 1h}}", None, (1.0, 3600.0)),
        ("{latency: {p90: 0.25}}", None, (90.0, 0.25)),  # a bare number is seconds
        ("\n  availability: 99.5\n  latency:\n    p95: 1m", 99.5, (95.0, 60.0)),
    ],
)
def test_valid_objectives(
    tmp_path: Path, text: str, availability: float | None, latency: tuple[float, float] | None
) -> None:
    slo = loaded(tmp_path, text)
    assert slo is not None
    assert slo.availability == availability
    got = None if slo.latency is None else (slo.latency.percentile, slo.latency.threshold)
    assert got == (None if latency is None else pytest.approx(latency))


def test_no_slo_is_none_and_dumps_without_the_key(tmp_path: Path) -> None:
    manifest = load_manifest(make_function(tmp_path / "fn", HEAD))
    assert manifest.slo is None
    assert "slo" not in manifest.to_dict()
    assert loaded(tmp_path, "") is None  # `slo:` with nothing after it


def test_an_slo_round_trips_as_a_user_writes_it(tmp_path: Path) -> None:
    manifest = load_manifest(
        make_function(
            tmp_path / "fn", HEAD + "slo: {availability: 99.9, latency: {p99.9: 300ms}}\n"
        )
    )
    dumped = manifest.to_dict()
    assert dumped["slo"] == {"availability": 99.9, "latency": {"p99.9": 0.3}}
    assert validate_manifest(dumped) == manifest
    only_latency = validate_manifest({**dumped, "slo": {"latency": {"p95": "2s"}}})
    assert only_latency.to_dict()["slo"] == {"latency": {"p95": 2.0}}  # no availability: None


# Each row: the slo value, what the message must name, what tells the fix.
BAD = [
    pytest.param("99.9", "'slo'", "must be a mapping", id="not-a-mapping"),
    pytest.param("[99.9]", "'slo'", "must be a mapping", id="a-list"),
    pytest.param("{}", "'slo'", "set availability, latency or both", id="empty"),
    pytest.param("{availability: 100}", "'slo.availability'", "no error budget", id="100"),
    pytest.param("{availability: 100.0}", "'slo.availability'", "below 100", id="100.0"),
    pytest.param("{availability: 101}", "'slo.availability'", "below 100", id="over-100"),
    pytest.param("{availability: 0}", "'slo.availability'", "above 0", id="zero"),
    pytest.param("{availability: -5}", "'slo.availability'", "above 0", id="negative"),
    pytest.param("{availability: .nan}", "'slo.availability'", "finite", id="nan"),
    pytest.param("{availability: .inf}", "'slo.availability'", "finite", id="inf"),
    pytest.param("{availability: 1.0e+400}", "'slo.availability'", "finite", id="huge-float"),
    pytest.param(f"{{availability: {10**400}}}", "'slo.availability'", "finite", id="huge-int"),
    pytest.param("{availability: true}", "'slo.availability'", "a number", id="bool"),
    pytest.param("{availability: '99.9%'}", "'slo.availability'", "a number", id="text"),
    pytest.param("{availability: [1]}", "'slo.availability'", "a number", id="list"),
    pytest.param("{availabilty: 99.9}", "'slo.availabilty'", "availability, latency", id="typo"),
    pytest.param("{latency: 300ms}", "'slo.latency'", "{p95: 300ms}", id="latency-scalar"),
    pytest.param("{latency: {}}", "'slo.latency'", "got 0 entries", id="latency-empty"),
    pytest.param(
        "{latency: {p95: 1s, p99: 2s}}", "'slo.latency'", "got 2 entries", id="two-percentiles"
    ),
    pytest.param("{latency: {p100: 1s}}", "'slo.latency'", "unknown percentile", id="p100"),
    pytest.param("{latency: {p0: 1s}}", "'slo.latency'", "unknown percentile", id="p0"),
    pytest.param("{latency: {P95: 1s}}", "'slo.latency'", "unknown percentile", id="upper-p"),
    pytest.param("{latency: {q95: 1s}}", "'slo.latency'", "e.g. p50, p95", id="q95"),
    pytest.param("{latency: {p95.: 1s}}", "'slo.latency'", "unknown percentile", id="p95-dot"),
    pytest.param("{latency: {p-5: 1s}}", "'slo.latency'", "unknown percentile", id="p-5"),
    pytest.param("{latency: {95: 1s}}", "'slo.latency'", "unknown percentile", id="bare-number"),
    pytest.param("{latency: {p95: fast}}", "'slo.latency'", "not a duration", id="not-duration"),
    pytest.param("{latency: {p95: 0s}}", "'slo.latency'", "greater than zero", id="zero-time"),
    pytest.param("{latency: {p95: 2h}}", "'slo.latency'", "at most 1h", id="too-long"),
    pytest.param("{latency: {p95: 1e400s}}", "'slo.latency'", "p95", id="absurd-time"),
    pytest.param("{latency: {p95: null}}", "'slo.latency'", "p95", id="null-time"),
    pytest.param(
        "{latency: {percentile: 95, threshold: 1s}}", "'slo.latency'", "got 2", id="long-form"
    ),
]


@pytest.mark.parametrize(("slo", "field", "fix"), BAD)
def test_bad_slos_name_the_field_and_the_fix(
    tmp_path: Path, slo: str, field: str, fix: str
) -> None:
    message = load_error(make_function(tmp_path / "fn", HEAD + f"slo: {slo}\n"))
    assert field in message, message
    assert fix in message, message
    assert message.count("\n") == 0  # one problem, one line
    assert len(message) < 400


@pytest.mark.parametrize("key", ["p95", "p1", "p99", "p99.9", "p99.999", "p50.5"])
def test_percentiles(key: str) -> None:
    assert parse_percentile(key) == float(key[1:])
    assert Latency(percentile=float(key[1:]), threshold=1.0).name == key


@pytest.mark.parametrize(
    "key", ["p100", "p0", "p", "p99.9999", "p1e2", "p 95", "p\u0669\u0665", 95, None]
)
def test_unknown_percentiles(key: Any) -> None:
    with pytest.raises(ValueError, match="unknown percentile"):
        parse_percentile(key)


def test_the_policy_is_the_workbooks() -> None:
    table = [(p.severity, p.factor, p.long.name, p.short.name) for p in POLICY]
    assert table == [
        ("page", 14.4, "1h", "5m"),
        ("page", 6.0, "6h", "30m"),
        ("ticket", 3.0, "1d", "2h"),
        ("ticket", 1.0, "3d", "6h"),
    ]
    # Each entry spends the share of a 30-day budget the workbook names in its long window.
    spent = [p.factor * p.long.seconds / (30 * 86400) for p in POLICY]
    assert spent == pytest.approx([0.02, 0.05, 0.10, 0.10])
    assert [w.name for w in SHOWN_WINDOWS] == ["5m", "1h", "6h", "1d", "30d"]
    assert [w.name for w in ALL_WINDOWS] == ["5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"]


slo_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["p95", "p99.9", "300ms", "1e400s", "99.9", "p100", "availability"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["availability", "latency", "p95", "p0", "p99.9", "x"])
            | st.text(max_size=5),
            inner,
            max_size=3,
        )
    ),
    max_leaves=8,
)


@FAST
@given(value=slo_values)
def test_any_slo_value_is_an_slo_or_a_manifest_error(value: Any) -> None:
    data = {"name": "hello", "runtime": "python", "slo": value}
    try:
        manifest = validate_manifest(data)
    except PlatError as exc:
        assert isinstance(exc, ManifestError)
        assert "slo" in str(exc)
        return
    if manifest.slo is not None:
        assert 0 < (manifest.slo.availability or 50) < 100
        assert validate_manifest(manifest.to_dict()) == manifest
        yaml.safe_dump(manifest.to_dict())  # what the store keeps is plain data
