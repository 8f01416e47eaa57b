"""nginx as a private reverse proxy: the baseline plat's gateway is weighed against.

Each :class:`Nginx` is a private nginx process with its configuration, pid file,
logs and temp paths in a folder of its own.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from benchmarks.context import BenchError
from benchmarks.net import free_port, http_get
from benchmarks.procfs import child_pids, cpu_seconds

NGINX_CONF = """\
daemon off;
master_process on;
worker_processes auto;
worker_rlimit_nofile 20000;
pid {d}/nginx.pid;
error_log {d}/error.log warn;

events {{
    worker_connections 8192;
}}

http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;

    upstream instance {{
{servers}
        keepalive 64;
        keepalive_requests 1000000;
    }}

    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://instance;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


@dataclass
class Nginx:
    """nginx reverse-proxying ``upstream`` (host:port, or several balanced round-robin)
    on a free 127.0.0.1 port.

    A context manager: entering writes the configuration under ``root`` and starts
    nginx in the foreground (``daemon off``) as a child process, returning once it
    answers; leaving stops it (SIGQUIT, then SIGKILL of the master after 10 s).
    """

    root: Path
    upstream: str | Sequence[str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def cpu_seconds(self) -> float:
        """CPU time the master and its workers have used so far."""
        assert self.proc is not None
        pids = [self.proc.pid, *child_pids(self.proc.pid)]
        return sum(cpu_seconds(pid) for pid in pids)

    def __enter__(self) -> Nginx:
        if shutil.which("nginx") is None:
            raise BenchError(
                "nginx is not installed: apt-get install -y --no-install-recommends nginx"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        # Workers run as nobody when nginx starts as root: they must reach their temp paths.
        os.chmod(self.root, 0o755)
        conf = self.root / "nginx.conf"
        upstreams = [self.upstream] if isinstance(self.upstream, str) else self.upstream
        servers = "".join(f"        server {address};\n" for address in upstreams)
        conf.write_text(NGINX_CONF.format(d=self.root, servers=servers, port=self.port))
        with open(self.root / "stderr.log", "wb") as log:
            self.proc = subprocess.Popen(
                [
                    "nginx",
                    "-p",
                    str(self.root),
                    "-c",
                    str(conf),
                    "-e",
                    str(self.root / "error.log"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(
                    "nginx exited: " + (self.root / "stderr.log").read_text(errors="replace")
                )
            if http_get(self.url, timeout=1.0) == 200:
                return self
            time.sleep(0.05)
        self.__exit__(None, None, None)
        raise BenchError(f"nginx did not answer on {self.url} within 10 s")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGQUIT)  # graceful: workers finish, master exits
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
