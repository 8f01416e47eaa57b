"""FastAPI on plat against the same app under uvicorn: what the ASGI adapter costs.

One FastAPI function (``GET /items/{item_id}`` returning a small JSON object) is
deployed as one instance. Its image also holds uvicorn (from the same
requirements.txt), so the baseline runs the very same code and packages:
``podman run`` of that image with the hardening plat gives an instance
(read-only root, no capabilities, no-new-privileges, the same memory, CPU and
pids limits, user 10001, ``--init``), serving ``uvicorn main:app`` (its default
HTTP stack: h11 on asyncio; one worker). ``wrk --latency`` then loads, per
concurrency, interleaved:

* ``uvicorn``: the baseline container's published port;
* ``shim``: the plat instance's own address (the shim's server and the adapter);
* ``plat``: the gateway's ``/function/NAME`` with basic auth (what a user calls).

Headline: the shim's throughput and p50 relative to uvicorn's (the adapter and
server together), and what the gateway adds on top.
"""

from __future__ import annotations

import secrets
import subprocess
import time

from benchmarks.context import BenchError, Context
from benchmarks.daemon import Plat
from benchmarks.net import free_port, http_get, wait_http_ok
from benchmarks.report import Figure, Section, Table, fmt, fmt_ratio
from benchmarks.shell import run as sh
from benchmarks.wrk import WrkResult, require_success, wrk

NAME = "fastapi"
TITLE = "FastAPI: plat's ASGI adapter against uvicorn"
APP = """
from fastapi import FastAPI

app = FastAPI()


@app.get("/items/{item_id}")
async def item(item_id: int):
    return {"id": item_id, "name": "widget"}
"""
REQUIREMENTS = "fastapi\nuvicorn\n"
MANIFEST = """\
name: {name}
runtime: python
handler: main:app
adapter: asgi
resources: {{memory: 256Mi, cpu: 1}}
scale: {{min: 1, max: 1, concurrency: 1000}}
"""
LEVELS = (1, 64)
PATHS = ("uvicorn", "shim", "plat")


def _image_of(name: str) -> str:
    out = sh(["podman", "ps", "--filter", f"label=plat.function={name}", "--format", "{{.Image}}"])
    images = [line for line in out.stdout.split() if line]
    if not images:
        raise BenchError(f"no running container of {name}")
    return images[0]


def _uvicorn(image: str, port: int) -> str:
    """Start the baseline container; returns its name."""
    name = f"plat-bench-uvicorn-{secrets.token_hex(3)}"
    sh(
        [
            "podman", "run", "-d", "--rm", "--name", name,
            "--read-only", "--tmpfs", "/tmp:rw,size=64m", "--cap-drop=ALL",
            "--security-opt", "no-new-privileges", "--memory", "256m", "--cpus", "1",
            "--pids-limit", "256", "--user", "10001:10001", "--init",
            "-p", f"127.0.0.1:{port}:8080", "--workdir", "/home/app", image,
            "python3", "-m", "uvicorn", "main:app", "--host", "0.0.0.0", "--port", "8080",
            "--no-access-log", "--workers", "1",
        ]
    )  # fmt: skip
    return name


def run(ctx: Context) -> Section:
    """Measure the three paths; returns the section (raises BenchError on failure)."""
    name = f"bench-fastapi-{ctx.run_id}"
    seconds: int = ctx.pick(1, 5)
    folder = ctx.work / name
    folder.mkdir(parents=True)
    (folder / "plat.yaml").write_text(MANIFEST.format(name=name))
    (folder / "main.py").write_text(APP.lstrip())
    (folder / "requirements.txt").write_text(REQUIREMENTS)
    results: dict[tuple[str, int], WrkResult] = {}
    with Plat(ctx.work, NAME, ctx.log) as plat:
        ctx.log(f"deploying {name} (fastapi and uvicorn from PyPI)")
        plat.deploy(folder, name)
        address = str(plat.ready_instance(name)["address"])
        image = _image_of(name)
        port = free_port()
        ctx.log(f"starting uvicorn from {image}")
        container = _uvicorn(image, port)
        try:
            wait_http_ok(f"http://127.0.0.1:{port}/items/1", timeout=30)
            auth = {"Authorization": plat.auth_header()}
            targets: dict[str, tuple[str, dict[str, str]]] = {
                "uvicorn": (f"http://127.0.0.1:{port}/items/1", {}),
                "shim": (f"http://{address}/items/1", {}),
                "plat": (plat.function_url(name) + "/items/1", auth),
            }
            for label, (url, headers) in targets.items():
                if http_get(url, headers) != 200:
                    raise BenchError(f"{label} ({url}) did not answer 200")
            if not ctx.quick:
                for url, headers in targets.values():
                    wrk(url, connections=64, seconds=1, headers=headers)
            for connections in LEVELS:
                for label in PATHS:
                    url, headers = targets[label]
                    ctx.log(f"wrk {label} c={connections} {seconds} s")
                    res = wrk(url, connections=connections, seconds=seconds, headers=headers)
                    require_success(label, res)
                    results[label, connections] = res
        finally:
            subprocess.run(["podman", "rm", "-f", container], capture_output=True, check=False)
            time.sleep(0.1)
    return _section(results, seconds)


def _section(results: dict[tuple[str, int], WrkResult], seconds: int) -> Section:
    def r(label: str, connections: int) -> WrkResult:
        return results[label, connections]

    low, high = LEVELS
    figures = [
        Figure(f"shim p50, c={low}", r("shim", low).p50, "ms", "uvicorn", r("uvicorn", low).p50),
        Figure(
            f"shim throughput, c={high}",
            r("shim", high).rps,
            "req/s",
            "uvicorn",
            r("uvicorn", high).rps,
            better="higher",
            note="ratio = the shim's fraction of uvicorn's",
        ),
        Figure(f"plat p50, c={low}", r("plat", low).p50, "ms", "uvicorn", r("uvicorn", low).p50),
        Figure(
            f"plat throughput, c={high}",
            r("plat", high).rps,
            "req/s",
            "uvicorn",
            r("uvicorn", high).rps,
            better="higher",
        ),
    ]
    detail = Table("wrk results", ["concurrency", "path", "p50", "p99", "req/s", "errors"])
    for connections in LEVELS:
        for label in PATHS:
            res = r(label, connections)
            detail.rows.append(
                [
                    str(connections),
                    label,
                    fmt(res.p50, "ms"),
                    fmt(res.p99, "ms"),
                    fmt(res.rps, "req/s"),
                    str(res.errors),
                ]
            )
    ratio = r("shim", high).rps / r("uvicorn", high).rps if r("uvicorn", high).rps else None
    notes = [
        f"At c={high} the shim serves the app at {fmt_ratio(ratio)} of uvicorn's throughput; "
        f"the gateway's path adds {fmt(r('plat', low).p50 - r('shim', low).p50, 'ms')} "
        f"to the p50 at c={low}.",
        "uvicorn runs with its default stack (h11 on asyncio, no uvloop or httptools in the "
        "image), one worker; both containers are limited to 1 CPU and share the machine "
        "with wrk and the daemon.",
    ]
    method = (
        "A FastAPI app (`GET /items/{item_id}`, a small JSON answer), one plat instance "
        "(`adapter: asgi`, `scale: {min: 1, max: 1, concurrency: 1000}`) and, from the same "
        "image, `uvicorn main:app` in a container with plat's hardening and limits. "
        f"`wrk --latency` for {seconds} s per run at c={low} and c={high} against uvicorn, "
        "the instance's own address (**shim**) and the gateway (**plat**)."
    )
    return Section(NAME, TITLE, method, figures, [detail], notes)
