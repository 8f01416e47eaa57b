"""Soak: steady load for minutes while the function is redeployed and rescaled.

A python function with the default manifest (`scale: {min: 1, max: 4,
concurrency: 8}`, 30 s timeout; the handler takes about 5 ms) is loaded by 32
clients back to back (`benchmarks/load.py`: aiohttp, keep-alive, every outcome
recorded) for the whole run. After a warm-up with nothing else going on (the
baseline), the run's events are spread evenly over the event phase: redeploys with
a code change (a real image build and a blue/green swap each) and `plat scale`
changes of min/max (instances started and drained). Every request is expected to
succeed.

The daemon's resident memory (VmRSS in `/proc/<pid>/status`) and open file
descriptors (`/proc/<pid>/fd`) are sampled under load twice, in the same state: at
the end of the warm-up, and after the event phase once `plat scale --reset` has
brought the function back to the warm-up's number of instances and the load has run
on for a while (the settle phase). A daemon that leaks shows it as growth (target:
flat, within ±10 %). A last sample ("idle after") is taken as long after the load
stopped as the warm-up lasted.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import cycle
from pathlib import Path

from benchmarks.context import Context
from benchmarks.daemon import Plat
from benchmarks.functions import write_python_function
from benchmarks.load import Background, LoadResult
from benchmarks.procfs import rss_mib
from benchmarks.report import Figure, Section, Table, fmt
from benchmarks.stats import median

NAME = "soak"
TITLE = "Soak: load during redeploys and scaling"

HANDLER = """
import time

VERSION = {version}

def handle(event, context):
    time.sleep(0.005)
    return {{"version": VERSION}}
"""
CLIENTS = 32
# (min, max) pairs `plat scale` cycles through; min never 0, so no call waits for a
# cold start, and every change starts or drains instances.
SCALES = ((2, 4), (1, 2), (3, 6), (1, 4), (2, 2), (1, 6))


@dataclass(frozen=True)
class Plan:
    seconds: float  # the event phase
    warmup: float
    redeploys: int
    scale_events: int

    def events(self) -> Iterator[tuple[float, str]]:
        """(offset in the event phase, "deploy" | "scale"), evenly spread, in order."""
        total = self.redeploys + self.scale_events
        every = total / self.redeploys if self.redeploys else float("inf")
        deploys = {round(every * (k + 0.5)) for k in range(self.redeploys)}
        for k in range(total):
            yield self.seconds * (k + 0.5) / total, "deploy" if k in deploys else "scale"


QUICK = Plan(seconds=18, warmup=3, redeploys=2, scale_events=6)
FULL = Plan(seconds=600, warmup=30, redeploys=20, scale_events=100)


@dataclass
class Sample:
    rss: float  # MiB
    fds: int
    sockets: int  # of the fds
    instances: int  # ready instances of the function at the time


@dataclass
class Events:
    deploys: list[float] = field(default_factory=list)  # wall seconds of each
    scales: list[float] = field(default_factory=list)
    late: float = 0.0  # how far the last event ran past its planned time


def sample(pid: int, instances: int) -> Sample:
    fds = Path(f"/proc/{pid}/fd")
    links = []
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            links.append(os.readlink(fd))
    sockets = sum(1 for link in links if link.startswith("socket:"))
    return Sample(rss_mib(pid), len(links), sockets, instances)


def change(before: float, after: float) -> float:
    return 100 * (after - before) / before if before else float("nan")


def run(ctx: Context) -> Section:
    plan: Plan = ctx.pick(QUICK, FULL)
    name = f"soak-{ctx.run_id}"
    folder = write_python_function(ctx.work, name, HANDLER.format(version=0))
    events = Events()
    with Plat(ctx.work, NAME, ctx.log) as plat:
        assert plat.pid is not None
        ctx.log(f"deploying {name}")
        plat.deploy(folder, name)
        url = plat.function_url(name)
        headers = {"Authorization": plat.auth_header()}
        ctx.log(f"warm-up: {CLIENTS} clients for {plan.warmup:.0f} s, no events")
        with Background(url, clients=CLIENTS, seconds=plan.warmup, headers=headers) as load:
            time.sleep(plan.warmup - 1)  # sampled under load, as the end sample is
            start = sample(plat.pid, _ready(plat, name))
            warm = load.wait()
        ctx.log(
            f"events: {plan.redeploys} redeploys and {plan.scale_events} scale changes "
            f"over {plan.seconds:.0f} s"
        )
        # The load runs until the last event is done, however late, and for the plan's time.
        phase = plan.seconds + 600
        with Background(url, clients=CLIENTS, seconds=phase, headers=headers) as load:
            began = time.monotonic()
            _events(ctx, plat, plan, folder, name, events)
            time.sleep(max(0.0, began + plan.seconds - time.monotonic()))
            soak = load.stop()
        ctx.log(f"{soak.total} requests, {soak.total - soak.succeeded} failed")
        ctx.log(f"settle: back to {start.instances} instance(s), {plan.warmup:.0f} s of load")
        plat.cli("scale", name, "--reset")
        with Background(url, clients=CLIENTS, seconds=plan.warmup, headers=headers) as load:
            settled = _wait_instances(plat, name, start.instances, timeout=60)
            time.sleep(plan.warmup / 2)
            end = sample(plat.pid, _ready(plat, name))
            settle = load.wait()
        time.sleep(plan.warmup)  # idle keep-alive connections time out meanwhile
        idle = sample(plat.pid, _ready(plat, name))
    return _section(ctx, plan, (warm, soak, settle), events, (start, end, idle), settled)


def _events(ctx: Context, plat: Plat, plan: Plan, folder: Path, name: str, done: Events) -> None:
    """Run the plan's redeploys and scale changes at their times."""
    scales = cycle(SCALES)
    version = 0
    began = time.monotonic()
    for offset, kind in plan.events():
        time.sleep(max(0.0, began + offset - time.monotonic()))
        done.late = max(done.late, time.monotonic() - began - offset)
        if kind == "deploy":
            version += 1
            write_python_function(folder.parent, name, HANDLER.format(version=version))
            done.deploys.append(plat.deploy(folder, name).wall)
        else:
            low, high = next(scales)
            t0 = time.monotonic()
            plat.cli("scale", name, "--min", str(low), "--max", str(high))
            done.scales.append(time.monotonic() - t0)
    ctx.log(f"{len(done.deploys)} redeploys and {len(done.scales)} scale changes done")


def _ready(plat: Plat, name: str) -> int:
    info = plat.describe(name)
    return sum(
        1
        for i in info["instance_list"]
        if i["state"] == "ready" and i["version"] == info["version"]
    )


def _wait_instances(plat: Plat, name: str, count: int, timeout: float) -> bool:
    """Whether the function got back to ``count`` ready instances within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _ready(plat, name) == count:
            return True
        time.sleep(0.2)
    return False


def _section(
    ctx: Context,
    plan: Plan,
    loads: tuple[LoadResult, LoadResult, LoadResult],
    events: Events,
    samples: tuple[Sample, Sample, Sample],
    settled: bool,
) -> Section:
    warm, soak, settle = loads
    start, end, idle = samples
    failed = soak.total - soak.succeeded
    rss_change, fd_change = change(start.rss, end.rss), change(start.fds, end.fds)
    figures = [
        Figure(
            "failed requests during redeploys and scaling",
            failed,
            "count",
            "requests sent",
            soak.total,
            note=f"{len(events.deploys)} redeploys, {len(events.scales)} scale changes; target 0",
        ),
        *(
            Figure(
                f"p{q} latency during redeploys and scaling",
                soak.percentile(q) * 1000,
                "ms",
                "same load, no events (warm-up)",
                warm.percentile(q) * 1000,
            )
            for q in (50, 99)
        ),
        Figure(
            "throughput during redeploys and scaling",
            soak.total / soak.seconds,
            "req/s",
            "same load, no events (warm-up)",
            warm.total / warm.seconds,
            better="higher",
        ),
        Figure(
            "daemon resident memory at the end",
            end.rss,
            "MiB",
            "at the start (after the warm-up)",
            start.rss,
            note=f"{rss_change:+.1f} %; target within ±10 %",
        ),
        Figure(
            "daemon open file descriptors at the end",
            end.fds,
            "count",
            "at the start (after the warm-up)",
            start.fds,
            note=f"{fd_change:+.1f} %; target within ±10 %",
        ),
    ]
    statuses = Table("answers during the event phase", ["answer", "requests"])
    for key, count in soak.counts.most_common():
        statuses.rows.append([key, f"{count:,}"])
    phases = Table(
        f"load ({CLIENTS} clients, back to back)",
        ["phase", "duration", "requests", "failed", "req/s", "p50", "p99", "max"],
    )
    for label, res in (
        ("warm-up, no events", warm),
        ("redeploys and scaling", soak),
        ("settle, no events", settle),
    ):
        phases.rows.append(
            [
                label,
                fmt(res.seconds, "s"),
                f"{res.total:,}",
                str(res.total - res.succeeded),
                fmt(res.total / res.seconds, "req/s"),
                fmt(res.percentile(50) * 1000, "ms"),
                fmt(res.percentile(99) * 1000, "ms"),
                fmt(max(res.latencies, default=float("nan")) * 1000, "ms"),
            ]
        )
    resources = Table(
        "daemon resources (sampled under load)",
        ["figure", "after the warm-up", "after the settle phase", "change", "idle after"],
    )
    resources.rows += [
        [
            "resident memory (VmRSS)",
            fmt(start.rss, "MiB"),
            fmt(end.rss, "MiB"),
            f"{rss_change:+.1f} %",
            fmt(idle.rss, "MiB"),
        ],
        [
            "open file descriptors",
            str(start.fds),
            str(end.fds),
            f"{fd_change:+.1f} %",
            str(idle.fds),
        ],
        [
            "of which sockets",
            str(start.sockets),
            str(end.sockets),
            f"{change(start.sockets, end.sockets):+.1f} %",
            str(idle.sockets),
        ],
        ["ready instances", str(start.instances), str(end.instances), "", str(idle.instances)],
    ]
    done = Table("events", ["event", "count", "median wall time", "slowest"])
    for label, times in (
        ("redeploy (code change, build)", events.deploys),
        ("plat scale", events.scales),
    ):
        done.rows.append(
            [
                label,
                str(len(times)),
                fmt(median(times), "s"),
                fmt(max(times, default=float("nan")), "s"),
            ]
        )
    section = Section(NAME, TITLE, method=__doc__ or "")
    section.figures = figures
    section.tables = [phases, statuses, resources, done]
    section.notes.append(
        f"Warm-up {plan.warmup:.0f} s, event phase {plan.seconds:.0f} s"
        + (" (quick mode)" if ctx.quick else "")
        + f"; events ran at most {events.late:.1f} s behind their planned times."
    )
    if not settled:
        section.notes.append(
            f"The function did not get back to {start.instances} ready instance(s) within "
            "60 s of `plat scale --reset`: the end sample is of a different state."
        )
    if soak.failed:
        section.notes.append("First failures: " + "; ".join(o.describe() for o in soak.failed[:5]))
    return section
