"""Cold start: no instance → first byte through the gateway, in containers.

A tiny python function with ``scale: {min: 0}`` is left idle until the
autoscaler has stopped its last instance (short windows configured for the
run); then one request is timed from sending to its first byte. Repeated N
times, twice: with the pre-warmed pool (the default; each round also waits
until the pool has a ready instance again, as it would after any pause longer
than a refill) and with ``PLAT_POOL_SIZE=0`` (a container started for the
request: the standby container that scale to zero left created, not started,
see docs/scaling.md). The baseline, measured in the same run, is ``podman run`` of the same
image with a published port until the first HTTP 200 (what faasd-style
platforms do on a cold start).
"""

from __future__ import annotations

import http.client
import time
from typing import Any

from benchmarks.context import BenchError, Context
from benchmarks.daemon import Plat
from benchmarks.functions import write_python_function
from benchmarks.net import free_port, wait_http_ok
from benchmarks.report import Figure, Section, Table, fmt
from benchmarks.shell import run as sh
from benchmarks.stats import median, p95

NAME = "cold-start"
TITLE = "Cold start (scale from zero)"

HANDLER = 'def handle(event, context):\n    return "cold"\n'


def _first_byte(port: int, path: str) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        started = time.perf_counter()
        conn.request("GET", path)
        resp = conn.getresponse()
        elapsed = time.perf_counter() - started
        body = resp.read()
    finally:
        conn.close()
    if resp.status != 200 or body != b"cold":
        raise BenchError(f"cold request answered {resp.status} {body[:200]!r}")
    return elapsed


def _pool_row(plat: Plat) -> dict[str, Any]:
    pools = plat.api("/v1/status").get("pool", {}).get("pools", [])
    python = [p for p in pools if str(p.get("key", "")).startswith("python/")]
    return python[0] if python else {"ready": 0, "claimed": 0, "misses": 0}


def _cold_starts(
    ctx: Context, pool_size: int, rounds: int, baseline_rounds: int = 0
) -> tuple[list[float], list[float], str]:
    """``rounds`` cold starts of one function, then ``baseline_rounds`` of ``podman run``
    of its image; (samples, baseline samples, pool claims/misses)."""
    label = "pool" if pool_size else "nopool"
    plat = Plat(ctx.work, f"cold-{label}", ctx.log)
    plat.env.update(
        {
            "PLAT_BACKEND": "container",
            "PLAT_POOL_SIZE": str(pool_size),
            "PLAT_AUTOSCALE_TICK": "100ms",
            "PLAT_STABLE_WINDOW": "1s",
            "PLAT_PANIC_WINDOW": "500ms",
            "PLAT_SCALE_TO_ZERO_AFTER": "500ms",
        }
    )
    with plat:
        name = f"cold-{label}-{ctx.run_id}"
        folder = write_python_function(
            ctx.work,
            name,
            HANDLER,
            manifest_extra="auth: public\nscale: {min: 0, max: 2, concurrency: 8}\n",
        )
        plat.deploy(folder, name)
        path = f"/function/{name}"
        if pool_size:
            # The version is unpacked for the pool in the background after its deploy.
            deadline = time.monotonic() + 120
            while not list((plat.home / "unpacked").glob(f"*{name}*/done")):
                if time.monotonic() > deadline:
                    raise BenchError(f"{name} was not unpacked for the pool")
                time.sleep(0.1)
        samples: list[float] = []
        standby = 0
        for i in range(rounds):
            deadline = time.monotonic() + 60
            while True:
                auto = plat.describe(name).get("autoscaler") or {}
                pool_ready = _pool_row(plat)["ready"] if pool_size else 1
                if auto.get("actual") == 0 and auto.get("starting") == 0 and pool_ready:
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"{name} did not scale to zero: {auto}")
                time.sleep(0.1)
            time.sleep(0.3)  # the stopped container is gone, not just draining
            if not pool_size:
                standby += _wait_for_standby(name)
            samples.append(_first_byte(plat.port, path))
            ctx.log(f"cold start {label} {i + 1}/{rounds}: {samples[-1] * 1000:.0f} ms")
        row = _pool_row(plat)
        claims = (
            f"{row['claimed']} claimed, {row['misses']} missed"
            if pool_size
            else f"off; {standby} of {rounds} from a standby"
        )
        # Inside the daemon's lifetime: leaving it removes the function's images.
        baseline = _podman_run(plat.describe(name)["image"], baseline_rounds)
    return samples, baseline, claims


def _wait_for_standby(function: str, timeout: float = 10.0) -> int:
    """1 once the function's only container is its standby (created, not started),
    0 if that did not happen within ``timeout`` (the start then creates one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = (
            sh(
                [
                    "podman",
                    "ps",
                    "-a",
                    "--format",
                    "{{.State}}",
                    "--filter",
                    f"name=^plat-{function}-[0-9a-f]{{8}}$",
                ],
                check=False,
            )
            .stdout.lower()
            .split()
        )
        if states == ["created"]:
            return 1
        time.sleep(0.05)
    return 0


def _podman_run(image: str, rounds: int) -> list[float]:
    baseline: list[float] = []
    for _ in range(rounds):
        port = free_port()
        started = time.perf_counter()
        cid = sh(
            [
                "podman",
                "run",
                "-d",
                "--rm",
                "-p",
                f"127.0.0.1:{port}:8080",
                "-e",
                "PLAT_HANDLER=handler.handle",
                image,
            ]
        ).stdout.strip()
        try:
            wait_http_ok(f"http://127.0.0.1:{port}/", timeout=60, interval=0.005)
            baseline.append(time.perf_counter() - started)
        finally:
            sh(["podman", "rm", "-f", "-t", "0", cid], check=False)
    return baseline


def run(ctx: Context) -> Section:
    rounds = ctx.pick(3, 20)
    pooled, _, claims = _cold_starts(ctx, 2, rounds)
    plain, baseline, standby = _cold_starts(ctx, 0, rounds, baseline_rounds=max(3, rounds // 2))

    section = Section(NAME, TITLE, method=__doc__ or "")
    section.tables.append(
        Table(
            "no instance → first byte",
            ["path", "runs", "p50", "p95", "pool"],
            [
                [
                    "plat gateway, scale from zero, pre-warmed pool (default)",
                    str(len(pooled)),
                    fmt(median(pooled) * 1000, "ms"),
                    fmt(p95(pooled) * 1000, "ms"),
                    claims,
                ],
                [
                    "plat gateway, scale from zero, PLAT_POOL_SIZE=0 (standby container)",
                    str(len(plain)),
                    fmt(median(plain) * 1000, "ms"),
                    fmt(p95(plain) * 1000, "ms"),
                    standby,
                ],
                [
                    "podman run → first 200",
                    str(len(baseline)),
                    fmt(median(baseline) * 1000, "ms"),
                    fmt(p95(baseline) * 1000, "ms"),
                    "-",
                ],
            ],
        )
    )
    section.figures.append(
        Figure(
            f"cold start p50 with the pre-warmed pool ({len(pooled)} runs)",
            median(pooled) * 1000,
            "ms",
            "podman run → first 200",
            median(baseline) * 1000,
            note=f"p95 {p95(pooled) * 1000:.0f} ms; {claims}; target ≤ 100 ms",
        )
    )
    section.figures.append(
        Figure(
            f"cold start p50 without a pool ({len(plain)} runs)",
            median(plain) * 1000,
            "ms",
            "podman run → first 200",
            median(baseline) * 1000,
            note=f"p95 {p95(plain) * 1000:.0f} ms; pool {standby}; target ≤ 200 ms",
        )
    )
    return section
