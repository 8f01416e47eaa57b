"""Scale: many functions on one daemon, and many concurrent clients on one of them.

N tiny python functions (200 in full mode, 5 in quick mode) are deployed with
several ``plat deploy`` running in parallel. Measured against baselines taken
in the same run:

* the daemon's resident memory (VmRSS) and idle CPU, and the CPU of the
  container engine service it talks to, with N functions against the same
  daemon with none;
* the daemon's resident memory after ``plat rm`` of all N, against the same
  daemon before any;
* ``plat deploy`` wall time of the last deploys against the first ones (does a
  deploy get slower as functions pile up?);
* then, the first function deployed again: gateway latency and throughput with
  1,000 concurrent keep-alive clients (``wrk -c1000 -t2``; 100 in quick mode),
  against nginx and the instance directly under the same load, and the
  daemon's resident memory after it.

Everything is removed at the end (``plat rm`` each, then ``plat daemon stop``).
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.context import BenchError, Context
from benchmarks.daemon import DeployTiming, Plat, engine_service_pid
from benchmarks.functions import write_python_function
from benchmarks.net import http_get
from benchmarks.nginx import Nginx
from benchmarks.procfs import cpu_percent, cpu_seconds, mem_available_mib, rss_mib
from benchmarks.report import Figure, Section, Table, fmt
from benchmarks.stats import median
from benchmarks.wrk import WrkResult, require_success, wrk

NAME = "scale"
TITLE = "Scale"
HANDLER = """
def handle(event, context):
    return "ok"
"""
PARALLEL_DEPLOYS = 4
TARGET_SCALE = "scale: {min: 1, max: 1, concurrency: 10000}\n"
# The others scale to zero once their deploy has proven them ready.
IDLE_SCALE = "scale: {min: 0}\n"
PATHS = ("direct", "nginx", "plat")
DEPLOY_TARGET = 1.25  # s per function, all deploys end to end (200 in 250 s)


@dataclass
class Sample:
    """The daemon's footprint at one moment."""

    label: str
    rss: float  # MiB
    cpu: float  # % of one core, idle
    engine_cpu: float | None  # % of one core, the engine service plat started (if any)
    mem_available: float  # MiB, the whole host


def _sample(label: str, pid: int, window: float, windows: int) -> Sample:
    """RSS now; CPU as the median of ``windows`` windows of ``window`` s, so that one
    periodic job (a trim, a sweep) caught in a window does not stand for the idle rate."""
    engine = engine_service_pid(pid)
    cpus: list[float] = []
    engine_cpus: list[float] = []
    for _ in range(windows):
        engine_before = cpu_seconds(engine) if engine is not None else None
        cpus.append(cpu_percent(pid, window))
        if engine is not None and engine_before is not None:
            engine_cpus.append(100 * (cpu_seconds(engine) - engine_before) / window)
    engine_cpu = statistics.median(engine_cpus) if engine_cpus else None
    return Sample(label, rss_mib(pid), statistics.median(cpus), engine_cpu, mem_available_mib())


@dataclass
class Deploys:
    """How the N deploys went."""

    wanted: int
    lone: DeployTiming  # the first deploy, alone (fills the layer cache)
    parallel: list[DeployTiming]  # the others, PARALLEL_DEPLOYS at a time, in submit order
    total: float  # wall seconds for all of them
    retried: list[str] = field(default_factory=list)  # "name: error" of deploys retried once
    failed: list[str] = field(default_factory=list)  # "name: error" of deploys that failed twice
    replaced: int = 0  # "died; replacing it" warnings in the daemon log meanwhile
    removed: int = 0  # functions removed with `plat rm` at the end
    remove_seconds: float = 0.0  # wall seconds of those `plat rm`
    running: int = 0  # instances running once the min-0 functions scaled to zero

    @property
    def reached(self) -> int:
        return 1 + len(self.parallel)


def _deploy_all(
    ctx: Context, plat: Plat, folders: list[Path], names: list[str], budget: float
) -> Deploys:
    """Deploy the first function alone, the rest in parallel; stop starting new ones
    once ``budget`` seconds have passed."""
    count = len(names)
    ctx.log(f"deploying {count} functions: one alone, then {PARALLEL_DEPLOYS} at a time")
    started = time.perf_counter()
    lone = plat.deploy(folders[0], names[0])
    done = [1]

    retried: list[str] = []
    failed: list[str] = []

    def deploy(folder: Path, name: str) -> DeployTiming | None:
        if time.perf_counter() - started > budget:
            return None
        try:
            timing = plat.deploy(folder, name)
        except BenchError as first:
            # One retry: concurrent builds on a busy host hit transient storage errors.
            ctx.log(f"deploy of {name} failed, retrying once: {_last_line(str(first))}")
            retried.append(f"{name}: {_last_line(str(first))}")
            try:
                timing = plat.deploy(folder, name)
            except BenchError as second:
                ctx.log(f"deploy of {name} failed again: {_last_line(str(second))}")
                failed.append(f"{name}: {_last_line(str(second))}")
                return None
        done[0] += 1
        if done[0] % 20 == 0:
            ctx.log(f"{done[0]}/{count} deployed ({time.perf_counter() - started:.0f} s)")
        return timing

    pool = ThreadPoolExecutor(max_workers=PARALLEL_DEPLOYS)
    try:
        pairs = zip(folders[1:], names[1:], strict=True)
        futures = [pool.submit(deploy, f, n) for f, n in pairs]
        parallel = [t for t in (fut.result() for fut in futures) if t is not None]
    finally:
        # Interrupted (SIGTERM, Ctrl-C, an error): start no more deploys.
        pool.shutdown(wait=True, cancel_futures=True)
    result = Deploys(count, lone, parallel, time.perf_counter() - started, retried, failed)
    ctx.log(f"{result.reached} functions deployed in {result.total:.0f} s")
    if len(failed) > max(2, count // 20):
        raise BenchError(f"{len(failed)} deploys failed twice; the first: {failed[0]}")
    return result


def _last_line(text: str) -> str:
    """The most telling line of a failed command's output (its last error line)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith(("error", "unexpected"))]
    return (errors or lines or [""])[-1][:200]


def run(ctx: Context) -> Section:
    """Deploy N functions, sample the daemon, remove them, sample it again, then load one
    function; returns the section."""
    count: int = ctx.functions or ctx.pick(5, 200)
    # Time budgets (s): past them no new `plat deploy` / `plat rm` starts.
    # (--functions N beyond the default gets ~2 s per deploy and 0.75 s per removal.)
    budget: float = max(ctx.pick(180.0, 10 * 60.0), 2.0 * count)
    rm_budget: float = max(ctx.pick(120.0, 150.0), 0.75 * count)
    connections: int = ctx.pick(100, 1000)
    seconds: int = ctx.pick(1, 5)
    settle: float = ctx.pick(0.5, 5.0)
    window: float = ctx.pick(1.0, 5.0)
    windows: int = ctx.pick(1, 3)
    prefix = f"bench-s{ctx.run_id}-"
    names = [f"{prefix}{i:03d}" for i in range(count)]
    # The loaded function takes every request at once, as nginx forwards them (plat's
    # default, 8 in flight per instance and 256 queued, would answer most with 429).
    folders = [
        write_python_function(
            ctx.work / "functions",
            n,
            HANDLER,
            manifest_extra=TARGET_SCALE if i == 0 else IDLE_SCALE,
        )
        for i, n in enumerate(names)
    ]
    samples: list[Sample] = []
    results: dict[str, WrkResult] = {}
    plat = Plat(ctx.work, NAME, ctx.log)
    plat.env["PLAT_SCALE_TO_ZERO_AFTER"] = "10s"
    with plat:
        pid = int(plat.status()["pid"])
        time.sleep(settle)
        samples.append(_sample("idle daemon, 0 functions", pid, window, windows))
        deploys = _deploy_all(ctx, plat, folders, names, budget)
        reached = deploys.reached
        deploys.replaced = plat.log_count("died; replacing it")
        listing = plat.functions()
        deployed = sum(1 for fn in listing if fn["name"] in names)
        if deployed != reached:
            raise BenchError(f"only {deployed} of {reached} functions are listed")
        # The min-0 functions' first instances stop after PLAT_SCALE_TO_ZERO_AFTER.
        time.sleep(ctx.pick(12.0, 15.0))
        running = sum(fn.get("instances", 0) for fn in plat.functions() if fn["name"] in names)
        deploys.running = running
        time.sleep(settle)
        samples.append(_sample(f"{reached} functions deployed", pid, window, windows))

        ctx.log(f"removing {reached} functions (plat rm, 8 at a time)")
        deploys.removed, deploys.remove_seconds = plat.remove_all(
            list(plat.deployed), budget=rm_budget
        )
        time.sleep(settle)
        samples.append(_sample(f"after `plat rm` of {deploys.removed}", pid, window, windows))

        # The load, after the removals (so that they are weighed against the daemon
        # as it was before any function, not against what a burst of connections
        # left in its heap): the first function, deployed again.
        target = names[0]
        plat.deploy(folders[0], target)
        address = str(plat.ready_instance(target)["address"])
        auth = {"Authorization": plat.auth_header()}
        with Nginx(ctx.work / "nginx-scale", address) as nginx:
            targets: dict[str, tuple[str, dict[str, str]]] = {
                "direct": (f"http://{address}/", {}),
                "nginx": (nginx.url, {}),
                "plat": (plat.function_url(target), auth),
            }
            for label, (url, headers) in targets.items():
                if http_get(url, headers) != 200:
                    raise BenchError(f"{label} ({url}) did not answer 200")
                ctx.log(f"wrk {label} c={connections}, {seconds} s")
                if not ctx.quick:  # warm-up
                    wrk(url, connections=connections, threads=2, seconds=1, headers=headers)
                res = wrk(url, connections=connections, threads=2, seconds=seconds, headers=headers)
                require_success(label, res)
                results[label] = res
        time.sleep(settle)
        samples.append(_sample(f"after the c={connections} load", pid, window, windows))
    return _section(deploys, connections, seconds, samples, results)


def _section(
    deploys: Deploys,
    connections: int,
    seconds: int,
    samples: list[Sample],
    results: dict[str, WrkResult],
) -> Section:
    count = deploys.reached
    idle, loaded, removed, after_load = samples
    walls = [t.wall for t in deploys.parallel] or [deploys.lone.wall]
    k = max(1, min(10, len(walls) // 4))
    first_k, last_k = median(walls[:k]), median(walls[-k:])
    plat_r, nginx_r, direct_r = results["plat"], results["nginx"], results["direct"]
    under = f"nginx, c={connections}"
    figures = [
        Figure(
            f"daemon resident memory, {count} functions",
            loaded.rss,
            "MiB",
            "same daemon, 0 functions",
            idle.rss,
            note=f"+{(loaded.rss - idle.rss) * 1024 / count:.0f} KiB per function",
        ),
        Figure(
            f"daemon CPU while idle, {count} functions",
            loaded.cpu,
            "%",
            "same daemon, 0 functions",
            idle.cpu,
            note="% of one core",
        ),
        Figure(
            f"daemon resident memory after `plat rm` of all {deploys.removed}",
            removed.rss,
            "MiB",
            "same daemon, 0 functions",
            idle.rss,
            note="target within 10 %",
        ),
        Figure(
            f"daemon resident memory after the c={connections} load",
            after_load.rss,
            "MiB",
            "before it, after the removals",
            removed.rss,
            note="the heap's high-water mark: see the notes",
        ),
        Figure(
            f"deploy wall time of all {count} functions",
            deploys.total,
            "s",
            "target",
            DEPLOY_TARGET * count,
            note=f"{PARALLEL_DEPLOYS} at a time after the first; "
            f"target {DEPLOY_TARGET:g} s per function (250 s for 200)",
        ),
        Figure(
            f"deploy wall time, median of the last {k}",
            last_k,
            "s",
            f"median of the first {k}",
            first_k,
            note=f"{PARALLEL_DEPLOYS} deploys in parallel",
        ),
        Figure(f"p50 latency, c={connections}", plat_r.p50, "ms", under, nginx_r.p50),
        Figure(f"p99 latency, c={connections}", plat_r.p99, "ms", under, nginx_r.p99),
        Figure(
            f"throughput, c={connections}",
            plat_r.rps,
            "req/s",
            under,
            nginx_r.rps,
            better="higher",
        ),
        Figure(
            f"throughput, c={connections}",
            plat_r.rps,
            "req/s",
            f"direct, c={connections}",
            direct_r.rps,
            better="higher",
        ),
    ]
    if idle.engine_cpu is not None and loaded.engine_cpu is not None:
        figures.insert(
            2,
            Figure(
                f"engine service CPU while idle, {count} functions",
                loaded.engine_cpu,
                "%",
                "same, 0 functions",
                idle.engine_cpu,
                note="podman system service started by plat; % of one core",
            ),
        )
    footprint = Table(
        "daemon footprint (CPU sampled while idle)",
        ["state", "daemon RSS", "daemon CPU", "engine service CPU", "host MemAvailable"],
    )
    for s in samples:
        footprint.rows.append(
            [
                s.label,
                fmt(s.rss, "MiB"),
                fmt(s.cpu, "%"),
                "-" if s.engine_cpu is None else fmt(s.engine_cpu, "%"),
                fmt(s.mem_available, "MiB"),
            ]
        )
    ordered = sorted(walls)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    table = Table(
        "deploys (wall time of each `plat deploy`)",
        [
            "functions",
            "total wall",
            "per function",
            "first, alone",
            "median, parallel",
            "p90, parallel",
            f"first {k} parallel",
            f"last {k} parallel",
            "plat rm",
        ],
        [
            [
                str(count),
                fmt(deploys.total, "s"),
                fmt(deploys.total / count, "s"),
                fmt(deploys.lone.wall, "s"),
                fmt(median(walls), "s"),
                fmt(p90, "s"),
                fmt(first_k, "s"),
                fmt(last_k, "s"),
                f"{deploys.removed} in {fmt(deploys.remove_seconds, 's')}",
            ]
        ],
    )
    load = Table(
        f"wrk -c{connections} -t2, {seconds} s, on one of the {count} functions",
        ["path", "p50", "p90", "p99", "req/s", "requests", "errors"],
    )
    for label in PATHS:
        res = results[label]
        load.rows.append(
            [
                label,
                fmt(res.p50, "ms"),
                fmt(res.p90, "ms"),
                fmt(res.p99, "ms"),
                fmt(res.rps, "req/s"),
                f"{res.requests:,}",
                str(res.errors),
            ]
        )
    instances_mib = idle.mem_available - loaded.mem_available
    notes = [
        f"With {count} functions deployed, {deploys.running} instance(s) were running at the "
        "sample, the loaded function's included (the pre-warmed pool's are not): the "
        f"others had scaled to zero. Host memory used meanwhile (drop in MemAvailable): "
        f"{fmt(instances_mib, 'MiB')}.",
        f"After removing {deploys.removed} functions the daemon's RSS is "
        f"{fmt(removed.rss, 'MiB')} (it was {fmt(loaded.rss, 'MiB')} with {count} and "
        f"{fmt(idle.rss, 'MiB')} before any). The load comes after the removals: "
        f"{connections} connections at once leave the heap at a high-water mark "
        f"({fmt(after_load.rss, 'MiB')} after it) that stays with the process and is reused "
        "by the next burst: CPython's small-object allocator keeps each 1 MiB arena that "
        "still holds one live object, and the burst's objects are spread over many "
        "(docs/benchmarks-dev.md, 'Memory after a burst').",
    ]
    if len(walls) >= 20:
        tenths = [walls[len(walls) * i // 10 : len(walls) * (i + 1) // 10] for i in range(10)]
        notes.append(
            "Median wall of each tenth of the parallel deploys, in order: "
            + ", ".join(fmt(median(part), "s") for part in tenths)
            + ". A step after the first tenths is the first instances scaling to zero "
            "(about 10 s into the burst; from then on each deploy shares the machine with "
            "those stops and the standby containers prepared after them); a rise over "
            "every tenth is a cost that grows with the functions deployed "
            "(docs/benchmarks-dev.md, 'Later deploys in a burst')."
        )
    if deploys.replaced:
        notes.append(
            f"During the deploys the daemon logged {deploys.replaced} 'instance ... died; "
            "replacing it' warnings."
        )
    if deploys.retried:
        notes.append(
            f"{len(deploys.retried)} deploy(s) failed once and were retried "
            f"({len(deploys.failed)} failed again); the first error: {deploys.retried[0]}"
        )
    if deploys.removed < count:
        notes.append(
            f"`plat rm` removed {deploys.removed} of {count} functions within its time "
            "budget; `plat daemon stop` stopped the remaining instances."
        )
    if count + len(deploys.failed) < deploys.wanted:
        notes.insert(
            0,
            f"Stopped at {count} of {deploys.wanted} functions: the deploys ran past "
            "their time budget (10 min in a full run, to keep the whole suite near 20 min).",
        )
    method = (
        f'{deploys.wanted} python functions returning `"ok"`, all but one with '
        "`scale: {min: 0}` (each deploy proves its version ready with one instance, which "
        "then stops after `PLAT_SCALE_TO_ZERO_AFTER=10s`): the first "
        "deployed alone (it builds the stack image the others share), the others with "
        f"{PARALLEL_DEPLOYS} "
        "`plat deploy` processes at a time. Resident memory is VmRSS from "
        "`/proc/<pid>/status` of the daemon (pid from `plat daemon status --json`); CPU is "
        "its user+system time over a quiet window (the median of three 5 s windows in full "
        "mode). After `plat rm` of all of them (8 at a "
        "time), the first function is deployed again, then `wrk --latency -t2 "
        f"-c{connections}` ({seconds} s run, after a 1 s warm-up in full mode) on it "
        "along the same "
        "three paths as the warm-path benchmark; that function has "
        "`scale: {min: 1, max: 1, concurrency: 10000}` so that plat forwards every request "
        "at once as nginx does (the default admits 8 per instance and queues 256)."
    )
    return Section(NAME, TITLE, method, figures, [footprint, table, load], notes)
