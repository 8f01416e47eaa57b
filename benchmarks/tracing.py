"""Tracing: what tracing every call costs the warm path.

The warm-path benchmark's function and load shape (a python function returning
`"ok"`, one instance taking every request at once: `scale: {min: 1, max: 1,
concurrency: 1000}`; `wrk --latency`, threads = min(connections, 2)) through the
gateway of three daemons started side by side, identical but for their
OpenTelemetry environment:

* **off**: `OTEL_SDK_DISABLED=true`, no tracing at all (the baseline);
* **on**: `OTEL_TRACES_SAMPLER=always_on` and no exporter: every call traced and
  kept in the daemon's local trace store only;
* **on + OTLP**: the same, plus `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at a sink
  (`tests/daemon/tracing/otlp_receiver.py --count-only`, its own process, which
  decodes every export and counts the spans).

Only the daemon under load is busy: the others wait idle. Each round loads every
daemon in turn, at c=1 then at c=64, in an order reversed every other round
(off, on, on + OTLP, then on + OTLP, on, off) so that drift on a shared machine
hits them alike. A daemon's CPU time (user + system, `/proc/<pid>/stat`) over a
run divided by the requests wrk completed is its CPU per call. The figures are
medians over the rounds. Targets: tracing on adds at most 15 % daemon CPU per call
(at c=64, where the gateway is busiest) and at most 0.1 ms to the p50 at c=1.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from benchmarks import warm
from benchmarks.context import REPO, BenchError, Context, Log
from benchmarks.daemon import Plat
from benchmarks.functions import write_python_function
from benchmarks.net import http_get
from benchmarks.procfs import cpu_seconds
from benchmarks.report import Figure, Section, Table, fmt
from benchmarks.stats import median
from benchmarks.wrk import WrkResult, require_success, wrk

NAME = "tracing"
TITLE = "Tracing: cost on the warm path"
MODES = ("off", "on", "otlp")
LABELS = {"off": "tracing off", "on": "tracing on", "otlp": "tracing on + OTLP export"}
LEVELS = (1, 64)
CPU_TARGET = 15.0  # % more daemon CPU per call, tracing on vs off
P50_TARGET = 0.1  # ms added to the p50 at c=1


@dataclass(frozen=True)
class Run:
    """One wrk run against one daemon, with the daemon's CPU time over it."""

    round: int
    mode: str
    result: WrkResult
    cpu: float  # daemon CPU seconds over the run

    @property
    def cpu_per_call(self) -> float:
        """Daemon CPU per completed request, in µs."""
        return 1e6 * self.cpu / max(1, self.result.requests)


class Sink:
    """The OTLP receiver of the tests, run as a separate process that only counts."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.url = ""
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Sink:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        module = "tests.daemon.tracing.otlp_receiver"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, "--count-only", "--max-body", str(64 * 1024**2)],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        ready, _w, _x = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline().strip() if ready else ""
        if not line.startswith("http://127.0.0.1:"):
            self._stop()
            raise BenchError(f"the OTLP sink did not start (it printed {line!r})")
        self.url = line
        self.log(f"OTLP sink at {self.url} (pid {self.proc.pid})")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/stats", timeout=5) as resp:
            data: dict[str, Any] = json.loads(resp.read())
        return data

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid) if self.proc is not None else float("nan")

    def _stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None


def _environment(mode: str, sink_url: str) -> dict[str, str]:
    if mode == "off":
        return {"OTEL_SDK_DISABLED": "true"}
    env = {"OTEL_TRACES_SAMPLER": "always_on"}
    if mode == "otlp":
        env |= {
            "OTEL_EXPORTER_OTLP_ENDPOINT": sink_url,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        }
    return env


@dataclass
class Daemon:
    """One of the daemons compared, with its function's URL and the calls it served."""

    plat: Plat
    url: str
    headers: dict[str, str]
    served: int = 0  # every request sent to it, warm-up included

    def measure(self, connections: int, seconds: int) -> tuple[WrkResult, float]:
        """One wrk run and the daemon's CPU seconds over it."""
        assert self.plat.pid is not None
        before = cpu_seconds(self.plat.pid)
        result = wrk(self.url, connections=connections, seconds=seconds, headers=self.headers)
        cpu = cpu_seconds(self.plat.pid) - before
        self.served += result.requests
        return result, cpu

    def store(self, name: str) -> tuple[str, int | None]:
        """Traced calls of ``name`` the local store lists (up to 1000), spans in one."""
        try:
            rows = self.plat.api(f"/v1/traces?function={name}&limit=1000&since=1h")["traces"]
            if not rows:
                return "0", None
            trace = self.plat.api(f"/v1/traces/{rows[0]['trace_id']}")
        except (BenchError, KeyError, TypeError) as exc:
            return f"n/a ({str(exc)[-80:]})", None
        return f"{len(rows)}{'+' if len(rows) >= 1000 else ''}", len(trace["spans"])


def _start(ctx: Context, mode: str, env: dict[str, str], folder: Path, name: str) -> Daemon:
    plat = Plat(ctx.work, f"tracing-{mode}", ctx.log)
    for key in [k for k in plat.env if k.startswith("OTEL_")]:
        del plat.env[key]
    plat.env.update(env)
    try:
        plat.start()
        ctx.log(f"{mode}: deploying {name}")
        plat.deploy(folder, name)
        daemon = Daemon(plat, plat.function_url(name), {"Authorization": plat.auth_header()})
        status = http_get(daemon.url, daemon.headers)
        if status != 200:
            raise BenchError(f"{mode}: {daemon.url} answered {status}, not 200")
        daemon.served += 1
        if not ctx.quick:
            warmup = wrk(daemon.url, connections=64, seconds=1, headers=daemon.headers)
            daemon.served += warmup.requests
    except BaseException:
        plat.cleanup()
        raise
    return daemon


@dataclass(frozen=True)
class Export:
    """What the on + OTLP daemon served and what its exporter delivered to the sink."""

    calls: int  # every request it served, warm-up included
    spans_per_call: int | None  # in one trace of its local store
    sink: dict[str, Any]  # the sink's counters
    sink_cpu: float  # CPU seconds the sink used


def run(ctx: Context) -> Section:
    """Load the three daemons in interleaved rounds; returns the section."""
    seconds: int = ctx.pick(1, 4)
    rounds: int = ctx.pick(2, 4)
    name = f"bench-tracing-{ctx.run_id}"
    folder = write_python_function(ctx.work, name, warm.HANDLER, manifest_extra=warm.SCALE)
    runs: dict[tuple[str, int], list[Run]] = {(m, c): [] for m in MODES for c in LEVELS}
    envs: dict[str, dict[str, str]] = {}
    daemons: dict[str, Daemon] = {}
    with Sink(ctx.log) as sink:
        try:
            for mode in MODES:
                envs[mode] = _environment(mode, sink.url)
                daemons[mode] = _start(ctx, mode, envs[mode], folder, name)
            for index in range(rounds):
                for mode in MODES if index % 2 == 0 else MODES[::-1]:
                    for connections in LEVELS:
                        result, cpu = daemons[mode].measure(connections, seconds)
                        require_success(f"{mode} round {index + 1}", result)
                        runs[mode, connections].append(Run(index + 1, mode, result, cpu))
                    last = runs[mode, LEVELS[0]][-1], runs[mode, LEVELS[-1]][-1]
                    ctx.log(
                        f"round {index + 1} {mode}: p50 c=1 {last[0].result.p50:.3f} ms, "
                        f"c=64 {last[1].result.rps:.0f} req/s, "
                        f"{last[1].cpu_per_call:.1f} µs daemon CPU per call"
                    )
            stores = {mode: daemon.store(name) for mode, daemon in daemons.items()}
            exported = Export(
                daemons["otlp"].served, stores["otlp"][1], _settled_stats(sink), sink.cpu()
            )
        finally:
            _cleanup([d.plat for d in daemons.values()], ctx.log)
    listed = {mode: store[0] for mode, store in stores.items()}
    return _section(runs, envs, listed, exported, seconds, rounds)


def _cleanup(plats: list[Plat], log: Log) -> None:
    """Stop the daemons side by side; only the last removes the image they share
    (``podman rmi`` is slow, and fails while another daemon's instance uses it)."""
    log("removing the function and stopping the daemons")
    if not plats:
        return
    owner, others = plats[0], plats[1:]
    for plat in others:
        plat.built.clear()
    try:
        with ThreadPoolExecutor(max_workers=max(1, len(others))) as pool:
            list(pool.map(lambda p: p.cleanup(), others))
    finally:
        owner.cleanup()


def _settled_stats(sink: Sink, wait: float = 8.0) -> dict[str, Any]:
    """The sink's counters once the daemon's batch processor has sent what it queued."""
    stats = sink.stats()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        time.sleep(1.0)
        latest = sink.stats()
        if latest["spans"] == stats["spans"] and latest["spans"]:
            return latest
        stats = latest
    return stats


def _med(runs: list[Run], what: str) -> float:
    if what == "cpu":
        return median(r.cpu_per_call for r in runs)
    return median(float(getattr(r.result, what)) for r in runs)


def _section(
    runs: dict[tuple[str, int], list[Run]],
    envs: dict[str, dict[str, str]],
    listed: dict[str, str],
    exported: Export,
    seconds: int,
    rounds: int,
) -> Section:
    low, high = LEVELS
    off_cpu = _med(runs["off", high], "cpu") or float("nan")
    off_p50 = _med(runs["off", low], "p50")
    off_rps = _med(runs["off", high], "rps")
    columns = [f"p50, c={low}", f"req/s, c={low}", f"CPU per call, c={low}", f"req/s, c={high}"]
    columns += [f"p99, c={high}", f"CPU per call, c={high}", "added CPU per call", "added p50"]
    medians = Table(f"medians of {rounds} rounds", ["daemon", *columns])
    figures: list[Figure] = []
    notes: list[str] = []
    for mode in MODES:
        cpu, p50 = _med(runs[mode, high], "cpu"), _med(runs[mode, low], "p50")
        added_cpu, added_p50 = 100 * (cpu - off_cpu) / off_cpu, p50 - off_p50
        medians.rows.append(
            [
                LABELS[mode],
                f"{p50:.3f} ms",
                fmt(_med(runs[mode, low], "rps"), "req/s"),
                f"{_med(runs[mode, low], 'cpu'):.1f} µs",
                fmt(_med(runs[mode, high], "rps"), "req/s"),
                fmt(_med(runs[mode, high], "p99"), "ms"),
                f"{cpu:.1f} µs",
                "-" if mode == "off" else f"{added_cpu:+.1f} %",
                "-" if mode == "off" else f"{added_p50:+.3f} ms",
            ]
        )
        if mode == "off":
            continue
        label = LABELS[mode]
        cpu_note = f"{added_cpu:+.1f} %; target ≤ {CPU_TARGET:g} %"
        p50_note = f"{added_p50:+.3f} ms; target ≤ {P50_TARGET:g} ms"
        figures += [
            Figure(f"daemon CPU per call, c={high}, {label}", round(cpu, 1), "µs",
                   "tracing off", round(off_cpu, 1), note=cpu_note),
            Figure(f"p50 latency, c={low}, {label}", p50, "ms", "tracing off", off_p50,
                   note=p50_note),
            Figure(f"throughput, c={high}, {label}", _med(runs[mode, high], "rps"), "req/s",
                   "tracing off", off_rps, better="higher"),
        ]  # fmt: skip
        notes.append(
            f"{label} adds {added_cpu:+.1f} % daemon CPU per call at c={high} (target ≤ "
            f"{CPU_TARGET:g} %: {'met' if added_cpu <= CPU_TARGET else 'missed'}; per round "
            f"{_per_round(runs, mode)}) and {added_p50:+.3f} ms to the p50 at c={low} (target "
            f"≤ {P50_TARGET:g} ms: {'met' if added_p50 <= P50_TARGET else 'missed'})."
        )
    if listed["on"] in ("0", "") or listed["on"].startswith("n/a"):
        notes.append(
            "The 'on' daemon listed no traced call: it does not trace (yet), so on and off "
            "measured the same code."
        )
    notes.append(_export_note(exported))
    notes.append(
        f"wrk ran {seconds} s per run; wrk, the daemon, its instance and the sink share the "
        "machine's cores, so c=64 also measures how they compete for CPU. Differences of a "
        "few per cent are within the noise of a shared VM: read the per-round figures."
    )
    tables = [medians, _daemons_table(envs, listed, exported.sink), _runs_table(runs)]
    method = (__doc__ or "").split("\n\n", 1)[1].strip()
    return Section(NAME, TITLE, method, figures, tables, notes)


def _per_round(runs: dict[tuple[str, int], list[Run]], mode: str) -> str:
    """The added CPU per call at c=64 in each round, against the same round's off run."""
    offs = {r.round: r.cpu_per_call or float("nan") for r in runs["off", LEVELS[-1]]}
    added = [100 * (r.cpu_per_call / offs[r.round] - 1) for r in runs[mode, LEVELS[-1]]]
    return ", ".join(f"{a:+.0f} %" for a in added)


def _export_note(exported: Export) -> str:
    sink = exported.sink
    received = f"the sink received {sink['spans']:,} spans in {sink['exports']:,} exports"
    received += f" ({sink['refused']} refused)"
    if exported.spans_per_call:
        expected = exported.calls * exported.spans_per_call
        received = (
            f"{exported.spans_per_call} spans each (one trace in its store), "
            f"{expected:,} spans; {received}, {100 * sink['spans'] / expected:.0f} % of them"
        )
    return (
        f"The on + OTLP daemon served {exported.calls:,} calls, warm-up included, of "
        f"{received} (the SDK's batch processor drops spans when its queue is full). The "
        f"sink, decoding every export, used {exported.sink_cpu:.1f} s of CPU on the same cores."
    )


def _daemons_table(
    envs: dict[str, dict[str, str]], listed: dict[str, str], sink: dict[str, Any]
) -> Table:
    table = Table(
        "the daemons",
        ["daemon", "OTel environment", "traced calls listed (GET /v1/traces)", "spans exported"],
    )
    for mode in MODES:
        env = " ".join(
            f"`{k}={'<sink>' if k.endswith('ENDPOINT') else v}`" for k, v in envs[mode].items()
        )
        exported = f"{sink['spans']:,} received by the sink" if mode == "otlp" else "-"
        table.rows.append([LABELS[mode], env, listed[mode], exported])
    return table


def _runs_table(runs: dict[tuple[str, int], list[Run]]) -> Table:
    columns = ["round", "daemon", "concurrency", "p50", "p99", "req/s", "requests", "errors"]
    table = Table("every run", [*columns, "daemon CPU", "CPU per call"])
    for connections in LEVELS:
        for mode in MODES:
            for r in runs[mode, connections]:
                table.rows.append(
                    [
                        str(r.round),
                        LABELS[mode],
                        str(connections),
                        f"{r.result.p50:.3f} ms",
                        fmt(r.result.p99, "ms"),
                        fmt(r.result.rps, "req/s"),
                        f"{r.result.requests:,}",
                        str(r.result.errors),
                        f"{r.cpu:.2f} s",
                        f"{r.cpu_per_call:.1f} µs",
                    ]
                )
    return table
