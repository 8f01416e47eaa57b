"""The benchmark suite's quick mode runs end to end and reports numbers.

It runs ``python -m benchmarks --quick`` (real Podman, Buildah, wrk and nginx)
and checks that every benchmark ran, that each headline figure has a finite
value and a finite baseline, and that the Markdown report holds them. It does
not judge the timings: a shared CI machine makes them too noisy for that.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.suite import BENCHMARKS

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.container


@pytest.mark.timeout(1200)
def test_quick_run_measures_every_benchmark(tmp_path: Path) -> None:
    output = tmp_path / "benchmarks.md"
    raw = tmp_path / "benchmarks.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLAT_")}
    cmd = [sys.executable, "-m", "benchmarks", "--quick", "--output", str(output)]
    proc = subprocess.run(
        [*cmd, "--json", str(raw)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1170,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-6000:]}"

    data = json.loads(raw.read_text())
    assert data["mode"] == "quick"
    sections = {s["key"]: s for s in data["sections"]}
    assert list(sections) == list(BENCHMARKS)
    for key, section in sections.items():
        assert section["error"] is None, f"{key}: {section['error']}"
        assert section["figures"], f"{key} reported no figures"
        for fig in section["figures"]:
            what = f"{key}: {fig['name']}"
            assert math.isfinite(fig["value"]), what
            assert math.isfinite(fig["baseline"]), what
            assert fig["baseline_name"], what
        assert section["tables"], f"{key} reported no tables"

    text = output.read_text()
    for heading in ("## Machine", "## Versions", "## Summary"):
        assert heading in text
    for title, _run in BENCHMARKS.values():
        assert f"## {title}" in text
    for tool in ("plat", "Python", "Podman", "Buildah", "wrk", "nginx"):
        assert f"| {tool} |" in text
    assert "Failed" not in text
