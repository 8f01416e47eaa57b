"""Gateway cost: CPU per request and tail latency against nginx, default manifest.

The warm-path benchmark gives one instance every request at once, so the
instance (a Python shim capped at one CPU) sets the pace for nginx and plat
alike. This one weighs the proxy itself, on a function as users deploy it: the
default manifest (``scale: {min: 1, max: 4, concurrency: 8}``), so admission,
its queue and the autoscaler are all at work. Two functions, each returning
``"ok"``:

* ``node``: the fast upstream, a Node instance, so the proxy is the bottleneck;
* ``python``: the Python shim.

Each function is first loaded at c=64 until it has scaled to its four
instances. Then, per round and per concurrency (64 and 1000), ``wrk`` loads a
private nginx balancing over the same instances (round-robin, keep-alive
upstream) and the gateway's ``/function/NAME`` in turn. The CPU time of the
daemon (all its threads: the event loop and the store's) and of nginx's master
and workers over each run, divided by the requests completed, is the proxy's
CPU per request. Figures are medians over the rounds.

The daemon runs with ``queue_limit`` raised to 2048: with the default of 256,
c=1000 against 32 slots (4 instances x 8) would be refused in part with 429 at
once, and the run would measure the refusal, not the proxy.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.context import BenchError, Context
from benchmarks.daemon import Plat
from benchmarks.functions import write_node_function, write_python_function
from benchmarks.net import http_get
from benchmarks.nginx import Nginx
from benchmarks.procfs import cpu_seconds
from benchmarks.report import Figure, Section, Table, fmt, fmt_ratio
from benchmarks.stats import median
from benchmarks.wrk import WrkResult, wrk

NAME = "gateway"
TITLE = "Gateway cost against nginx (default manifest)"
KINDS = ("node", "python")
LEVELS = (64, 1000)
PROXIES = ("nginx", "plat")
QUEUE_LIMIT = 2048
CPU_TARGET = 2.0  # plat's CPU per request ÷ nginx's, at most
RPS_TARGET = 0.8  # plat's throughput ÷ nginx's, at least (fast upstream, c=64)
P99_TARGET = 1.3  # plat's p99 ÷ nginx's, at most (fast upstream)
NODE_HANDLER = "module.exports = async () => 'ok';\n"
PYTHON_HANDLER = """
def handle(event, context):
    return "ok"
"""


@dataclass(frozen=True)
class Run:
    """One wrk run through one proxy, with the proxy's CPU time over it."""

    kind: str
    proxy: str
    round: int
    result: WrkResult
    cpu: float  # CPU seconds the proxy used over the run

    @property
    def cpu_per_request(self) -> float:
        """µs of the proxy's CPU per completed request."""
        return 1e6 * self.cpu / max(1, self.result.requests)


def run(ctx: Context) -> Section:
    rounds: int = ctx.pick(1, 3)
    seconds: int = ctx.pick(1, 5)
    runs: list[Run] = []
    folders = {
        "node": write_node_function(ctx.work, f"bench-gw-node-{ctx.run_id}", NODE_HANDLER),
        "python": write_python_function(ctx.work, f"bench-gw-py-{ctx.run_id}", PYTHON_HANDLER),
    }
    plat = Plat(ctx.work, NAME, ctx.log)
    plat.env["PLAT_QUEUE_LIMIT"] = str(QUEUE_LIMIT)
    instances: dict[str, int] = {}
    with plat:
        for kind in KINDS:
            name = folders[kind].name
            ctx.log(f"deploying {name}")
            plat.deploy(folders[kind], name)
            url = plat.function_url(name)
            auth = {"Authorization": plat.auth_header()}
            if http_get(url, auth) != 200:
                raise BenchError(f"{name} did not answer 200 at {url}")
            ctx.log(f"{name}: loading at c=64 until it has scaled out")
            addresses = _scale_out(plat, name, url, auth, ctx.pick(2, 4))
            instances[kind] = len(addresses)
            for index in range(rounds):
                # The instances are read again each round: nginx balances over the
                # ones the gateway has, whatever the autoscaler did meanwhile.
                addresses = _ready_addresses(plat, name)
                with Nginx(ctx.work / f"nginx-gw-{kind}-{index}", addresses) as nginx:
                    for connections in LEVELS:
                        for proxy in PROXIES:
                            ctx.log(f"{kind} round {index + 1}: wrk {proxy} c={connections}")
                            if proxy == "nginx":
                                before = nginx.cpu_seconds()
                                res = wrk(nginx.url, connections=connections, seconds=seconds)
                                cpu = nginx.cpu_seconds() - before
                            else:
                                assert plat.pid is not None
                                before = cpu_seconds(plat.pid)
                                res = wrk(
                                    url, connections=connections, seconds=seconds, headers=auth
                                )
                                cpu = cpu_seconds(plat.pid) - before
                            runs.append(Run(kind, proxy, index + 1, res, cpu))
    return _section(runs, rounds, seconds, instances)


def _ready_addresses(plat: Plat, name: str) -> list[str]:
    info = plat.describe(name)
    return [
        str(inst["address"])
        for inst in info["instance_list"]
        if inst["state"] == "ready" and inst["version"] == info["version"]
    ]


def _scale_out(plat: Plat, name: str, url: str, auth: dict[str, str], attempts: int) -> list[str]:
    """Load ``name`` at c=64 until it has its default maximum of 4 ready instances."""
    addresses: list[str] = []
    for _ in range(attempts):
        wrk(url, connections=64, seconds=2, headers=auth)
        addresses = _ready_addresses(plat, name)
        if len(addresses) >= 4:
            break
    if not addresses:
        raise BenchError(f"{name} has no ready instance after loading it")
    return addresses


def _med(runs: list[Run], kind: str, proxy: str, connections: int, what: str) -> float:
    chosen = [
        r
        for r in runs
        if r.kind == kind and r.proxy == proxy and r.result.connections == connections
    ]
    if what == "cpu":
        return median(r.cpu_per_request for r in chosen)
    return median(float(getattr(r.result, what)) for r in chosen)


def _section(runs: list[Run], rounds: int, seconds: int, instances: dict[str, int]) -> Section:
    low, high = LEVELS
    upstream = {"node": "Node upstream", "python": "Python shim"}
    figures: list[Figure] = []
    for kind in KINDS:
        plat_cpu = _med(runs, kind, "plat", low, "cpu")
        figures.append(
            Figure(
                f"proxy CPU per request, c={low}, {upstream[kind]}",
                round(plat_cpu, 1),
                "µs",
                "nginx (master + workers)",
                round(_med(runs, kind, "nginx", low, "cpu"), 1),
                note=f"target ≤ {CPU_TARGET:g}x",
            )
        )
    figures += [
        Figure(
            f"throughput, c={low}, Node upstream",
            _med(runs, "node", "plat", low, "rps"),
            "req/s",
            "nginx",
            _med(runs, "node", "nginx", low, "rps"),
            better="higher",
            note=f"target ≥ {RPS_TARGET:g}x",
        ),
    ]
    for connections in LEVELS:
        figures.append(
            Figure(
                f"p99 latency, c={connections}, Node upstream",
                _med(runs, "node", "plat", connections, "p99"),
                "ms",
                "nginx",
                _med(runs, "node", "nginx", connections, "p99"),
                note=f"target ≤ {P99_TARGET:g}x",
            )
        )
    failed = sum(
        r.result.errors for r in runs if r.proxy == "plat" and r.result.connections == high
    )
    sent = sum(
        r.result.requests for r in runs if r.proxy == "plat" and r.result.connections == high
    )
    figures.append(
        Figure(
            f"failed requests through plat, c={high} (both functions, every round; target 0)",
            failed,
            "count",
            "requests sent",
            sent,
        )
    )
    medians = Table(
        f"medians of {rounds} rounds",
        [
            "upstream",
            "concurrency",
            "proxy",
            "CPU per request",
            "req/s",
            "p50",
            "p99",
            "CPU ÷ nginx",
            "req/s ÷ nginx",
            "p99 ÷ nginx",
        ],
    )
    for kind in KINDS:
        for connections in LEVELS:
            for proxy in PROXIES:
                cpu = _med(runs, kind, proxy, connections, "cpu")
                rps = _med(runs, kind, proxy, connections, "rps")
                p99 = _med(runs, kind, proxy, connections, "p99")
                ratios = ["", "", ""]
                if proxy == "plat":
                    n_cpu = _med(runs, kind, "nginx", connections, "cpu")
                    n_rps = _med(runs, kind, "nginx", connections, "rps")
                    n_p99 = _med(runs, kind, "nginx", connections, "p99")
                    ratios = [
                        fmt_ratio(cpu / n_cpu if n_cpu else None),
                        fmt_ratio(rps / n_rps if n_rps else None),
                        fmt_ratio(p99 / n_p99 if n_p99 else None),
                    ]
                medians.rows.append(
                    [
                        upstream[kind],
                        str(connections),
                        proxy,
                        f"{cpu:.1f} µs",
                        fmt(rps, "req/s"),
                        fmt(_med(runs, kind, proxy, connections, "p50"), "ms"),
                        fmt(p99, "ms"),
                        *ratios,
                    ]
                )
    every = Table(
        "every run",
        [
            "upstream",
            "round",
            "concurrency",
            "proxy",
            "requests",
            "errors",
            "CPU",
            "CPU per request",
        ],
    )
    for r in runs:
        every.rows.append(
            [
                upstream[r.kind],
                str(r.round),
                str(r.result.connections),
                r.proxy,
                f"{r.result.requests:,}",
                str(r.result.errors),
                f"{r.cpu:.2f} s",
                f"{r.cpu_per_request:.1f} µs",
            ]
        )
    notes = [
        "Instances each function had when measured: "
        + ", ".join(f"{upstream[k]} {n}" for k, n in instances.items())
        + " (the default manifest's maximum is 4).",
        "wrk, nginx, the daemon and the instances share the machine's cores: CPU per "
        "request is the proxy's own, throughput and latency are what it got of a shared "
        "machine.",
    ]
    method = (
        "Two functions on the default manifest (`scale: {min: 1, max: 4, concurrency: 8}`), "
        'each returning `"ok"`: a Node one (the fast upstream) and a Python one (the shim). '
        f"Each is loaded at c=64 until it has scaled out; then, in each of {rounds} rounds, "
        f"`wrk --latency` for {seconds} s at c=64 and c=1000 against a private nginx "
        "(`worker_processes auto`, round-robin over the same instances, upstream "
        "`keepalive 64`) and against the gateway's `/function/NAME` with basic auth, in turn. "
        "CPU per request: the proxy's CPU time over the run (the daemon's process, every "
        "thread; nginx's master and workers) divided by the requests completed. The daemon "
        f"runs with `queue_limit: {QUEUE_LIMIT}` so that c=1000 queues instead of being "
        "refused in part (the default 256 waiting calls plus 32 slots is less than 1000)."
    )
    return Section(NAME, TITLE, method, figures, [medians, every], notes)
