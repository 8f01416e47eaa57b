"""Save → serve with ``plat dev``, in containers and with the process backend.

A tiny python function runs under ``plat dev``; each edit rewrites handler.py to
return a new marker, and the time from the write to the first gateway answer
carrying that marker is one sample. The baseline, measured in the same run on
the same daemon, is a code-only change deployed the ordinary way (``plat
deploy``: a real image build, or a prepared folder for the process backend)
until the gateway serves it.
"""

from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import time

from benchmarks.harness import BenchError, Context, Plat, median, write_python_function
from benchmarks.report import Figure, Section, Table, fmt

NAME = "hot-reload"
TITLE = "Hot reload: save → serve with plat dev"

HANDLER = 'def handle(event, context):\n    return "{marker}"\n'


def _serve_wait(url: str, marker: str, timeout: float = 60.0) -> float:
    """Seconds until ``url`` answers with ``marker`` (polling every few ms)."""
    import urllib.request

    started = time.perf_counter()
    deadline = started + timeout
    while time.perf_counter() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.read().decode() == marker:
                    return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.003)
    raise BenchError(f"{url} never served {marker!r} within {timeout:.0f} s")


def _p95(values: list[float]) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def _measure(ctx: Context, backend: str, edits: int) -> tuple[list[float], list[float]]:
    plat = Plat(ctx.work, backend, ctx.log)
    plat.env["PLAT_BACKEND"] = backend
    with plat:
        name = f"hot-{backend}-{ctx.run_id}"
        folder = write_python_function(
            ctx.work / backend,
            name,
            HANDLER.format(marker="start"),
            manifest_extra="auth: public\n",
        )
        url = plat.function_url(name)
        plat.built.add(name)
        plat.deployed.append(name)
        log = ctx.work / f"dev-{backend}.log"
        with log.open("w") as fh:
            dev = subprocess.Popen(
                [sys.executable, "-m", "plat", "dev", str(folder)],
                env=plat.env,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        samples: list[float] = []
        try:
            deadline = time.monotonic() + 300
            while "watching" not in log.read_text():
                if time.monotonic() > deadline or dev.poll() is not None:
                    raise BenchError(f"plat dev did not start:\n{log.read_text()[-2000:]}")
                time.sleep(0.1)
            _serve_wait(url, "start")
            time.sleep(1.0)  # the watcher is live
            for i in range(edits):
                marker = f"edit-{i}"
                (folder / "handler.py").write_text(HANDLER.format(marker=marker))
                samples.append(_serve_wait(url, marker))
                ctx.log(f"{backend}: save → serve {samples[-1] * 1000:.0f} ms")
                time.sleep(0.3)
        finally:
            dev.send_signal(signal.SIGINT)
            try:
                dev.wait(timeout=30)
            except subprocess.TimeoutExpired:
                dev.kill()
        baseline: list[float] = []
        for i in range(max(2, edits // 4)):
            marker = f"deploy-{i}"
            (folder / "handler.py").write_text(HANDLER.format(marker=marker))
            started = time.perf_counter()
            plat.cli("deploy", str(folder))
            _serve_wait(url, marker)
            baseline.append(time.perf_counter() - started)
        return samples, baseline


def run(ctx: Context) -> Section:
    edits = ctx.pick(3, 20)
    section = Section(NAME, TITLE, method=__doc__ or "")
    table = Table(
        "save → serve (seconds)",
        ["backend", "edits", "median", "p95", "plat deploy (median)"],
    )
    for backend in ("container", "process"):
        samples, baseline = _measure(ctx, backend, edits)
        table.rows.append(
            [
                backend,
                str(len(samples)),
                fmt(median(samples), "s"),
                fmt(_p95(samples), "s"),
                fmt(median(baseline), "s"),
            ]
        )
        section.figures.append(
            Figure(
                f"save → serve, {backend} (median of {len(samples)})",
                median(samples),
                "s",
                f"plat deploy of the same change ({backend})",
                median(baseline),
                note=f"p95 {_p95(samples) * 1000:.0f} ms; target "
                + ("≤ 1 s" if backend == "container" else "≤ 300 ms"),
            )
        )
    section.tables.append(table)
    return section


if __name__ == "__main__":  # pragma: no cover - manual runs
    raise SystemExit("run it through `python -m benchmarks --only hot-reload`")
