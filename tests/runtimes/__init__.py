"""Helpers for tests that run a runtime shim (or any HTTP server) as a subprocess."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO, Any

from plat.runtimes import runtimes_root

PYTHON_SHIM = runtimes_root() / "python" / "shim" / "plat_shim.py"
NODE_SHIM = runtimes_root() / "node" / "shim" / "plat-shim.cjs"

# The tag a shim puts before each line a call writes, as plat's log collector reads it:
# the call id, and the trace id when the call came with a valid traceparent.
CALL_TAG = re.compile(r"\[call:([A-Za-z0-9._-]{1,128})(?: trace:([0-9a-f]{32}))?\] ?")


def split_call_tag(line: str) -> tuple[str | None, str]:
    """(call id or None, the line without its tag)."""
    call_id, _, text = split_tag(line)
    return call_id, text


def split_tag(line: str) -> tuple[str | None, str | None, str]:
    """(call id or None, trace id or None, the line without its tag)."""
    match = CALL_TAG.match(line)
    if match is None:
        return None, None, line
    return match.group(1), match.group(2), line[match.end() :]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


class ServerProcess:
    """A server started as a subprocess on a free loopback port; output goes to files."""

    def __init__(
        self, argv: list[str], cwd: Path, logs: Path, env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        logs.mkdir(parents=True, exist_ok=True)
        self.stdout_path = logs / "stdout.log"
        self.stderr_path = logs / "stderr.log"
        full_env = dict(os.environ)
        full_env.update({"PORT": str(self.port), "PLAT_HOST": "127.0.0.1"})
        full_env.update(env or {})
        self._out: IO[bytes] = self.stdout_path.open("wb")
        self._err: IO[bytes] = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=full_env, stdout=self._out, stderr=self._err
        )

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"server exited with {self.proc.returncode}\nstderr:\n{self.stderr}"
                )
            if port_open(self.port):
                return
            time.sleep(0.02)
        raise AssertionError(f"server not listening after {timeout} s\nstderr:\n{self.stderr}")

    def wait_output(self, text: str, *, stream: str = "stdout", timeout: float = 5.0) -> str:
        """Wait until ``text`` appears in stdout/stderr; returns that stream's content."""
        deadline = time.monotonic() + timeout
        while True:
            content = self.stdout if stream == "stdout" else self.stderr
            if text in content or time.monotonic() >= deadline:
                return content
            time.sleep(0.02)

    def wait_lines(
        self, text: str, count: int, *, stream: str = "stdout", timeout: float = 5.0
    ) -> list[str]:
        """Wait until ``count`` lines contain ``text``; returns all lines of that stream."""
        deadline = time.monotonic() + timeout
        while True:
            lines = (self.stdout if stream == "stdout" else self.stderr).splitlines()
            if sum(text in line for line in lines) >= count or time.monotonic() >= deadline:
                return lines
            time.sleep(0.02)

    def wait_exit(self, timeout: float = 10.0) -> int:
        return self.proc.wait(timeout=timeout)

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        conn = self.connection()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
        finally:
            conn.close()

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self._out.close()
        self._err.close()
