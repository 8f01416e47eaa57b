"""wrk, the HTTP load generator: one run and the parsing of its report."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from benchmarks.context import BenchError
from benchmarks.shell import run


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run measured (latencies in ms)."""

    connections: int
    threads: int
    seconds: float
    requests: int
    rps: float
    p50: float
    p90: float
    p99: float
    errors: int  # socket errors (connect/read/write/timeout) + non-2xx/3xx responses


_LATENCY_RE = re.compile(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_REQUESTS_RE = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", re.MULTILINE)
_RPS_RE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_SOCKET_RE = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.MULTILINE
)
_NON2XX_RE = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_TO_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def parse_wrk(text: str, connections: int, threads: int) -> WrkResult:
    """Parse the output of ``wrk --latency``; raises BenchError when it is not there."""
    latencies = {int(p): float(v) * _TO_MS[u] for p, v, u in _LATENCY_RE.findall(text)}
    requests = _REQUESTS_RE.search(text)
    rps = _RPS_RE.search(text)
    if not requests or not rps or not {50, 90, 99} <= latencies.keys():
        raise BenchError(f"could not parse wrk's output:\n{text}")
    errors = sum(int(n) for m in _SOCKET_RE.findall(text) for n in m)
    non2xx = _NON2XX_RE.search(text)
    if non2xx:
        errors += int(non2xx.group(1))
    return WrkResult(
        connections=connections,
        threads=threads,
        seconds=float(requests.group(2)) * _TO_MS[requests.group(3)] / 1000,
        requests=int(requests.group(1)),
        rps=float(rps.group(1)),
        p50=latencies[50],
        p90=latencies[90],
        p99=latencies[99],
        errors=errors,
    )


def wrk(
    url: str,
    *,
    connections: int,
    seconds: int,
    threads: int | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: int = 10,
) -> WrkResult:
    """One ``wrk --latency`` run (whole seconds: wrk takes no fractions)."""
    threads = threads or max(1, min(connections, 2))
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, seconds)}s", "--latency"]
    cmd.append(f"--timeout={timeout}s")
    for key, value in (headers or {}).items():
        cmd += ["-H", f"{key}: {value}"]
    cmd.append(url)
    proc = run(cmd, timeout=seconds + timeout + 60)
    result = parse_wrk(proc.stdout, connections, threads)
    if result.requests == 0:
        raise BenchError(f"wrk got no answers from {url}:\n{proc.stdout}")
    return result


def require_success(label: str, result: WrkResult, max_share: float = 0.01) -> None:
    """Raise BenchError when more than ``max_share`` of a run's answers were errors.

    A run whose answers are mostly errors (429s from admission control, 502s, resets)
    measures the error path, not the proxy: its figures must not be reported.
    """
    if result.errors > max_share * max(1, result.requests):
        raise BenchError(
            f"{label} at c={result.connections}: {result.errors} of {result.requests} "
            "answers were socket errors or non-2xx responses"
        )
