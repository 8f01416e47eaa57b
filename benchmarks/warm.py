"""Warm path: one ready instance, reached directly, through nginx and through plat.

A trivial python function (``return "ok"``) runs as one instance. ``wrk
--latency`` loads it at concurrency 1, 16 and 64 along three paths, interleaved
per concurrency so that drift on a shared machine hits them alike:

* ``direct``: the instance's address as the gateway reaches it (by default its
  published 127.0.0.1 port; the upper bound);
* ``nginx``: a private nginx with a keep-alive upstream to the same instance
  (the baseline a proxy should come near);
* ``plat``: the gateway, ``/function/NAME`` with basic auth;
* ``tenant``: the same function deployed for a tenant, through the gateway's
  ``/function/NAME.TENANT`` with the tenant's bearer token (its own instance on
  the tenant's network): what tenancy costs on the hot path.

Headline: the p50 latency plat adds over direct at c=1 (next to what nginx adds)
and plat's throughput as a fraction of nginx's at c=64.
"""

from __future__ import annotations

import json

from benchmarks.context import BenchError, Context
from benchmarks.daemon import Plat
from benchmarks.functions import write_python_function
from benchmarks.net import http_get
from benchmarks.nginx import Nginx
from benchmarks.report import Figure, Section, Table, fmt, fmt_ratio
from benchmarks.wrk import WrkResult, require_success, wrk

NAME = "warm"
TITLE = "Warm path"
HANDLER = """
def handle(event, context):
    return "ok"
"""
LEVELS = (1, 16, 64)
# One instance that takes every request at once, as nginx forwards them: plat's
# default of 8 in flight per instance would queue the rest in the gateway.
SCALE = "scale: {min: 1, max: 1, concurrency: 1000}\n"
PATHS = ("direct", "nginx", "plat", "tenant")
TENANT = "bench"


def run(ctx: Context) -> Section:
    """Measure the three paths; returns the section (raises BenchError on failure)."""
    name = f"bench-warm-{ctx.run_id}"
    seconds: int = ctx.pick(1, 5)
    folder = write_python_function(ctx.work, name, HANDLER, manifest_extra=SCALE)
    results: dict[tuple[str, int], WrkResult] = {}
    with Plat(ctx.work, NAME, ctx.log) as plat:
        ctx.log(f"deploying {name}")
        plat.deploy(folder, name)
        address = str(plat.ready_instance(name)["address"])
        auth = {"Authorization": plat.auth_header()}
        created = plat.cli("tenant", "create", TENANT, "--json", timeout=60)
        token = json.loads(created.stdout)["token"]
        ctx.log(f"deploying {name} for tenant {TENANT}")
        plat.cli("--tenant", TENANT, "deploy", str(folder))
        with Nginx(ctx.work / "nginx-warm", address) as nginx:
            targets: dict[str, tuple[str, dict[str, str]]] = {
                "direct": (f"http://{address}/", {}),
                "nginx": (nginx.url, {}),
                "plat": (plat.function_url(name), auth),
                "tenant": (
                    plat.function_url(f"{name}.{TENANT}"),
                    {"Authorization": f"Bearer {token}"},
                ),
            }
            for label, (url, headers) in targets.items():
                status = http_get(url, headers)
                if status != 200:
                    raise BenchError(f"{label} ({url}) answered {status}, not 200")
            if not ctx.quick:
                ctx.log("warming up each path (1 s at c=64)")
                for url, headers in targets.values():
                    wrk(url, connections=64, seconds=1, headers=headers)
            for connections in LEVELS:
                for label in PATHS:
                    url, headers = targets[label]
                    ctx.log(f"wrk {label} c={connections} {seconds} s")
                    res = wrk(url, connections=connections, seconds=seconds, headers=headers)
                    require_success(label, res)
                    results[label, connections] = res
    return _section(results, seconds, warmup=not ctx.quick)


def _section(results: dict[tuple[str, int], WrkResult], seconds: int, *, warmup: bool) -> Section:
    def r(label: str, connections: int) -> WrkResult:
        return results[label, connections]

    low, high = LEVELS[0], LEVELS[-1]
    plat_added = r("plat", low).p50 - r("direct", low).p50
    nginx_added = r("nginx", low).p50 - r("direct", low).p50
    figures = [
        Figure(f"p50 latency, c={low}", r("plat", low).p50, "ms", "direct", r("direct", low).p50),
        Figure(
            f"p50 latency added over direct, c={low}",
            plat_added,
            "ms",
            "nginx (its added p50)",
            nginx_added,
        ),
        Figure(
            f"throughput, c={low}",
            r("plat", low).rps,
            "req/s",
            "nginx",
            r("nginx", low).rps,
            better="higher",
        ),
        Figure(
            f"throughput, c={high}",
            r("plat", high).rps,
            "req/s",
            "nginx",
            r("nginx", high).rps,
            better="higher",
            note="ratio = plat's fraction of nginx",
        ),
        Figure(
            f"throughput, c={high}",
            r("plat", high).rps,
            "req/s",
            "direct",
            r("direct", high).rps,
            better="higher",
        ),
        Figure(f"p99 latency, c={high}", r("plat", high).p99, "ms", "nginx", r("nginx", high).p99),
        Figure(
            f"tenant path p50 latency, c={low}",
            r("tenant", low).p50,
            "ms",
            "plat (default tenant)",
            r("plat", low).p50,
        ),
        Figure(
            f"tenant path throughput, c={high}",
            r("tenant", high).rps,
            "req/s",
            "plat (default tenant)",
            r("plat", high).rps,
            better="higher",
        ),
    ]
    detail = Table(
        "wrk results",
        ["concurrency", "path", "p50", "p90", "p99", "req/s", "requests", "errors"],
    )
    ratios = Table(
        "plat relative to the baselines (ratio = plat ÷ baseline)",
        ["concurrency", "p50 ÷ direct", "p50 ÷ nginx", "req/s ÷ direct", "req/s ÷ nginx"],
    )
    errors = 0
    for connections in LEVELS:
        for label in PATHS:
            res = r(label, connections)
            errors += res.errors
            detail.rows.append(
                [
                    str(connections),
                    label,
                    fmt(res.p50, "ms"),
                    fmt(res.p90, "ms"),
                    fmt(res.p99, "ms"),
                    fmt(res.rps, "req/s"),
                    f"{res.requests:,}",
                    str(res.errors),
                ]
            )
        p, d, n = r("plat", connections), r("direct", connections), r("nginx", connections)
        ratios.rows.append(
            [
                str(connections),
                fmt_ratio(p.p50 / d.p50 if d.p50 else None),
                fmt_ratio(p.p50 / n.p50 if n.p50 else None),
                fmt_ratio(p.rps / d.rps if d.rps else None),
                fmt_ratio(p.rps / n.rps if n.rps else None),
            ]
        )
    notes = [
        f"plat adds {fmt(plat_added, 'ms')} to the p50 at c={low} "
        f"(nginx adds {fmt(nginx_added, 'ms')}); at c={high} plat serves "
        f"{100 * r('plat', high).rps / r('nginx', high).rps:.0f} % of nginx's throughput.",
        "wrk, nginx, the daemon and the instance share the same cores, so at c≥16 every "
        "path also competes with wrk for CPU; the instance is limited to 1 CPU (the "
        "manifest default).",
    ]
    if errors:
        notes.append(f"wrk counted {errors} socket errors or non-2xx responses in total.")
    method = (
        'A python function returning `"ok"`, one instance that takes every request at once '
        "(`scale: {min: 1, max: 1, concurrency: 1000}`: plat's default of 8 in flight per "
        "instance would queue the rest in the gateway, which nginx does not). "
        f"`wrk --latency` for {seconds} s per run (threads = min(connections, 2))"
        + (" after a 1 s warm-up of each path at c=64" if warmup else " (quick: no warm-up)")
        + ", at each concurrency in turn against: **direct**, the "
        "instance's own address, as the gateway reaches it; **nginx**, a private nginx "
        "(`worker_processes auto`, upstream `keepalive 64`, HTTP/1.1, `access_log off`) "
        "proxying to the same instance; **plat**, the gateway's `/function/NAME` with basic auth; "
        "**tenant**, the same function deployed for a tenant (its own instance, on the "
        "tenant's network) at `/function/NAME.TENANT` with the tenant's bearer token."
    )
    return Section(NAME, TITLE, method, figures, [detail, ratios], notes)
