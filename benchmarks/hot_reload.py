"""Save → serve with ``plat dev``, in containers and with the process backend.

A tiny python function runs under ``plat dev``; each edit rewrites handler.py to
return a new marker, and the time from the write to the first gateway answer
carrying that marker is one sample. The edits start once the pre-warmed pool
has an instance (and, in containers, the image is unpacked for it): a few
seconds after `plat dev` starts; the table says how many reloads the pool
served. The baseline, measured in the same run on
the same daemon, is a code-only change deployed the ordinary way (``plat
deploy``: a real image build, or a prepared folder for the process backend)
until the gateway serves it.

In containers, a few dependency changes follow (full mode): each edit writes
``requirements.txt`` anew (the same package, pinned, and a comment naming the
edit, so every edit is a new set of dependency files) with a new marker, and the
time from the write to the marker's first answer is one sample: a new stack image
with the package installed from the index, then the code on it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from benchmarks.context import BenchError, Context
from benchmarks.daemon import Plat
from benchmarks.functions import write_python_function
from benchmarks.report import Figure, Section, Table, fmt
from benchmarks.stats import median, p95

NAME = "hot-reload"
TITLE = "Hot reload: save → serve with plat dev"

HANDLER = 'def handle(event, context):\n    return "{marker}"\n'
DEP_HANDLER = 'import humanize\n\n\ndef handle(event, context):\n    return "{marker}"\n'
PACKAGE = "humanize==4.17.0"


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


def _pool_counts(plat: Plat) -> tuple[int, int]:
    """(claims, misses) of the python pool so far."""
    pools = plat.api("/v1/status").get("pool", {}).get("pools", [])
    rows = [p for p in pools if str(p.get("key", "")).startswith("python/")]
    return (rows[0]["claimed"], rows[0]["misses"]) if rows else (0, 0)


def _pool_warm(plat: Plat, name: str, backend: str, timeout: float = 120.0) -> None:
    """Wait until the pool has an instance and (containers) the image is unpacked for it:
    a few seconds after `plat dev` starts, before a developer's first edit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pools = plat.api("/v1/status").get("pool", {}).get("pools", [])
        ready = any(p.get("ready") for p in pools)
        unpacked = backend != "container" or any((plat.home / "unpacked").glob(f"*{name}*/done"))
        if ready and unpacked:
            return
        time.sleep(0.1)
    raise BenchError(f"the pre-warmed pool did not get ready for {name}")


@dataclass
class Measured:
    samples: list[float]  # save -> serve of code edits under plat dev
    baseline: list[float]  # plat deploy of a code edit -> serve
    claims: str
    dependencies: list[float]  # save -> serve of dependency edits under plat dev


def _measure(ctx: Context, backend: str, edits: int, dep_edits: int) -> Measured:
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
            _pool_warm(plat, name, backend)
            before = _pool_counts(plat)
            for i in range(edits):
                marker = f"edit-{i}"
                (folder / "handler.py").write_text(HANDLER.format(marker=marker))
                samples.append(_serve_wait(url, marker))
                ctx.log(f"{backend}: save → serve {samples[-1] * 1000:.0f} ms")
                time.sleep(0.3)
            after = _pool_counts(plat)
            dependencies: list[float] = []
            for i in range(dep_edits):
                marker = f"deps-{i}"
                (folder / "requirements.txt").write_text(f"{PACKAGE}\n# {ctx.run_id} {i}\n")
                (folder / "handler.py").write_text(DEP_HANDLER.format(marker=marker))
                dependencies.append(_serve_wait(url, marker, timeout=300.0))
                ctx.log(f"{backend}: dependency change → serve {dependencies[-1]:.2f} s")
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
        claims = f"{after[0] - before[0]} claimed, {after[1] - before[1]} missed"
        return Measured(samples, baseline, claims, dependencies)


def run(ctx: Context) -> Section:
    edits = ctx.pick(3, 20)
    section = Section(NAME, TITLE, method=__doc__ or "")
    table = Table(
        "save → serve (seconds)",
        ["backend", "edits", "median", "p95", "pool during the edits", "plat deploy (median)"],
    )
    for backend in ("container", "process"):
        dep_edits = ctx.pick(0, 5) if backend == "container" else 0
        measured = _measure(ctx, backend, edits, dep_edits)
        samples, baseline, claims = measured.samples, measured.baseline, measured.claims
        table.rows.append(
            [
                backend,
                str(len(samples)),
                fmt(median(samples), "s"),
                fmt(p95(samples), "s"),
                claims,
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
                note=f"p95 {p95(samples) * 1000:.0f} ms; target "
                + ("≤ 1 s" if backend == "container" else "≤ 300 ms"),
            )
        )
        deps = measured.dependencies
        if deps:
            section.figures.append(
                Figure(
                    f"dependency change → serve, {backend} (median of {len(deps)})",
                    median(deps),
                    "s",
                    "target",
                    3.0,
                    note=f"{PACKAGE} installed from the index each time",
                )
            )
            table.rows.append(
                [
                    f"{backend}, dependency changes",
                    str(len(deps)),
                    fmt(median(deps), "s"),
                    fmt(p95(deps), "s"),
                    "-",
                    fmt(median(baseline), "s"),
                ]
            )
    section.tables.append(table)
    return section


if __name__ == "__main__":  # pragma: no cover - manual runs
    raise SystemExit("run it through `python -m benchmarks --only hot-reload`")
