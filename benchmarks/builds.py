"""Builds and deploys: ``plat deploy`` of a python function with one dependency.

The function is a copy of ``examples/hello-python`` under a unique name. In full
mode a comment naming the run is appended to ``requirements.txt`` so that the
first build's dependency layer is new (not found in buildah's layer cache from
an earlier run) and pip really reaches PyPI; quick mode lets it reuse cached
layers. Scenarios, in order:

1. first build (no image of that name yet);
2. unchanged redeploy;
3. code-only change (``handler.py`` edited);
4. dependency change (``python-slugify`` added; full mode only).

Each is timed end to end (``plat deploy`` wall time, CLI start-up included) and
split into the daemon's build time and the new instance's time to ready (both
from ``plat describe --json``). The baseline does the same by hand in the same
run: ``buildah build --layers`` of an equivalent hand-written Containerfile (same
base image, shim and handler), given the same change, then ``podman run`` of the
image until the first HTTP 200.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.context import EXAMPLES, REPO, BenchError, Context
from benchmarks.daemon import Plat, build_seconds, ready_instance
from benchmarks.net import free_port, http_get, wait_http_ok
from benchmarks.report import Figure, Section, Table, fmt, fmt_ratio
from benchmarks.shell import run as sh
from benchmarks.shell import timed
from benchmarks.stats import median

NAME = "builds"
TITLE = "Builds and deploys"
SECOND_PACKAGE = "python-slugify==8.0.4"
SHIM = REPO / "runtimes" / "python" / "shim"

# The hand-written equivalent of what plat renders from runtimes/python/Containerfile.j2:
# the same base, shim, dependency install (host CA bundle mounted for the RUN only)
# and code, in the same layer order.
BASELINE_CONTAINERFILE = """\
FROM {base}
ENV PORT=8080 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/opt/deps \\
    PLAT_HANDLER=handler.handle
COPY shim/ /opt/shim/
COPY requirements.txt /opt/deps/requirements.txt
RUN PIP_CERT=/run/ca.crt SSL_CERT_FILE=/run/ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \\
    PIP_ROOT_USER_ACTION=ignore \\
    python3 -m pip install --no-cache-dir --target /opt/deps -r /opt/deps/requirements.txt
COPY app/ /home/app/
WORKDIR /home/app
USER 10001:10001
CMD ["python3", "/opt/shim/plat_shim.py"]
"""


@dataclass
class Step:
    """One scenario: plat's timings and the baseline's."""

    label: str
    deploy_wall: float
    build: float | None  # the daemon's build time (None: the image was reused)
    ready: float | None  # the new instance's time to ready (None: none was started)
    baseline_build: float
    baseline_run: float | None  # podman run -> first 200 (None: nothing new to run)

    @property
    def baseline_total(self) -> float:
        return self.baseline_build + (self.baseline_run or 0.0)


def _base_image() -> str:
    from plat.baseimages import resolve_base_sync
    from plat.errors import PlatError
    from plat.runtimes import get_runtime

    try:
        return resolve_base_sync(get_runtime("python"), pull=False)
    except PlatError as exc:
        raise BenchError(f"no python base image: {exc.message} ({exc.hint})") from exc


def _ca_bundle() -> str:
    from plat.daemon.drivers.container.build import host_ca_bundle

    ca = host_ca_bundle(os.environ)
    if ca is None:
        raise BenchError("no host CA bundle found for the dependency install")
    return ca


class Baseline:
    """The hand-written build and ``podman run`` of the same function, changed alike."""

    def __init__(self, ctx: Context, source: Path) -> None:
        self.ctx = ctx
        self.root = ctx.work / "baseline"
        (self.root / "app").mkdir(parents=True)
        shutil.copytree(SHIM, self.root / "shim", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(source / "handler.py", self.root / "app" / "handler.py")
        # Its own marker: no layer of plat's build (or, in full mode, of an earlier run)
        # is reused.
        marker = "quick run" if ctx.quick else f"run {ctx.run_id}"
        requirements = (source / "requirements.txt").read_text()
        (self.root / "requirements.txt").write_text(
            requirements + f"# baseline of the benchmark's {marker}\n"
        )
        (self.root / "Containerfile").write_text(BASELINE_CONTAINERFILE.format(base=_base_image()))
        for path in [self.root, *self.root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        self.repo = f"localhost/plat-bench/baseline-{ctx.run_id}"
        self.ca = _ca_bundle()
        self.images: list[str] = []
        self.runs = 0

    @property
    def handler(self) -> Path:
        return self.root / "app" / "handler.py"

    @property
    def requirements(self) -> Path:
        return self.root / "requirements.txt"

    def build(self) -> tuple[float, str]:
        """(wall seconds, tag) of ``buildah build --layers`` of the current folder."""
        tag = f"{self.repo}:{len(self.images) + 1}"
        cmd = ["buildah", "build", "--layers", "--pull=never", "-f", "Containerfile"]
        cmd += ["-v", f"{self.ca}:/run/ca.crt:ro", "-t", tag, "."]
        wall, _ = timed(cmd, cwd=self.root, timeout=900)
        self.images.append(tag)
        return wall, tag

    def run_to_200(self, image: str) -> float:
        """Seconds from the start of ``podman run -d`` to the container's first HTTP 200."""
        self.runs += 1
        port = free_port()
        name = f"plat-bench-{self.ctx.run_id}-{self.runs}"
        started = time.perf_counter()
        sh(["podman", "run", "-d", "--rm", "--name", name, "-p", f"127.0.0.1:{port}:8080", image])
        try:
            wait_http_ok(f"http://127.0.0.1:{port}/", timeout=60)
            return time.perf_counter() - started
        finally:
            sh(["podman", "rm", "-f", "-t", "0", name], check=False)

    def cleanup(self) -> None:
        if self.images:
            sh(["podman", "rmi", *self.images], check=False, timeout=300)


def _append(path: Path, text: str) -> None:
    with path.open("a") as fh:
        fh.write(text)


def _check_imports(image: str, modules: list[str]) -> None:
    """The image's python imports ``modules`` (offline): the dependency install worked."""
    code = "import " + ", ".join(modules)
    sh(["podman", "run", "--rm", "--network=none", image, "python3", "-c", code], timeout=120)


def _cli_startup(samples: int) -> tuple[float, float]:
    """Median wall seconds of ``plat --version`` and, as its floor, ``python -c pass``."""
    plat = [timed([sys.executable, "-m", "plat", "--version"])[0] for _ in range(samples)]
    bare = [timed([sys.executable, "-c", "pass"])[0] for _ in range(samples)]
    return median(plat), median(bare)


def run(ctx: Context) -> Section:
    """Run the scenarios against plat and the baseline; returns the section."""
    name = f"bench-build-{ctx.run_id}"
    source = ctx.work / name
    shutil.copytree(EXAMPLES / "hello-python", source)
    manifest = source / "plat.yaml"
    manifest.write_text(
        re.sub(r"^name:.*$", f"name: {name}", manifest.read_text(), count=1, flags=re.M)
    )
    if not ctx.quick:
        # A new dependency layer: the first build really installs from PyPI.
        _append(source / "requirements.txt", f"# benchmark run {ctx.run_id}: a new layer\n")
    baseline = Baseline(ctx, source)
    runs_per_image: int = ctx.pick(1, 2)

    def no_change() -> None:
        return None

    def code_change() -> None:
        for path in (source / "handler.py", baseline.handler):
            _append(path, '\nCODE_REVISION = "edited by the benchmark"\n')

    def dependency_change() -> None:
        for path in (source / "requirements.txt", baseline.requirements):
            _append(path, SECOND_PACKAGE + "\n")

    scenarios: list[tuple[str, Callable[[], None]]] = [
        ("first build", no_change),
        ("unchanged redeploy", no_change),
        ("code-only change", code_change),
    ]
    if not ctx.quick:
        scenarios.append(("dependency change", dependency_change))

    steps: list[Step] = []
    checked: list[str] = []
    previous: str | None = None
    try:
        with Plat(ctx.work, NAME, ctx.log) as plat:
            for label, change in scenarios:
                change()
                ctx.log(f"{label}: plat deploy")
                wall = plat.deploy(source, name).wall
                info = plat.describe(name)
                new_version = info["version"] != previous
                previous = info["version"]
                inst = ready_instance(info)
                ready = float(inst["ready_seconds"]) if new_version else None
                build = build_seconds(info) if new_version else None
                ctx.log(f"{label}: buildah build (baseline)")
                b_build, image = baseline.build()
                b_run: float | None = None
                if new_version:
                    ctx.log(f"{label}: podman run -> 200 (baseline) x{runs_per_image}")
                    b_run = median(baseline.run_to_200(image) for _ in range(runs_per_image))
                steps.append(Step(label, wall, build, ready, b_build, b_run))
                if label == "dependency change":
                    _check_imports(str(info["image"]), ["humanize", "slugify"])
                    checked.append("the dependency change's image imports humanize and slugify")
                elif label == "first build":
                    _check_imports(str(info["image"]), ["humanize"])
                    checked.append("the first build's image imports humanize")
                status = _status(plat, name)
                if status != 200:
                    raise BenchError(f"after the {label}, {name} answered {status}, not 200")
    finally:
        baseline.cleanup()
    samples: int = ctx.pick(1, 3)
    cli, bare = _cli_startup(samples)
    return _section(steps, checked, cli, bare, samples, quick=ctx.quick)


def _status(plat: Plat, name: str) -> int:
    return http_get(plat.function_url(name), {"Authorization": plat.auth_header()})


def _section(
    steps: list[Step], checked: list[str], cli: float, bare: float, samples: int, *, quick: bool
) -> Section:
    by = {s.label: s for s in steps}
    figures: list[Figure] = []
    first = by["first build"]
    figures.append(
        Figure(
            "first build: deploy end to end",
            first.deploy_wall,
            "s",
            "buildah build + podman run → 200",
            first.baseline_total,
        )
    )
    if first.build is not None:
        figures.append(
            Figure(
                "first build: image build", first.build, "s", "buildah build", first.baseline_build
            )
        )
    figures.append(
        Figure(
            "unchanged redeploy: end to end",
            by["unchanged redeploy"].deploy_wall,
            "s",
            "buildah build (all cached)",
            by["unchanged redeploy"].baseline_build,
        )
    )
    for label in ("code-only change", "dependency change"):
        if label in by:
            figures.append(
                Figure(
                    f"{label}: deploy end to end",
                    by[label].deploy_wall,
                    "s",
                    "buildah build + podman run → 200",
                    by[label].baseline_total,
                )
            )
    readies = [s.ready for s in steps if s.ready is not None]
    runs = [s.baseline_run for s in steps if s.baseline_run is not None]
    figures.append(
        Figure(
            "instance time to ready",
            median(readies),
            "s",
            "podman run → first 200",
            median(runs),
            note=f"medians of {len(readies)} and {len(runs)}",
        )
    )
    figures.append(Figure("CLI start-up (`plat --version`)", cli, "s", "`python -c pass`", bare))
    table = Table(
        "per scenario",
        [
            "scenario",
            "plat deploy (wall)",
            "plat build",
            "plat ready",
            "buildah build",
            "podman run → 200",
            "baseline total",
            "deploy ÷ baseline",
        ],
    )
    for s in steps:
        table.rows.append(
            [
                s.label,
                fmt(s.deploy_wall, "s"),
                "-" if s.build is None else fmt(s.build, "s"),
                "-" if s.ready is None else fmt(s.ready, "s"),
                fmt(s.baseline_build, "s"),
                "-" if s.baseline_run is None else fmt(s.baseline_run, "s"),
                fmt(s.baseline_total, "s"),
                fmt_ratio(s.deploy_wall / s.baseline_total if s.baseline_total else None),
            ]
        )
    notes = [
        "plat deploy (wall) includes the CLI's start-up (see the last figure), the build, "
        "starting the hardened instance and waiting for its readiness probe; "
        "`plat build` and `plat ready` are the daemon's own figures from "
        "`plat describe --json`.",
        "An unchanged redeploy starts no instance: plat finds the image by its content "
        "digest and keeps the running instance.",
        f"Checked, with the network off: {'; '.join(checked)} (the dependency installs "
        "reached PyPI through the host CA bundle).",
        f"CLI start-up: median of {samples} run(s).",
    ]
    if quick:
        notes.append(
            "Quick mode skips the dependency change and lets the first builds reuse "
            "dependency layers cached by earlier runs: its numbers show that the suite "
            "works, not how fast builds are."
        )
    method = (
        "A copy of `examples/hello-python` (one dependency, `humanize`) under a unique "
        "name; in full mode a comment naming the run is appended to `requirements.txt` so "
        "the first build's dependency layer is new and pip installs from PyPI. Scenarios in "
        "order: first build, unchanged redeploy, code-only change (`handler.py` edited), "
        "dependency change "
        f"(`{SECOND_PACKAGE}` added). Baseline in the same run: `buildah build --layers` of "
        "an equivalent hand-written Containerfile (same base image, shim, dependency step and "
        "code, same layer order) given the same change, and plain `podman run -d -p` of that "
        "image polled every 10 ms until the first HTTP 200."
    )
    return Section(NAME, TITLE, method, figures, [table], notes)
