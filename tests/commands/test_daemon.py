"""`plat daemon ...` lifecycle against a real daemon, Podman and Buildah."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from plat.engine import find_engine
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


def _daemons_of(home: Path) -> list[int]:
    """Pids of `plat daemon run` processes whose PLAT_HOME is ``home`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        mine = f"PLAT_HOME={home}".encode() in environ
        if mine and b"daemon" in cmdline and b"run" in cmdline and not _gone(int(entry.name)):
            found.append(int(entry.name))
    return found


def test_concurrent_commands_share_one_daemon_start(fresh_plat: PlatRunner) -> None:
    plat = fresh_plat
    env = {**plat.env, "PLAT_BACKEND": "process", "PLAT_POOL_SIZE": "0"}
    commands = [("ls",), ("auth", "password"), ("ls", "--json"), ("daemon", "start")] * 2
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "plat", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in commands
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    failed = [
        (args, p.returncode, *out)
        for args, p, out in zip(commands, procs, outputs, strict=True)
        if p.returncode
    ]
    assert not failed, failed
    assert len(_daemons_of(plat.home)) == 1
    log = (plat.home / "daemon.log").read_text()
    assert log.count("plat daemon ready") == 2  # the log line and the printed line, once each
    assert "already running" not in log


def test_stop_kills_a_stuck_daemon_and_removes_its_containers(
    fresh_plat: PlatRunner, tmp_path: Path
) -> None:
    plat = fresh_plat
    folder = write_python_function(tmp_path, "stuck", "def handle(e, c):\n    return 'ok'\n")
    plat.run("deploy", str(folder))
    assert len(plat.instances_of("stuck")) == 1
    pid = plat.daemon_pid()
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # a shutdown that never finishes
    try:
        stopped = plat.run("daemon", "stop", "--timeout", "3", timeout=120)
    finally:
        if not _gone(pid):
            os.kill(pid, signal.SIGKILL)
    assert _gone(pid)
    assert plat.containers() == []
    assert f"(pid {pid}) did not stop within 3 s: killed it" in stopped.stdout
    assert "removed" in stopped.stdout and "plat-stuck-" in stopped.stdout
    assert plat.daemon_pid() is None
    # The home is usable again at once.
    assert plat.run("invoke", "stuck").stdout.strip() == "ok"


def test_stop_says_what_it_could_not_remove(fresh_plat: PlatRunner, tmp_path: Path) -> None:
    plat = fresh_plat
    folder = write_python_function(tmp_path, "left", "def handle(e, c):\n    return 'ok'\n")
    plat.run("deploy", str(folder))
    pid = plat.daemon_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # its containers outlive it
    assert wait_for(lambda: _gone(pid), timeout=10)
    # No engine reachable: a bogus recorded endpoint, none to discover, no podman.
    if find_engine({}) is not None:
        pytest.skip("a system-wide container engine answers on a well-known socket")
    (plat.home / "run" / "engine").write_text("unix:///nonexistent/engine.sock\n")
    env = {**plat.env, "PATH": "/nonexistent", "CONTAINER_HOST": "unix:///nonexistent/c.sock"}
    proc = subprocess.run(
        [sys.executable, "-m", "plat", "daemon", "stop"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "still there" in proc.stderr
    assert f"label=plat.daemon={plat.daemon_id()}" in proc.stderr  # the fix, to copy
    assert "Traceback" not in proc.stderr
    assert plat.containers() != []
    # With the engine back, a stop removes them (no daemon runs any more).
    plat.run("daemon", "stop")
    assert plat.containers() == []


def _status(plat: PlatRunner) -> dict[str, object]:
    return json.loads(plat.run("daemon", "status", "--json").stdout)  # type: ignore[no-any-return]


def _kill_daemon(plat: PlatRunner) -> None:
    pid = plat.daemon_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: _gone(pid), timeout=10)


def test_restart_after_a_crash_keeps_the_backend(fresh_plat: PlatRunner) -> None:
    plat = fresh_plat
    plat.run("daemon", "start", "--backend", "process")
    remembered = plat.home / "backend"
    assert remembered.read_text().strip() == "process"
    assert stat.S_IMODE(remembered.stat().st_mode) == 0o600
    _kill_daemon(plat)
    plat.run("ls")  # auto-starts the daemon
    assert _status(plat)["backend"] == "process"
    # An explicit choice overrides and is remembered in turn.
    plat.run("daemon", "stop")
    plat.run("daemon", "start", "--backend", "container")
    assert remembered.read_text().strip() == "container"
    _kill_daemon(plat)
    plat.run("auth", "password")
    assert _status(plat)["backend"] == "container"
    # `--backend auto` forgets it: the settings decide again.
    plat.run("daemon", "stop")
    env = {**plat.env, "PLAT_BACKEND": "process"}
    subprocess.run(
        [sys.executable, "-m", "plat", "daemon", "start", "--backend", "auto"],
        env=env,
        check=True,
        capture_output=True,
    )
    assert not remembered.exists()
    _kill_daemon(plat)
    subprocess.run([sys.executable, "-m", "plat", "ls"], env=env, check=True, capture_output=True)
    assert _status(plat)["backend"] == "process"


# Follows an NDJSON stream (argv: url, token), printing each line as it arrives.
FOLLOW = """
import sys, urllib.request
req = urllib.request.Request(sys.argv[1], headers={"Authorization": "Bearer " + sys.argv[2]})
with urllib.request.urlopen(req) as resp:
    for line in resp:
        sys.stdout.write(line.decode())
        sys.stdout.flush()
"""


def test_a_stop_ends_live_log_followers_instead_of_waiting_for_them(
    fresh_plat: PlatRunner, tmp_path: Path
) -> None:
    """Followers on both doors (the socket's `plat logs -f`, the gateway's API)
    get the end of their stream; the stop does not wait out a timeout for them."""
    plat = fresh_plat
    plat.run("daemon", "start", "--backend", "process")
    talk = "def handle(e, c):\n    print('hi')\n    return 'ok'\n"
    plat.run("deploy", str(write_python_function(tmp_path, "talk", talk)))
    assert plat.http("GET", "/function/talk").status == 200
    token = plat.run("auth", "token").stdout.strip().splitlines()[-1]
    url = f"{plat.gateway}/api/v1/functions/talk/logs?follow=1"
    pipe = subprocess.PIPE
    with (
        subprocess.Popen(
            [sys.executable, "-m", "plat", "logs", "talk", "-f"],
            env=plat.env,
            stdout=pipe,
            stderr=pipe,
            text=True,
        ) as socket_follower,
        subprocess.Popen(
            [sys.executable, "-c", FOLLOW, url, token],
            stdout=pipe,
            stderr=pipe,
            text=True,
        ) as http_follower,
    ):
        assert socket_follower.stdout is not None and http_follower.stdout is not None
        try:
            # Both follow (they printed the history's first line) before the stop: a
            # `plat logs` that connected after it would start a daemon of its own.
            first = socket_follower.stdout.readline()
            http_first = http_follower.stdout.readline()
            started = time.monotonic()
            plat.run("daemon", "stop")
            took = time.monotonic() - started
            socket_follower.wait(timeout=10)
            http_follower.wait(timeout=10)
        finally:
            socket_follower.kill()
            http_follower.kill()
        # read() keeps what readline() buffered (communicate() would lose it).
        out = first + socket_follower.stdout.read()
        http_out = http_first + http_follower.stdout.read()
        assert socket_follower.stderr is not None
        err = socket_follower.stderr.read()
    assert took < 10, took  # a follower held it for 30 s (the server's shutdown timeout)
    assert "hi" in out and "Traceback" not in err
    assert '"line": "hi"' in http_out
