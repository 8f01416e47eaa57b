"""Runs the selected benchmarks in order and assembles the report.

Contract: :data:`BENCHMARKS` maps each benchmark's name to its module's ``run``
(``Context -> Section``). :func:`run_suite` runs them one after another (never
in parallel: they would measure each other), records a failing benchmark's
error in its section and carries on, and always returns a complete
:class:`~benchmarks.report.Report`.
"""

from __future__ import annotations

import secrets
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import (
    asgi,
    async_calls,
    builds,
    chaos,
    cold_start,
    fuzz,
    gateway,
    hooks,
    hot_reload,
    logs,
    scale,
    soak,
    tracing,
    warm,
)
from benchmarks.context import BenchError, Context
from benchmarks.machine import check_tools, machine, versions
from benchmarks.report import Report, Section

Runner = Callable[[Context], Section]

BENCHMARKS: dict[str, tuple[str, Runner]] = {
    warm.NAME: (warm.TITLE, warm.run),
    gateway.NAME: (gateway.TITLE, gateway.run),
    asgi.NAME: (asgi.TITLE, asgi.run),
    builds.NAME: (builds.TITLE, builds.run),
    scale.NAME: (scale.TITLE, scale.run),
    hot_reload.NAME: (hot_reload.TITLE, hot_reload.run),
    cold_start.NAME: (cold_start.TITLE, cold_start.run),
    logs.NAME: (logs.TITLE, logs.run),
    tracing.NAME: (tracing.TITLE, tracing.run),
    async_calls.NAME: (async_calls.TITLE, async_calls.run),
    hooks.NAME: (hooks.TITLE, hooks.run),
    soak.NAME: (soak.TITLE, soak.run),
    fuzz.NAME: (fuzz.TITLE, fuzz.run),
    chaos.NAME: (chaos.TITLE, chaos.run),
}
TOOLS = ("wrk", "nginx", "podman", "buildah")


def make_logger(started: float) -> Callable[[str], None]:
    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    return log


def run_suite(
    names: Sequence[str], *, quick: bool, keep: bool = False, functions: int | None = None
) -> Report:
    """Run ``names`` (keys of BENCHMARKS) in the given order; returns the report.

    The temporary work folder (function sources, PLAT_HOMEs with their daemon logs,
    nginx configurations) is deleted at the end unless ``keep`` is set. ``functions``
    overrides the number of functions the scale benchmark deploys.
    """
    started = time.monotonic()
    log = make_logger(started)
    report = Report(
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        mode="quick" if quick else "full",
        machine=machine(),
        versions=versions(),
        command="python -m benchmarks" + (" --quick" if quick else ""),
    )
    check_tools(TOOLS)
    run_id = secrets.token_hex(3)
    work = Path(tempfile.mkdtemp(prefix=f"plat-bench-{run_id}-"))
    try:
        for name in names:
            title, runner = BENCHMARKS[name]
            log(f"== {name}: {title}")
            ctx = Context(
                quick=quick,
                work=work / name,
                run_id=run_id,
                log=lambda msg, _n=name: log(f"{_n}: {msg}"),  # type: ignore[misc]
                functions=functions,
            )
            ctx.work.mkdir(parents=True)
            began = time.monotonic()
            try:
                section = runner(ctx)
            except BenchError as exc:
                section = Section(name, title, error=str(exc))
            except Exception as exc:
                traceback.print_exc()
                section = Section(name, title, error=f"{type(exc).__name__}: {exc}")
            section.seconds = time.monotonic() - began
            if section.error:
                log(f"{name} failed: {section.error}")
            report.sections.append(section)
    finally:
        if keep:
            log(f"kept the work folder {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        report.seconds = time.monotonic() - started
    return report
