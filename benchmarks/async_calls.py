"""Queued calls: what ``POST /async-function/NAME`` costs against a synchronous call.

One python function (``return "ok"``) on one instance, ``scale: {min: 1, max: 1,
concurrency: 128}``: the queue runs half a function's capacity at once, so 64
queued calls run at a time, as many as the synchronous load's connections.
Basic auth on both paths, a queue limit high enough that no accept is refused.

* **sync**: ``wrk`` POSTs to ``/function/NAME`` at c=64 (the baseline);
* **async end to end**: ``wrk`` POSTs to ``/async-function/NAME`` at c=64 for as
  long, each answered 202 once committed; then the store is polled until every
  accepted call is ``done``. Async calls/s = calls ÷ (the last one's
  ``finished_at`` - the first one's ``created_at``): accepting, queuing, running
  and recording each call, with the daemon doing both at once;
* **accept latency**: ``wrk --latency`` at c=1 on the async door (the 202's p50:
  parsing, auth, one committed row).

The daemon's CPU time (``/proc/<pid>/stat``) over each phase divided by its calls
says where the difference goes. Targets: async ≥ 0.7 x sync throughput; accept
p50 at c=1 ≤ 2 ms.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from benchmarks import shell
from benchmarks.context import BenchError, Context
from benchmarks.daemon import Plat
from benchmarks.functions import write_python_function
from benchmarks.net import http_get
from benchmarks.procfs import cpu_seconds
from benchmarks.report import Figure, Section, Table, fmt
from benchmarks.wrk import WrkResult, parse_wrk, require_success

NAME = "async"
TITLE = "Queued calls: async against sync"
HANDLER = """
def handle(event, context):
    return "ok"
"""
MANIFEST = """\
scale: {min: 1, max: 1, concurrency: 128}
async: {queue_limit: 1000000}
"""
CONNECTIONS = 64
RATIO_TARGET = 0.7
ACCEPT_P50_TARGET = 2.0  # ms
POST_SCRIPT = (
    'wrk.method = "POST"\nwrk.body = "{}"\nwrk.headers["Content-Type"] = "application/json"\n'
)


@dataclass(frozen=True)
class Drained:
    """Calls accepted in one async phase, once all of them were done."""

    calls: int
    not_done: int
    seconds: float  # first created_at to last finished_at
    queue_p50: float  # ms from accepted to finished
    queue_p99: float
    cpu: float  # daemon CPU seconds from the first accept to the last done

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else float("nan")


def run(ctx: Context) -> Section:
    name = f"bench-async-{ctx.run_id}"
    seconds: int = ctx.pick(1, 5)
    folder = write_python_function(ctx.work, name, HANDLER, manifest_extra=MANIFEST)
    script = ctx.work / "post.lua"
    script.write_text(POST_SCRIPT)
    with Plat(ctx.work, NAME, ctx.log) as plat:
        ctx.log(f"deploying {name}")
        plat.deploy(folder, name)
        auth = {"Authorization": plat.auth_header()}
        sync_url = plat.function_url(name)
        async_url = sync_url.replace("/function/", "/async-function/")
        if (status := http_get(sync_url, auth)) != 200:
            raise BenchError(f"{sync_url} answered {status}, not 200")
        assert plat.pid is not None
        pid = plat.pid
        if not ctx.quick:
            ctx.log("warming up both paths (1 s each at c=64)")
            post(sync_url, script, CONNECTIONS, 1, auth)
            since = time.time()
            post(async_url, script, CONNECTIONS, 1, auth)
            drain(plat.home, since, pid, timeout=120)
        ctx.log(f"sync: wrk c={CONNECTIONS} {seconds} s")
        cpu0 = cpu_seconds(pid)
        sync = post(sync_url, script, CONNECTIONS, seconds, auth)
        sync_cpu = cpu_seconds(pid) - cpu0
        require_success("sync", sync)
        ctx.log(f"async: wrk c={CONNECTIONS} {seconds} s, then until every call is done")
        since = time.time()
        cpu0 = cpu_seconds(pid)
        accepts = post(async_url, script, CONNECTIONS, seconds, auth)
        require_success("async accepts", accepts)
        drained = drain(plat.home, since, pid, timeout=300, cpu_at_start=cpu0)
        ctx.log(f"async c=1: wrk {seconds} s")
        since = time.time()
        single = post(async_url, script, 1, seconds, auth)
        require_success("async accepts at c=1", single)
        drain(plat.home, since, pid, timeout=120)
    return _section(sync, sync_cpu, accepts, drained, single, seconds)


def post(
    url: str, script: Path, connections: int, seconds: int, headers: dict[str, str]
) -> WrkResult:
    """One ``wrk --latency`` run POSTing ``{}``."""
    threads = max(1, min(connections, 2))
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout=10s"]
    cmd += ["-s", str(script)]
    for key, value in headers.items():
        cmd += ["-H", f"{key}: {value}"]
    proc = shell.run([*cmd, url], timeout=seconds + 70)
    result = parse_wrk(proc.stdout, connections, threads)
    if result.requests == 0:
        raise BenchError(f"wrk got no answers from {url}:\n{proc.stdout}")
    return result


def drain(
    home: Path, since: float, pid: int, *, timeout: float, cpu_at_start: float | None = None
) -> Drained:
    """Poll the store until every call created after ``since`` is finished."""
    deadline = time.monotonic() + timeout
    query = (
        "SELECT COUNT(*), SUM(state != 'done'), SUM(state IN ('queued', 'running')), "
        "MIN(created_at), MAX(finished_at) FROM calls WHERE created_at >= ?"
    )
    with closing(sqlite3.connect(f"file:{home / 'plat.db'}?mode=ro", uri=True, timeout=30)) as db:
        while True:
            total, not_done, waiting, first, last = db.execute(query, (since,)).fetchone()
            if total and not waiting:
                break
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{waiting} of {total} queued calls still waiting after {timeout:.0f} s"
                )
            time.sleep(0.05)
        cpu = cpu_seconds(pid) - cpu_at_start if cpu_at_start is not None else float("nan")
        waits = sorted(
            1000 * (row[0] - row[1])
            for row in db.execute(
                "SELECT finished_at, created_at FROM calls WHERE created_at >= ?", (since,)
            )
        )
    return Drained(
        calls=int(total),
        not_done=int(not_done or 0),
        seconds=float(last) - float(first),
        queue_p50=waits[len(waits) // 2],
        queue_p99=waits[min(len(waits) - 1, int(len(waits) * 0.99))],
        cpu=cpu,
    )


def _section(
    sync: WrkResult,
    sync_cpu: float,
    accepts: WrkResult,
    drained: Drained,
    single: WrkResult,
    seconds: int,
) -> Section:
    if drained.not_done:
        raise BenchError(f"{drained.not_done} of {drained.calls} queued calls did not end done")
    sync_cpu_call = 1e6 * sync_cpu / max(1, sync.requests)
    async_cpu_call = 1e6 * drained.cpu / max(1, drained.calls)
    ratio = drained.rate / sync.rps if sync.rps else float("nan")
    figures = [
        Figure(
            f"throughput, c={CONNECTIONS}",
            drained.rate,
            "req/s",
            "sync calls",
            sync.rps,
            better="higher",
            note=f"async end to end; target ≥ {RATIO_TARGET:.1f}x sync",
        ),
        Figure(
            "accept p50 latency, c=1",
            single.p50,
            "ms",
            "target",
            ACCEPT_P50_TARGET,
            note="ratio ≤ 1 meets the target",
        ),
        Figure(
            "daemon CPU per call",
            async_cpu_call / 1000,
            "ms",
            "sync call",
            sync_cpu_call / 1000,
        ),
    ]
    detail = Table(
        "runs",
        ["phase", "calls", "calls/s", "p50", "p99", "daemon CPU per call"],
        [
            [
                f"sync, c={CONNECTIONS}",
                f"{sync.requests:,}",
                fmt(sync.rps, "req/s"),
                fmt(sync.p50, "ms"),
                fmt(sync.p99, "ms"),
                f"{sync_cpu_call:.0f} µs",
            ],
            [
                f"async accepts (202), c={CONNECTIONS}",
                f"{accepts.requests:,}",
                fmt(accepts.rps, "req/s"),
                fmt(accepts.p50, "ms"),
                fmt(accepts.p99, "ms"),
                "-",
            ],
            [
                "async end to end (accepted → done)",
                f"{drained.calls:,}",
                fmt(drained.rate, "req/s"),
                fmt(drained.queue_p50, "ms"),
                fmt(drained.queue_p99, "ms"),
                f"{async_cpu_call:.0f} µs",
            ],
            [
                "async accepts (202), c=1",
                f"{single.requests:,}",
                fmt(single.rps, "req/s"),
                fmt(single.p50, "ms"),
                fmt(single.p99, "ms"),
                "-",
            ],
        ],
    )
    notes = [
        f"Async end to end runs at {ratio:.2f}x the synchronous throughput "
        f"(target ≥ {RATIO_TARGET:.1f}x); a 202 takes {fmt(single.p50, 'ms')} at c=1 "
        f"(target ≤ {ACCEPT_P50_TARGET:.0f} ms).",
        "The end-to-end p50/p99 are from acceptance to the end of the call, a backlog "
        "included: accepts outpace the queue while wrk runs.",
    ]
    method = (
        'A python function returning `"ok"`, one instance, `scale: {min: 1, max: 1, '
        f"concurrency: 128}}` (the queue runs half of it, 64, at once). `wrk -s` POSTing "
        f"`{{}}` with basic auth for {seconds} s at c={CONNECTIONS} to `/function/NAME` "
        "(sync), then to `/async-function/NAME` with the store polled until every accepted "
        "call is done (calls ÷ first accept to last finish), then at c=1 on the async door "
        "for the 202's latency. Daemon CPU from /proc over each phase."
    )
    return Section(NAME, TITLE, method, figures, [detail], notes)
