"""A plat daemon in a temporary home, driven through its CLI and control API.

Everything a :class:`Plat` starts is its own and is cleaned up by it: it has a
temporary ``PLAT_HOME`` and a free gateway port (never the defaults), removes
the functions it deployed, stops its daemon and deletes the images it built.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from benchmarks.context import BenchError, Log
from benchmarks.net import free_port
from benchmarks.procfs import child_pids
from benchmarks.shell import run, timed
from plat.client import DaemonClient
from plat.daemon.lifecycle import pid_alive
from plat.errors import PlatError
from plat.paths import Home


@dataclass
class DeployTiming:
    name: str
    wall: float


class Plat:
    """One plat daemon with its own ``PLAT_HOME`` under ``root`` and a free gateway port.

    Used as a context manager: entering starts the daemon; leaving removes every
    function deployed through it (``plat rm``), stops the daemon (SIGKILL if it
    does not stop), removes containers it left behind and the images of the
    functions it deployed.
    """

    def __init__(self, root: Path, label: str, log: Log) -> None:
        self.home = root / f"home-{label}"
        self.port = free_port()
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("PLAT_")}
        env.update(
            {
                "PLAT_HOME": str(self.home),
                "PLAT_GATEWAY_PORT": str(self.port),
                "NO_COLOR": "1",
                "COLUMNS": "200",
            }
        )
        self.env = env
        self.pid: int | None = None
        self.engine_pid: int | None = None  # the engine service the daemon started, if any
        self.deployed: list[str] = []  # in deploy order, removed at the end
        self.built: set[str] = set()  # every function name that got an image
        self.stacks_before: set[str] = set()  # stack images there before the daemon started

    # lifecycle

    def __enter__(self) -> Plat:
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def cli(
        self, *args: str, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run(
            [sys.executable, "-m", "plat", *args], env=self.env, timeout=timeout, check=check
        )

    def start(self) -> None:
        """``plat daemon start``; the pid comes from the pid file (no second CLI call)."""
        self.stacks_before = set(_stack_images())
        self.cli("daemon", "start", timeout=120)
        self.pid = int((self.home / "run" / "plat.pid").read_text())
        self.engine_pid = engine_service_pid(self.pid)

    def status(self) -> dict[str, Any]:
        """What ``plat daemon status --json`` prints (through the CLI)."""
        data: dict[str, Any] = json.loads(self.cli("daemon", "status", "--json").stdout)
        return data

    def daemon_id(self) -> str | None:
        path = self.home / "daemon-id"
        return path.read_text().strip() if path.is_file() else None

    def cleanup(self) -> None:
        """Remove deployed functions, stop the daemon, delete leftovers and built images."""
        try:
            if self.deployed and self.pid is not None:
                self.remove_all(list(self.deployed), budget=300)
        finally:
            self.stop()
            self._remove_leftover_containers()
            self._remove_images()

    def remove_all(
        self, names: list[str], parallel: int = 8, budget: float | None = None
    ) -> tuple[int, float]:
        """``plat rm`` each name, ``parallel`` at a time; returns (removed, wall seconds).

        Past ``budget`` seconds no new ``plat rm`` starts: stopping the daemon then
        stops the remaining instances (and :meth:`cleanup` removes any leftovers).
        """
        started = time.perf_counter()

        def remove(name: str) -> subprocess.CompletedProcess[str] | None:
            if budget is not None and time.perf_counter() - started > budget:
                return None
            return self.cli("rm", name, check=False, timeout=120)

        removed = 0
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            for name, proc in zip(names, pool.map(remove, names), strict=True):
                if proc is None:
                    continue
                if proc.returncode == 0:
                    removed += 1
                    if name in self.deployed:
                        self.deployed.remove(name)
                else:
                    self.log(f"plat rm {name} failed: {proc.stderr.strip()[-300:]}")
                    self.log("daemon.log ends with:\n" + self.log_tail())
        return removed, time.perf_counter() - started

    def log_count(self, text: str) -> int:
        """How many lines of the daemon's log contain ``text``."""
        try:
            with (self.home / "daemon.log").open(errors="replace") as fh:
                return sum(1 for line in fh if text in line)
        except OSError:
            return 0

    def log_tail(self, lines: int = 25) -> str:
        """The last lines of the daemon's log (for error messages)."""
        try:
            text = (self.home / "daemon.log").read_text(errors="replace")
        except OSError:
            return "(no daemon.log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.pid is None:
            return
        proc = self.cli("daemon", "stop", check=False, timeout=120)
        # `plat daemon stop` returns once the pid file is gone; the process exits just after.
        deadline = time.monotonic() + (15 if proc.returncode == 0 else 0)
        while pid_alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(self.pid):
            self.log(f"plat daemon stop failed ({proc.stderr.strip()[-200:]}); killing {self.pid}")
            self.log("daemon.log ends with:\n" + self.log_tail())
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
        # A daemon that was killed leaves the engine service it started behind.
        if self.engine_pid is not None and pid_alive(self.engine_pid):
            time.sleep(2)
            if pid_alive(self.engine_pid) and _is_engine_service(self.engine_pid):
                self.log(f"stopping the engine service {self.engine_pid} the daemon left behind")
                with contextlib.suppress(OSError):
                    os.kill(self.engine_pid, signal.SIGTERM)
        self.pid = self.engine_pid = None

    def _remove_leftover_containers(self) -> None:
        ident = self.daemon_id()
        if ident is None:
            return
        out = run(
            ["podman", "ps", "-aq", "--filter", f"label=plat.daemon={ident}"], check=False
        ).stdout.split()
        if out:
            self.log(f"removing {len(out)} container(s) the daemon left behind")
            run(["podman", "rm", "-f", "-t", "0", *out], check=False, timeout=300)

    def _remove_images(self) -> None:
        if not self.built:
            return
        wanted = {f"localhost/plat/{name}" for name in self.built}
        refs = [ref for ref in _image_refs() if ref.rpartition(":")[0] in wanted]
        # Stacks this run made (a new dependency set each); one in use stays.
        refs += [ref for ref in _stack_images() if ref not in self.stacks_before]
        for start in range(0, len(refs), 50):
            run(["podman", "rmi", *refs[start : start + 50]], check=False, timeout=600)

    # functions

    def deploy(self, folder: Path, name: str) -> DeployTiming:
        """``plat deploy folder``, timed end to end (CLI start-up included)."""
        self.built.add(name)
        wall, _ = timed([sys.executable, "-m", "plat", "deploy", str(folder)], env=self.env)
        if name not in self.deployed:
            self.deployed.append(name)
        return DeployTiming(name, wall)

    def api(self, path: str, timeout: float = 60.0) -> Any:
        """GET ``path`` of the daemon's control API (what ``plat ... --json`` prints).

        Reads go straight to the unix socket, with the CLI's own client, rather than
        through the CLI, whose start-up (about a second) would otherwise dominate short runs.
        """
        client = DaemonClient(Home(self.home), timeout=timeout)
        try:
            return client.request("GET", path)
        except PlatError as exc:
            raise BenchError(f"GET {path} on the control API: {exc}") from exc

    def describe(self, name: str) -> dict[str, Any]:
        """What ``plat describe NAME --json`` prints."""
        data: dict[str, Any] = self.api(f"/v1/functions/{name}")
        return data

    def functions(self) -> list[dict[str, Any]]:
        """What ``plat ls --json`` prints."""
        data: list[dict[str, Any]] = self.api("/v1/functions")
        return data

    def ready_instance(self, name: str) -> dict[str, Any]:
        """The describe entry of a ready instance of the function's current version."""
        return ready_instance(self.describe(name))

    def auth_header(self) -> str:
        password = (self.home / "credentials").read_text().strip().partition(":")[2]
        return "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()

    def function_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/function/{name}"


def _image_refs() -> list[str]:
    """NAME:TAG of every image in local storage. buildah lists them in ~1 s where
    ``podman images`` took 30 s with a thousand images (it works out their sizes)."""
    listing = run(["buildah", "images", "--format", "{{.Name}}:{{.Tag}}"], check=False)
    return listing.stdout.split()


def _stack_images() -> list[str]:
    """The stack images in local storage (below every function image: see build.py)."""
    return [ref for ref in _image_refs() if ref.startswith("localhost/plat/stack-")]


def engine_service_pid(daemon_pid: int) -> int | None:
    """The ``podman system service`` the daemon started as its child, if it did."""
    return next((c for c in child_pids(daemon_pid) if _is_engine_service(c)), None)


def _is_engine_service(pid: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"system" in argv and b"service" in argv


def ready_instance(info: Mapping[str, Any]) -> dict[str, Any]:
    """From ``plat describe --json`` output: a ready instance of the current version."""
    for inst in info["instance_list"]:
        if inst["state"] == "ready" and inst["version"] == info["version"]:
            return dict(inst)
    raise BenchError(f"{info['name']} has no ready instance: {info['instance_list']}")


def build_seconds(info: Mapping[str, Any]) -> float:
    """From ``plat describe --json`` output: the build time of the current version."""
    for version in info["versions"]:
        if version["version"] == info["version"]:
            return float(version["build_seconds"] or 0.0)
    raise BenchError(f"no build record for the current version of {info['name']}")
