"""``python -m benchmarks [--quick] [--only NAME] [--output PATH] [--json PATH] ...``.

Runs every benchmark (or those named by ``--only``) and writes the Markdown
report: ``docs/benchmarks.md`` in a full run; with ``--only`` or in ``--quick``
mode (each benchmark briefly, for the test suite) a temporary file unless
``--output`` is given, so a partial run never replaces the full report.
``--json`` also writes the raw figures; ``--functions N`` changes how many
functions the scale benchmark deploys; ``--keep`` keeps the temporary work
folder (daemon logs) for debugging. SIGTERM and Ctrl-C still clean up (functions,
daemons, images) before exiting. Exits 1 if any benchmark failed
(the report is written anyway), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from pathlib import Path

from benchmarks.context import REPO, BenchError
from benchmarks.report import write
from benchmarks.suite import BENCHMARKS, run_suite

DEFAULT_OUTPUT = REPO / "docs" / "benchmarks.md"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run plat's benchmarks against their baselines and write a Markdown report.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="run each benchmark briefly (about a minute in all)"
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help=f"run only this benchmark (repeatable, or comma-separated): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help=f"the Markdown report (default: {DEFAULT_OUTPUT.relative_to(REPO)}; "
        "a temporary file with --only or --quick)",
    )
    parser.add_argument("--json", type=Path, help="also write the raw results as JSON here")
    parser.add_argument(
        "--functions",
        type=int,
        metavar="N",
        help="functions the scale benchmark deploys (default: 200; 5 with --quick)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary work folder (PLAT_HOMEs with daemon logs) for debugging",
    )
    args = parser.parse_args(argv)
    if args.functions is not None and args.functions < 1:
        parser.error("--functions must be at least 1")
    names: list[str] = []
    for item in args.only or []:
        names += [n.strip() for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    args.names = [n for n in BENCHMARKS if n in names] if names else list(BENCHMARKS)
    return args


def output_path(args: argparse.Namespace) -> Path:
    """Where the report goes: docs/benchmarks.md only for a full run."""
    if args.output is not None:
        return Path(args.output)
    if args.quick or args.only:
        fd, raw = tempfile.mkstemp(prefix="plat-benchmarks-", suffix=".md")
        os.close(fd)
        return Path(raw)
    return DEFAULT_OUTPUT


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # SystemExit unwinds through every benchmark's cleanup (functions removed,
    # daemons stopped, images deleted), which SIGTERM's default action would skip.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    output = output_path(args)
    try:
        report = run_suite(args.names, quick=args.quick, keep=args.keep, functions=args.functions)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    write(report, output, args.json)
    failed = [s.key for s in report.sections if s.error]
    print(f"wrote {output}", file=sys.stderr)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
