"""Where ``python -m benchmarks`` writes its report."""

from __future__ import annotations

from pathlib import Path

from benchmarks.__main__ import DEFAULT_OUTPUT, output_path, parse_args


def test_a_full_run_writes_the_committed_report() -> None:
    assert output_path(parse_args([])) == DEFAULT_OUTPUT


def test_a_partial_run_never_replaces_the_full_report() -> None:
    for argv in (["--only", "async"], ["--quick"], ["--only", "warm,async"]):
        path = output_path(parse_args(argv))
        try:
            assert path != DEFAULT_OUTPUT
            assert path.exists()
        finally:
            path.unlink(missing_ok=True)


def test_an_explicit_output_wins(tmp_path: Path) -> None:
    out = tmp_path / "r.md"
    assert output_path(parse_args(["--only", "async", "--output", str(out)])) == out
