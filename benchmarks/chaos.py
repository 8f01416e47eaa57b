"""Fault injection under load: the chaos tests, one row per scenario.

Runs `tests/chaos` (real daemons, Podman and loopback HTTP; each module's docstring
says what it injects and asserts) with pytest in a subprocess and reports whether
each scenario held, how long it took, the figures it recorded (replacement and
recovery times) and, when it did not hold, the first line of the assertion that
failed. Quick mode runs only the queued-disconnect scenario (the default test run
runs them all anyway).
"""

from __future__ import annotations

from benchmarks.context import Context
from benchmarks.pytest_run import run_pytest
from benchmarks.report import Figure, Section, Table, fmt

NAME = "chaos"
TITLE = "Chaos: faults injected under load"
SUITE = "tests/chaos"
QUICK = ("tests/chaos/test_queued_disconnect.py",)


def run(ctx: Context) -> Section:
    targets = list(QUICK) if ctx.quick else [SUITE]
    ctx.log(f"pytest {' '.join(targets)}")
    result = run_pytest(targets, ctx.work / "junit.xml")
    table = Table("per scenario", ["scenario", "result", "time", "measured", "why it failed"])
    for case in result.cases:
        measured = ", ".join(f"{k} {v}" for k, v in sorted(case.properties.items()))
        table.rows.append(
            [
                case.name,
                case.outcome,
                fmt(case.seconds, "s"),
                measured or "-",
                case.message if case.outcome != "pass" else "",
            ]
        )
    passed = result.count("pass")
    ctx.log(f"{passed} of {len(result.cases)} scenarios held in {result.seconds:.0f} s")
    section = Section(NAME, TITLE, method=__doc__ or "")
    section.figures.append(
        Figure(
            "scenarios that held",
            passed,
            "count",
            "scenarios run",
            len(result.cases),
            better="higher",
            note=f"{result.seconds:.0f} s wall" + (", quick selection" if ctx.quick else ""),
        )
    )
    section.tables.append(table)
    return section
