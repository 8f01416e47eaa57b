"""`plat daemon ...` lifecycle against a real daemon, Podman and Buildah."""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

import pytest

from tests.fixtures import PlatRunner, free_port, wait_for
from tests.functions import write_python_function

pytestmark = pytest.mark.container


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie of ours counts as gone.
    try:
        return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") >= 0
    except FileNotFoundError:
        return True


def test_start_status_stop_and_private_files(fresh_plat: PlatRunner) -> None:
    plat = fresh_plat
    assert plat.run("daemon", "status", check=False).returncode == 1
    plat.run("daemon", "start")
    status = json.loads(plat.run("daemon", "status", "--json").stdout)
    assert status["running"] is True
    assert status["gateway_url"] == plat.gateway
    assert status["backend"] == "container"
    assert status["engine"]["endpoint"].startswith("unix://")
    assert status["pid"] == plat.daemon_pid()
    text = plat.run("daemon", "status").stdout
    for word in ("pid", "uptime", "gateway", "backend", "engine"):
        assert word in text
    for path in (plat.home / "run" / "plat.sock", plat.home / "credentials"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert len(plat.run("auth", "password").stdout.strip()) >= 16
    assert plat.http("GET", "/healthz", auth=False).status == 200
    ready = plat.http("GET", "/readyz", auth=False)
    assert ready.status == 200
    assert ready.json() == {"status": "ready", "checks": {"store": "ok", "engine": "ok"}}

    second = plat.run("daemon", "run", check=False, timeout=30)
    assert second.returncode == 1
    assert "already running" in second.stderr
    assert "Traceback" not in second.stderr

    pid = plat.daemon_pid()
    assert pid is not None
    plat.run("daemon", "stop")
    assert wait_for(lambda: _gone(pid), timeout=10)
    assert not (plat.home / "run" / "plat.sock").exists()
    assert plat.daemon_pid() is None


def test_stale_pid_file_and_port_flag(fresh_plat: PlatRunner) -> None:
    plat = fresh_plat
    (plat.home / "run").mkdir(parents=True)
    (plat.home / "run" / "plat.pid").write_text("999999\n")
    port = free_port()
    plat.run("daemon", "start", "--port", str(port))
    status = json.loads(plat.run("daemon", "status", "--json").stdout)
    assert status["gateway_url"] == f"http://127.0.0.1:{port}"
    assert status["pid"] != 999999


def test_sigterm_stops_instances(fresh_plat: PlatRunner, tmp_path: Path) -> None:
    plat = fresh_plat
    folder = write_python_function(tmp_path, "term", "def handle(e, c):\n    return 'ok'\n")
    plat.run("deploy", str(folder))  # starts the daemon on first need
    assert len(plat.containers("label=plat.function=term")) == 1
    pid = plat.daemon_pid()
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    assert wait_for(lambda: _gone(pid), timeout=30)
    assert plat.containers() == []


def test_sigkill_then_restart_adopts_instances_and_leaves_no_orphans(
    fresh_plat: PlatRunner, tmp_path: Path
) -> None:
    plat = fresh_plat
    one = write_python_function(tmp_path, "one", "def handle(e, c):\n    return 'one'\n")
    two = write_python_function(tmp_path, "two", "def handle(e, c):\n    return 'two'\n")
    plat.run("deploy", str(one))
    plat.run("deploy", str(two))
    before = set(plat.instances_of("one") + plat.instances_of("two"))
    assert len(before) == 2
    pid = plat.daemon_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: _gone(pid), timeout=10)
    # The instances outlive the daemon; one of them dies meanwhile.
    victim = next(iter(sorted(before)))
    os.system(f"podman stop -t 0 {victim} >/dev/null 2>&1")

    plat.run("daemon", "start")
    assert plat.run("invoke", "one").stdout.strip() == "one"
    assert plat.run("invoke", "two").stdout.strip() == "two"
    names = json.loads(plat.run("ls", "--json").stdout)
    assert {f["name"] for f in names} == {"one", "two"}
    pool = int(json.loads(plat.run("daemon", "status", "--json").stdout)["pool"]["size"])

    def instances() -> set[str]:
        return set(plat.instances_of("one") + plat.instances_of("two"))

    assert wait_for(lambda: len(instances()) == 2, timeout=30)
    after = instances()
    # Nothing orphaned (the previous daemon's pool instances included), the dead one replaced.
    assert wait_for(lambda: len(plat.containers()) == 2 + pool, timeout=30), plat.containers()
    assert victim not in after
    assert (before - {victim}) <= after  # the live one was adopted, not restarted
