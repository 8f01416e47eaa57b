"""Fixtures that run a real plat daemon (real Podman and Buildah) in a temporary home.

Every daemon gets its own PLAT_HOME and a free gateway port, so runs never collide.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class HttpResult:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


@dataclass
class PlatRunner:
    """Runs the real `plat` CLI as a subprocess against one PLAT_HOME."""

    home: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)

    def run(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "plat", *args],
            env=self.env,
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"plat {' '.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def password(self) -> str:
        return (self.home / "credentials").read_text().strip().partition(":")[2]

    def http(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
        timeout: float = 60,
    ) -> HttpResult:
        headers = dict(headers or {})
        if auth:
            token = base64.b64encode(f"admin:{self.password()}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        req = urllib.request.Request(self.gateway + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return HttpResult(resp.status, dict(resp.headers), resp.read())
        except urllib.error.HTTPError as exc:
            return HttpResult(exc.code, dict(exc.headers), exc.read())

    def daemon_pid(self) -> int | None:
        try:
            return int((self.home / "run" / "plat.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def daemon_id(self) -> str:
        return (self.home / "daemon-id").read_text().strip()

    def containers(self, *filters: str) -> list[str]:
        """Names of this daemon's containers (all states), via the real podman CLI."""
        cmd = ["podman", "ps", "-a", "--format", "{{.Names}}"]
        cmd += ["--filter", f"label=plat.daemon={self.daemon_id()}"]
        for item in filters:
            cmd += ["--filter", item]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        return [line for line in out.splitlines() if line.strip()]

    def instances_of(self, function: str, *filters: str) -> list[str]:
        """Containers serving ``function``: started for it, or pool instances specialised
        as it (those keep the pool's labels but are renamed ``plat-<function>-<id>``)."""
        return self.containers(f"name=^plat-{function}-[0-9a-f]{{8}}$", *filters)


def make_runner(tmp: Path) -> PlatRunner:
    home = tmp / "home"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLAT_")}
    env.update({"PLAT_HOME": str(home), "PLAT_GATEWAY_PORT": str(port), "NO_COLOR": "1"})
    env["COLUMNS"] = "200"
    return PlatRunner(home=home, port=port, env=env)


def stop_daemon(plat: PlatRunner) -> None:
    if plat.daemon_pid() is None:
        return
    proc = plat.run("daemon", "stop", check=False, timeout=60)
    pid = plat.daemon_pid()
    if proc.returncode != 0 and pid:
        os.kill(pid, signal.SIGKILL)


@contextmanager
def daemon_session(runner: PlatRunner) -> Iterator[PlatRunner]:
    """A started daemon, stopped afterwards however the block ends; fails on leftovers."""
    try:
        runner.run("daemon", "start")
        yield runner
    finally:
        stop_daemon(runner)
        leftovers = runner.containers() if (runner.home / "daemon-id").exists() else []
        if leftovers:
            subprocess.run(["podman", "rm", "-f", *leftovers], capture_output=True)
            pytest.fail(f"the daemon left containers behind: {leftovers}")


@pytest.fixture(scope="module")
def plat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatRunner]:
    """A started daemon shared by one test module; stopped (and checked clean) after it."""
    with daemon_session(make_runner(tmp_path_factory.mktemp("plat"))) as runner:
        yield runner


@pytest.fixture
def fresh_plat(tmp_path: Path) -> Iterator[PlatRunner]:
    """A PLAT_HOME and port with no daemon started yet (the test starts it)."""
    runner = make_runner(tmp_path)
    yield runner
    stop_daemon(runner)
    if (runner.home / "daemon-id").exists():
        leftovers = runner.containers()
        if leftovers:
            subprocess.run(["podman", "rm", "-f", *leftovers], capture_output=True)


def copy_example(name: str, dest: Path) -> Path:
    target = dest / name
    shutil.copytree(EXAMPLES / name, target)
    return target


def wait_for(predicate: object, timeout: float = 30.0, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(interval)
    return False
