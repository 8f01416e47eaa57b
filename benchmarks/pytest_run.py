"""Running a selection of the test suite from a benchmark, and reading what it did.

:func:`run_pytest` runs pytest in a subprocess (the repository as its working
folder, no ``PLAT_*`` variables from the caller) with a JUnit XML report, and
returns one :class:`Case` per test: its outcome, time, the ``record_property``
figures it recorded and the first line of its failure. Tests failing is a result,
not an error; pytest itself failing (usage error, nothing collected, interrupted)
raises BenchError.
"""

from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.context import REPO, BenchError
from benchmarks.shell import timed

# pytest's exit codes: 0 all passed, 1 some failed; anything else means it did not run.
_RAN = (0, 1)


@dataclass
class Case:
    """One test as pytest reported it."""

    name: str  # module path and test name, e.g. chaos/test_disk_full.py::test_...
    outcome: str  # "pass", "fail", "error" or "skip"
    seconds: float
    message: str = ""  # the first line of a failure, error or skip reason
    properties: dict[str, str] = field(default_factory=dict)


@dataclass
class PytestRun:
    cases: list[Case]
    seconds: float  # wall time of the whole run
    output: str  # pytest's stdout and stderr

    def count(self, outcome: str) -> int:
        return sum(1 for c in self.cases if c.outcome == outcome)


def run_pytest(
    targets: Sequence[str],
    junit: Path,
    *,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 1800,
) -> PytestRun:
    """Run pytest on ``targets`` (paths relative to the repository); see the module doc."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PLAT_")}
    base.update(env or {})
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rN"]
    # The legacy JUnit flavour carries record_property figures (xunit2 refuses them).
    cmd += ["--junitxml", str(junit), "-o", "junit_family=legacy", *args, *targets]
    seconds, proc = timed(cmd, env=base, timeout=timeout, check=False, cwd=REPO)
    output = proc.stdout + proc.stderr
    if proc.returncode not in _RAN or not junit.is_file():
        tail = "\n".join(output.strip().splitlines()[-20:])
        raise BenchError(f"pytest exited {proc.returncode}:\n{tail}")
    return PytestRun(parse_junit(junit.read_text()), seconds, output)


def parse_junit(text: str) -> list[Case]:
    """The test cases of a pytest JUnit XML report."""
    cases = []
    for element in ET.fromstring(text).iter("testcase"):
        module = (element.get("classname") or "").replace(".", "/")
        module = module.removeprefix("tests/")
        name = f"{module}.py::{element.get('name', '')}" if module else element.get("name", "")
        outcome, message = "pass", ""
        for tag, label in (("failure", "fail"), ("error", "error"), ("skipped", "skip")):
            found = element.find(tag)
            if found is not None:
                outcome = label
                text = (found.get("message") or found.text or "").strip()
                message = text.splitlines()[0] if text else ""
                break
        properties = {
            p.get("name", ""): p.get("value", "") for p in element.iter("property") if p.get("name")
        }
        cases.append(Case(name, outcome, float(element.get("time") or 0.0), message, properties))
    return cases
