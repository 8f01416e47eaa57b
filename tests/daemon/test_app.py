"""plat.daemon.app: the daemon as a real process, under a flood of connections that
never finish their requests, with a low open-file limit."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from plat.client import DaemonClient
from plat.errors import PlatError
from plat.paths import Home
from tests.fixtures import free_port

FD_LIMIT = 512
ATTACKERS = 600


def limited() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


@pytest.fixture
def low_fd_daemon(tmp_path: Path) -> Iterator[tuple[Home, int]]:
    """``plat daemon run`` (process backend, no pool) with at most FD_LIMIT open files."""
    home = tmp_path / "home"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLAT_")}
    env.update(
        PLAT_HOME=str(home),
        PLAT_GATEWAY_PORT=str(port),
        PLAT_POOL_SIZE="0",
        PLAT_BODY_TIMEOUT="2s",
    )
    output = tmp_path / "daemon.out"
    with output.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "plat", "daemon", "run", "--backend", "process"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=limited,
        )
    try:
        deadline = time.monotonic() + 60
        while "plat daemon ready" not in output.read_text():
            assert proc.poll() is None, output.read_text()
            assert time.monotonic() < deadline, "the daemon did not start"
            time.sleep(0.1)
        yield Home(home), port
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def healthz(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as res:
        return int(res.status)


def test_slow_bodies_neither_exhaust_the_gateway_nor_the_control_socket(
    low_fd_daemon: tuple[Home, int],
) -> None:
    home, port = low_fd_daemon
    assert healthz(port) == 200
    attackers: list[socket.socket] = []
    try:
        for _ in range(ATTACKERS):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            attackers.append(sock)
            with contextlib.suppress(OSError):  # closed at once at the connection cap
                # the head, and never the body it announces
                sock.sendall(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        time.sleep(0.5)
        try:
            status = DaemonClient(home, timeout=5).request("GET", "/v1/status")
        except PlatError as exc:
            pytest.fail(f"the control socket did not answer under the flood: {exc}")
        assert status["gateway_url"].endswith(f":{port}")
        deadline = time.monotonic() + 15
        while True:  # the slow bodies reach their deadline, and the gateway serves again
            try:
                if healthz(port) == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the gateway did not recover"
            time.sleep(0.2)
        timed_out = 0
        for sock in attackers:
            sock.settimeout(0.5)
            with contextlib.suppress(OSError):
                timed_out += sock.recv(64).startswith(b"HTTP/1.1 408 ")
        assert timed_out > 0
    finally:
        for sock in attackers:
            sock.close()
