"""The property-based fuzz tests of hostile input, run long.

Runs whichever of the fuzz test modules exist (the gateway's HTTP parser, the control
API, `plat.yaml` loading, archives) with pytest in a subprocess and Hypothesis'
statistics, with `PLAT_FUZZ_PROFILE=long` (many more examples per property, random
rather than derandomised; see `tests/fuzzing.py`). Quick mode runs only the manifest
properties, with the default (fast, derandomised) profile: the default test run runs
them all that way anyway. Reports, per property, the
examples Hypothesis ran (passing, failing, invalid) and the result; a failing property
is reported, not an error of the benchmark.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

from benchmarks.context import REPO, BenchError, Context
from benchmarks.pytest_run import run_pytest
from benchmarks.report import Figure, Section, Table, fmt

NAME = "fuzz"
TITLE = "Fuzz: property tests of hostile input"

MODULES = (
    "tests/daemon/http/test_fuzz.py",
    "tests/daemon/test_control_fuzz.py",
    "tests/test_manifest_fuzz.py",
    "tests/test_archive*.py",
)
QUICK = "tests/test_manifest_fuzz.py"

_TEST_RE = re.compile(r"^(\S+::\S+):\s*$", re.MULTILINE)
# "150 passing, 0 failing, and 3 invalid test cases" (older: "150 passing examples, ...")
_EXAMPLES_RE = re.compile(
    r"(\d+) passing(?: examples?)?, (\d+) failing(?: examples?)?, (?:and )?(\d+) invalid"
)


@dataclass
class Examples:
    passing: int = 0
    failing: int = 0
    invalid: int = 0

    @property
    def total(self) -> int:
        return self.passing + self.failing + self.invalid


def parse_statistics(text: str) -> dict[str, Examples]:
    """Examples per test from pytest's ``--hypothesis-show-statistics`` output (summed over
    Hypothesis' phases: reuse, generate, shrink)."""
    found: dict[str, Examples] = defaultdict(Examples)
    heads = list(_TEST_RE.finditer(text))
    for head, after in zip(heads, [*heads[1:], None], strict=True):
        block = text[head.end() : after.start() if after else len(text)]
        stats = found[head.group(1).removeprefix("tests/")]
        for passing, failing, invalid in _EXAMPLES_RE.findall(block):
            stats.passing += int(passing)
            stats.failing += int(failing)
            stats.invalid += int(invalid)
    return dict(found)


def targets(quick: bool = False) -> list[str]:
    """The fuzz modules that exist (relative to the repository); with ``quick``, only
    :data:`QUICK` when it exists."""
    found = sorted({str(p.relative_to(REPO)) for m in MODULES for p in REPO.glob(m)})
    return [QUICK] if quick and QUICK in found else found


def run(ctx: Context) -> Section:
    modules = targets(ctx.quick)
    if not modules:
        raise BenchError(f"none of the fuzz test modules exists: {', '.join(MODULES)}")
    profile = "fast" if ctx.quick else "long"
    env = {} if ctx.quick else {"PLAT_FUZZ_PROFILE": "long"}
    ctx.log(f"pytest ({profile} profile): {' '.join(modules)}")
    result = run_pytest(
        modules, ctx.work / "junit.xml", args=["--hypothesis-show-statistics"], env=env
    )
    examples = parse_statistics(result.output)
    totals = Examples()
    detail = Table(
        f"per property ({profile} profile)",
        ["property", "result", "examples", "passing", "failing", "invalid", "time"],
    )
    for case in result.cases:
        stats = examples.get(case.name, Examples())
        totals.passing += stats.passing
        totals.failing += stats.failing
        totals.invalid += stats.invalid
        detail.rows.append(
            [
                case.name,
                case.outcome + (f": {case.message}" if case.message else ""),
                f"{stats.total:,}",
                f"{stats.passing:,}",
                str(stats.failing),
                f"{stats.invalid:,}",
                fmt(case.seconds, "s"),
            ]
        )
    passed = result.count("pass")
    section = Section(NAME, TITLE, method=__doc__ or "")
    section.figures += [
        Figure(
            "properties that held",
            passed,
            "count",
            "properties run",
            len(result.cases),
            better="higher",
            note=f"{profile} profile",
        ),
        Figure(
            "failing examples",
            totals.failing,
            "count",
            "examples run",
            totals.total,
            note=f"{totals.total:,} examples in {result.seconds:.0f} s",
        ),
    ]
    section.tables.append(detail)
    section.notes.append(f"Modules: {', '.join(f'`{m}`' for m in modules)}.")
    missing = [m for m in MODULES if not list(REPO.glob(m))]
    if missing:
        section.notes.append(f"Not present (yet), so not run: {', '.join(missing)}.")
    ctx.log(f"{passed} of {len(result.cases)} properties held; {totals.total} examples")
    return section
