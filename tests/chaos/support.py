"""What the chaos tests share: a daemon with a function under load, faults to inject, and
the checks every scenario ends with (the admission invariant, no orphaned container).

Everything is real: the daemon and the CLI run as subprocesses against a temporary
``PLAT_HOME`` (tests/fixtures.py), instances are Podman containers, the load goes over
loopback HTTP to the gateway (benchmarks/load.py), and faults are real signals.
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from benchmarks.load import Background, LoadResult
from plat.client import DaemonClient
from plat.errors import PlatError
from plat.paths import Home
from tests.fixtures import PlatRunner, daemon_session, make_runner
from tests.functions import write_python_function

# Every path sleeps ``?s=`` seconds (default: none) and answers which instance served it,
# except /hang, which never answers; /print writes a line to stdout first.
HANDLER = """
import time

def handle(event, context):
    if event.path == "/hang":
        time.sleep(3600)
    if event.path == "/print":
        print("chaos line", event.query.get("n"), flush=True)
    time.sleep(float(event.query.get("s") or 0))
    return {"host": context.hostname}
"""

# Settings every chaos daemon runs with: a wait in the queue fails in 10 s rather than
# the default 30 s, so a wedged function shows up as 503s inside a short load phase.
CHAOS_ENV = {"PLAT_QUEUE_TIMEOUT": "10s"}

# The longest any single request may take under chaos before it counts as a hang
# (the client gives up and records a timeout failure).
CLIENT_TIMEOUT = 15.0


@dataclass
class Chaos:
    """A running daemon (``plat``) and a folder for function sources (``root``)."""

    plat: PlatRunner
    root: Path

    # --- the daemon

    @property
    def client(self) -> DaemonClient:
        return DaemonClient(Home(self.plat.home), timeout=10.0)

    def api(self, path: str) -> Any:
        """GET ``path`` on the control socket (what the CLI's ``--json`` prints)."""
        return self.client.request("GET", path)

    def describe(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = self.api(f"/v1/functions/{name}")
        return data

    def daemon_pid(self) -> int:
        pid = self.plat.daemon_pid()
        assert pid is not None, "the daemon wrote no pid file"
        return pid

    def auth(self) -> dict[str, str]:
        token = base64.b64encode(f"admin:{self.plat.password()}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def url(self, name: str) -> str:
        return f"{self.plat.gateway}/function/{name}"

    # --- functions

    def deploy(self, name: str, manifest: str, handler: str = HANDLER) -> Path:
        folder = write_python_function(self.root, name, handler, extra_manifest=manifest)
        self.plat.run("deploy", str(folder))
        return folder

    def ready_ids(self, name: str) -> list[str]:
        """Ids of the ready instances of the function's current version."""
        info = self.describe(name)
        return [
            i["id"]
            for i in info["instance_list"]
            if i["state"] == "ready" and i["version"] == info["version"]
        ]

    def running_containers(self, name: str) -> list[str]:
        """Names of the running containers serving ``name`` (podman's view)."""
        return self.plat.instances_of(name, "status=running")

    def wait_ready(
        self, name: str, count: int, *, without: tuple[str, ...] = (), timeout: float = 30.0
    ) -> float:
        """Seconds until ``count`` instances of ``name`` are ready, none of them ``without``;
        raises AssertionError (with what describe shows) past ``timeout``."""
        started = time.monotonic()
        ready: list[str] = []
        while time.monotonic() - started < timeout:
            try:
                ready = self.ready_ids(name)
            except PlatError:
                ready = []
            if len(ready) >= count and not set(ready) & set(without):
                return time.monotonic() - started
            time.sleep(0.02)
        raise AssertionError(
            f"{name}: {count} ready instance(s) (not {list(without)}) wanted within "
            f"{timeout:.0f} s; ready: {ready}\n{json.dumps(self.describe(name)['instance_list'])}"
        )

    def wait_serving(self, name: str, timeout: float) -> float:
        """Seconds until a GET of the function answers 200 (polled every 20 ms)."""
        started = time.monotonic()
        last = None
        while time.monotonic() - started < timeout:
            last = self.plat.http("GET", f"/function/{name}", timeout=timeout)
            if last.status == 200:
                return time.monotonic() - started
            time.sleep(0.02)
        detail = f"{last.status} {last.body[:200]!r}" if last else "nothing"
        raise AssertionError(f"{name} did not answer 200 within {timeout:.1f} s (last: {detail})")

    # --- load

    def load(
        self, name: str, *, clients: int, seconds: float, paths: tuple[str, ...] = ("",)
    ) -> Background:
        """A :class:`Background` load on ``name`` (enter it to start)."""
        return Background(
            self.url(name),
            clients=clients,
            seconds=seconds,
            paths=paths,
            headers=self.auth(),
            timeout=CLIENT_TIMEOUT,
        )

    # --- the checks every scenario ends with

    def engine_services(self) -> list[int]:
        """Pids of the ``podman system service`` processes on this daemon's home's socket."""
        sock = str(self.plat.home / "run" / "podman.sock")
        out = subprocess.run(
            ["pgrep", "-f", f"system service.*{sock}"], capture_output=True, text=True
        )
        return [int(pid) for pid in out.stdout.split()]

    def assert_admission_settled(self, name: str, timeout: float = 10.0) -> None:
        """Once load has stopped: admission holds nothing and its invariant holds.

        Waits up to ``timeout`` for calls still finishing, then checks what
        ``plat describe NAME --json`` prints (through the real CLI).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            admission = self.describe(name).get("admission")
            if admission is None or _settled(admission):
                break
            time.sleep(0.1)
        described = json.loads(self.plat.run("describe", name, "--json").stdout)
        assert "admission" in described, (
            f"`plat describe {name} --json` has no `admission` object "
            "({inflight, held, waiting, ok}): the admission invariant cannot be checked"
        )
        admission = described["admission"]
        assert _settled(admission), (
            f"{name}: admission not back to rest {timeout:.0f} s after the load stopped: "
            f"{admission} (want ok, inflight == held == waiting == 0)"
        )

    def assert_no_orphans(self, within: float = 10.0) -> None:
        """Every container labelled with this daemon belongs to an instance it knows:
        an instance of a function (``plat describe``) or a pre-warmed pool instance
        (no more of those than the pool reports ready or starting). A container left
        by a clean-up that failed during an outage must be gone ``within`` seconds
        (the watchdog retries every 2 s)."""
        deadline = time.monotonic() + within
        while (problem := self._orphans()) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not problem, problem

    def _orphans(self) -> str:
        known = {
            f"plat-{fn['name']}-{inst['id']}"
            for fn in self.api("/v1/functions")
            for inst in self.describe(fn["name"])["instance_list"]
        }
        pools = (self.api("/v1/status").get("pool") or {}).get("pools") or []
        pooled_max = sum(p["ready"] + p["starting"] for p in pools)
        containers = self.plat.containers()
        pooled = [c for c in containers if c.startswith("plat-pool-")]
        unknown = [c for c in containers if c not in known and c not in pooled]
        if unknown:
            return f"containers of this daemon no instance accounts for: {unknown}"
        if len(pooled) > pooled_max:
            return (
                f"{len(pooled)} pool containers but the pool reports {pooled_max} "
                f"ready or starting: {pooled} ({pools})"
            )
        return ""


def _settled(admission: dict[str, Any]) -> bool:
    return bool(admission.get("ok")) and (
        admission.get("inflight") == admission.get("held") == admission.get("waiting") == 0
    )


def deployed(
    factory: pytest.TempPathFactory, label: str, functions: dict[str, str]
) -> Iterator[Chaos]:
    """A chaos daemon in a new temporary folder with ``functions`` (name: manifest
    lines) deployed; for module fixtures (``yield from deployed(...)``)."""
    with chaos_session(factory.mktemp(label)) as chaos:
        for name, manifest in functions.items():
            chaos.deploy(name, manifest)
        yield chaos


@contextmanager
def chaos_session(tmp: Path, env: dict[str, str] | None = None) -> Iterator[Chaos]:
    """A daemon started in ``tmp`` with :data:`CHAOS_ENV` (and ``env``), stopped after;
    the session fails if stopping it leaves containers behind."""
    runner = make_runner(tmp)
    runner.env.update(CHAOS_ENV)
    runner.env.update(env or {})
    with daemon_session(runner) as plat:
        yield Chaos(plat, tmp / "src")


# --- faults


def kill_container(name: str) -> None:
    """SIGKILL an instance's process tree, as the kernel's OOM killer would."""
    subprocess.run(["podman", "kill", "--signal", "KILL", name], capture_output=True, check=True)


def kill_random_instance(chaos: Chaos, name: str, rng: random.Random) -> str:
    """SIGKILL one running instance of ``name``, chosen at random; returns its id.

    One that stops between the listing and the kill (the autoscaler scaling the
    function in) is no victim: another is chosen."""
    for _ in range(5):
        victims = chaos.running_containers(name)
        assert victims, f"{name} has no running instance to kill"
        victim = rng.choice(sorted(victims))
        try:
            kill_container(victim)
        except subprocess.CalledProcessError:
            if victim in chaos.running_containers(name):
                raise
            continue
        return victim.rsplit("-", 1)[1]
    raise AssertionError(f"every instance of {name} chosen stopped before it was killed")


def sigkill(pid: int, timeout: float = 10.0) -> None:
    """SIGKILL ``pid`` and wait until it is gone (or a zombie)."""
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not alive(pid), timeout, f"pid {pid} still alive after SIGKILL")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_until(predicate: Callable[[], bool], timeout: float, message: str) -> float:
    """Seconds until ``predicate()`` holds (polled every 20 ms); AssertionError past timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"{message} (waited {timeout:.0f} s)")


def wait_calls(load: Background, count: int, timeout: float = 10.0) -> None:
    """Wait until ``count`` more calls of ``load`` have succeeded."""
    target = load.result.succeeded + count
    wait_until(lambda: load.result.succeeded >= target, timeout, f"not {count} calls succeeded")


def assert_only_json_errors(result: LoadResult, allowed: tuple[int, ...] = (502, 503, 504)) -> None:
    """Every request got an HTTP answer; each failure is a JSON error with an allowed status."""
    assert not result.unanswered, "requests got no HTTP answer: " + result.summary()
    bad = [o for o in result.failed if o.status not in allowed or not o.json_error]
    assert not bad, (
        f"answers other than JSON {allowed}: "
        + "; ".join(o.describe() for o in bad[:10])
        + " -- "
        + result.summary()
    )
