"""Cold start: no instance → first byte through the gateway, in containers.

A tiny python function with ``scale: {min: 0}`` is left idle until the
autoscaler has stopped its last instance (short windows configured for the
run); then one request is timed from sending to its first byte. Repeated N
times. The baseline, measured in the same run, is ``podman run`` of the same
image with a published port until the first HTTP 200 (what faasd-style
platforms do on a cold start).
"""

from __future__ import annotations

import http.client
import statistics
import time

from benchmarks.harness import (
    BenchError,
    Context,
    Plat,
    free_port,
    median,
    wait_http_ok,
    write_python_function,
)
from benchmarks.harness import (
    run as sh,
)
from benchmarks.report import Figure, Section, Table, fmt

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


def _p95(values: list[float]) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def run(ctx: Context) -> Section:
    rounds = ctx.pick(3, 20)
    plat = Plat(ctx.work, "cold", ctx.log)
    plat.env.update(
        {
            "PLAT_BACKEND": "container",
            "PLAT_AUTOSCALE_TICK": "100ms",
            "PLAT_STABLE_WINDOW": "1s",
            "PLAT_PANIC_WINDOW": "500ms",
            "PLAT_SCALE_TO_ZERO_AFTER": "500ms",
        }
    )
    with plat:
        name = f"cold-{ctx.run_id}"
        folder = write_python_function(
            ctx.work,
            name,
            HANDLER,
            manifest_extra="auth: public\nscale: {min: 0, max: 2, concurrency: 8}\n",
        )
        plat.deploy(folder, name)
        path = f"/function/{name}"
        samples: list[float] = []
        for i in range(rounds):
            deadline = time.monotonic() + 60
            while True:
                auto = plat.describe(name).get("autoscaler") or {}
                if auto.get("actual") == 0 and auto.get("starting") == 0:
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"{name} did not scale to zero: {auto}")
                time.sleep(0.1)
            time.sleep(0.3)  # the stopped container is gone, not just draining
            samples.append(_first_byte(plat.port, path))
            ctx.log(f"cold start {i + 1}/{rounds}: {samples[-1] * 1000:.0f} ms")
        image = plat.describe(name)["image"]

        baseline: list[float] = []
        for _ in range(max(3, rounds // 2)):
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

    section = Section(NAME, TITLE, method=__doc__ or "")
    section.tables.append(
        Table(
            "no instance → first byte",
            ["path", "runs", "p50", "p95"],
            [
                [
                    "plat gateway, scale from zero",
                    str(len(samples)),
                    fmt(median(samples), "s"),
                    fmt(_p95(samples), "s"),
                ],
                [
                    "podman run → first 200",
                    str(len(baseline)),
                    fmt(median(baseline), "s"),
                    fmt(_p95(baseline), "s"),
                ],
            ],
        )
    )
    section.figures.append(
        Figure(
            f"cold start p50 ({len(samples)} runs)",
            median(samples),
            "s",
            "podman run → first 200",
            median(baseline),
            note=f"p95 {_p95(samples) * 1000:.0f} ms; target ≤ 350 ms without a pre-warmed pool",
        )
    )
    return section
