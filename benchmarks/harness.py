"""Shared machinery of the benchmarks: a plat daemon, wrk, nginx, machine facts.

Everything a benchmark starts is its own and is cleaned up by it: each
:class:`Plat` has a temporary ``PLAT_HOME`` and a free gateway port (never the
defaults), removes the functions it deployed, stops its daemon and deletes the
images it built; each :class:`Nginx` is a private nginx process with its
configuration, pid file, logs and temp paths in a temporary folder.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"

Log = Callable[[str], None]


class BenchError(Exception):
    """A benchmark could not run; the message says what failed."""


@dataclass
class Context:
    """What every benchmark gets: the mode, a private work folder and a progress log."""

    quick: bool
    work: Path
    run_id: str
    log: Log
    functions: int | None = None  # the scale benchmark's N, when not the mode's default

    def pick(self, quick: Any, full: Any) -> Any:
        """``quick`` in quick mode, else ``full``."""
        return quick if self.quick else full


# ---------------------------------------------------------------------------
# processes and small helpers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(
    cmd: list[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
    check: bool = True,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` capturing text output; raises BenchError (with the output) on failure."""
    try:
        proc = subprocess.run(
            cmd,
            env=None if env is None else dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"`{' '.join(cmd)}` did not finish within {timeout:.0f} s") from exc
    except FileNotFoundError as exc:
        raise BenchError(f"`{cmd[0]}` is not installed") from exc
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise BenchError(f"`{' '.join(cmd)}` exited {proc.returncode}:\n{tail}")
    return proc


def timed(cmd: list[str], **kwargs: Any) -> tuple[float, subprocess.CompletedProcess[str]]:
    """(wall seconds, completed process) of :func:`run`."""
    started = time.perf_counter()
    proc = run(cmd, **kwargs)
    return time.perf_counter() - started, proc


def median(values: Iterable[float]) -> float:
    items = list(values)
    return statistics.median(items) if items else float("nan")


def http_get(url: str, headers: Mapping[str, str] | None = None, timeout: float = 5.0) -> int:
    """The status of one GET (0 when nothing answered)."""
    req = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return 0


def wait_http_ok(url: str, timeout: float, interval: float = 0.01) -> float:
    """Poll ``url`` every ``interval`` s until it answers 200; returns the seconds waited."""
    started = time.perf_counter()
    deadline = started + timeout
    while time.perf_counter() < deadline:
        if http_get(url, timeout=1.0) == 200:
            return time.perf_counter() - started
        time.sleep(interval)
    raise BenchError(f"{url} did not answer 200 within {timeout:.0f} s")


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` (VmRSS in /proc/<pid>/status) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time ``pid`` has used so far (/proc/<pid>/stat)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): utime and stime are fields 14 and 15.
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_percent(pid: int, seconds: float) -> float:
    """Share of one core ``pid`` used over the next ``seconds`` (100 = one core busy)."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return 100 * (cpu_seconds(pid) - before) / seconds


def mem_available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def write_python_function(
    root: Path,
    name: str,
    handler: str,
    *,
    manifest_extra: str = "",
    requirements: str | None = None,
) -> Path:
    """A python function folder ``root/name`` (plat.yaml, handler.py, requirements.txt)."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plat.yaml").write_text(
        f"name: {name}\nruntime: python\nhandler: handler.handle\n"
        + textwrap.dedent(manifest_extra)
    )
    (folder / "handler.py").write_text(textwrap.dedent(handler).lstrip())
    if requirements is not None:
        (folder / "requirements.txt").write_text(requirements)
    return folder


# ---------------------------------------------------------------------------
# a plat daemon in a temporary home


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
        while _alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(self.pid):
            self.log(f"plat daemon stop failed ({proc.stderr.strip()[-200:]}); killing {self.pid}")
            self.log("daemon.log ends with:\n" + self.log_tail())
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
        # A daemon that was killed leaves the engine service it started behind.
        if self.engine_pid is not None and _alive(self.engine_pid):
            time.sleep(2)
            if _alive(self.engine_pid) and _is_engine_service(self.engine_pid):
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
        listing = run(
            ["podman", "images", "--format", "{{.Repository}}:{{.Tag}}"], check=False
        ).stdout.split()
        refs = [ref for ref in listing if ref.rpartition(":")[0] in wanted]
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

        Reads go straight to the unix socket rather than through the CLI, whose
        start-up (about a second) would otherwise dominate short runs.
        """
        conn = _UnixHTTPConnection(str(self.home / "run" / "plat.sock"), timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
        except OSError as exc:
            raise BenchError(f"the daemon's control API did not answer GET {path}: {exc}") from exc
        finally:
            conn.close()
        if resp.status != 200:
            raise BenchError(f"GET {path} on the control API: {resp.status} {body[:300]!r}")
        return json.loads(body)

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


def child_pids(pid: int) -> list[int]:
    """The direct children of ``pid`` (from /proc/<pid>/task/*/children)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(x) for x in (task / "children").read_text().split()]
    return found


def engine_service_pid(daemon_pid: int) -> int | None:
    """The ``podman system service`` the daemon started as its child, if it did."""
    return next((c for c in child_pids(daemon_pid) if _is_engine_service(c)), None)


def _is_engine_service(pid: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"system" in argv and b"service" in argv


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("plat", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


# ---------------------------------------------------------------------------
# wrk


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run measured (latencies in ms)."""

    connections: int
    threads: int
    seconds: float
    requests: int
    rps: float
    p50: float
    p90: float
    p99: float
    errors: int  # socket errors (connect/read/write/timeout) + non-2xx/3xx responses


_LATENCY_RE = re.compile(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_REQUESTS_RE = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", re.MULTILINE)
_RPS_RE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_SOCKET_RE = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.MULTILINE
)
_NON2XX_RE = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_TO_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def parse_wrk(text: str, connections: int, threads: int) -> WrkResult:
    """Parse the output of ``wrk --latency``; raises BenchError when it is not there."""
    latencies = {int(p): float(v) * _TO_MS[u] for p, v, u in _LATENCY_RE.findall(text)}
    requests = _REQUESTS_RE.search(text)
    rps = _RPS_RE.search(text)
    if not requests or not rps or not {50, 90, 99} <= latencies.keys():
        raise BenchError(f"could not parse wrk's output:\n{text}")
    errors = sum(int(n) for m in _SOCKET_RE.findall(text) for n in m)
    non2xx = _NON2XX_RE.search(text)
    if non2xx:
        errors += int(non2xx.group(1))
    return WrkResult(
        connections=connections,
        threads=threads,
        seconds=float(requests.group(2)) * _TO_MS[requests.group(3)] / 1000,
        requests=int(requests.group(1)),
        rps=float(rps.group(1)),
        p50=latencies[50],
        p90=latencies[90],
        p99=latencies[99],
        errors=errors,
    )


def wrk(
    url: str,
    *,
    connections: int,
    seconds: int,
    threads: int | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: int = 10,
) -> WrkResult:
    """One ``wrk --latency`` run (whole seconds: wrk takes no fractions)."""
    threads = threads or max(1, min(connections, 2))
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, seconds)}s", "--latency"]
    cmd.append(f"--timeout={timeout}s")
    for key, value in (headers or {}).items():
        cmd += ["-H", f"{key}: {value}"]
    cmd.append(url)
    proc = run(cmd, timeout=seconds + timeout + 60)
    result = parse_wrk(proc.stdout, connections, threads)
    if result.requests == 0:
        raise BenchError(f"wrk got no answers from {url}:\n{proc.stdout}")
    return result


def require_success(label: str, result: WrkResult, max_share: float = 0.01) -> None:
    """Raise BenchError when more than ``max_share`` of a run's answers were errors.

    A run whose answers are mostly errors (429s from admission control, 502s, resets)
    measures the error path, not the proxy: its figures must not be reported.
    """
    if result.errors > max_share * max(1, result.requests):
        raise BenchError(
            f"{label} at c={result.connections}: {result.errors} of {result.requests} "
            "answers were socket errors or non-2xx responses"
        )


# ---------------------------------------------------------------------------
# nginx as a private process


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
        server {upstream};
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
    """nginx reverse-proxying ``upstream`` (host:port) on a free 127.0.0.1 port.

    A context manager: entering writes the configuration under ``root`` and starts
    nginx in the foreground (``daemon off``) as a child process, returning once it
    answers; leaving stops it (SIGQUIT, then SIGKILL of the master after 10 s).
    """

    root: Path
    upstream: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def __enter__(self) -> Nginx:
        if shutil.which("nginx") is None:
            raise BenchError(
                "nginx is not installed: apt-get install -y --no-install-recommends nginx"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        # Workers run as nobody when nginx starts as root: they must reach their temp paths.
        os.chmod(self.root, 0o755)
        conf = self.root / "nginx.conf"
        conf.write_text(NGINX_CONF.format(d=self.root, upstream=self.upstream, port=self.port))
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


# ---------------------------------------------------------------------------
# machine and versions


def _first_line(cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    text = (proc.stdout or proc.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def _last_word(line: str) -> str:
    return line.split()[-1] if line.split() else line


def machine() -> list[tuple[str, str]]:
    """Cores, memory, kernel, OS and load: the facts a reader needs to weigh the numbers."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    os_name = platform.system()
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.partition("=")[2].strip('"')
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        ("cores", f"{os.cpu_count()} ({model})"),
        ("memory", f"{mem_kib / 1024**2:.1f} GiB"),
        ("kernel", platform.release()),
        ("OS", os_name),
        ("load average at start (1, 5, 15 min)", load),
    ]


def plat_version() -> str:
    import plat

    version = str(plat.__version__)
    git = shutil.which("git")
    if git is None:
        return version
    head = run([git, "-C", str(REPO), "rev-parse", "--short", "HEAD"], check=False).stdout.strip()
    if not head:
        return version
    dirty = run(
        [git, "-C", str(REPO), "status", "--porcelain", "--", "plat", "runtimes"], check=False
    ).stdout.strip()
    return f"{version} (git {head}{', with uncommitted changes' if dirty else ''})"


def versions() -> list[tuple[str, str]]:
    """Versions of plat and of every tool the benchmarks use."""
    import aiohttp

    nginx = _first_line(["nginx", "-v"])
    wrk_line = _first_line(["wrk", "-v"])
    wrk_version = wrk_line.split()[1] if wrk_line.startswith("wrk ") else wrk_line
    buildah = _first_line(["buildah", "--version"]).split()
    return [
        ("plat", plat_version()),
        ("Python", platform.python_version()),
        ("aiohttp (gateway)", aiohttp.__version__),
        ("Podman", _last_word(_first_line(["podman", "--version"]))),
        ("Buildah", buildah[2] if len(buildah) > 2 else " ".join(buildah)),
        ("runc", _last_word(_first_line(["runc", "--version"]))),
        ("wrk", wrk_version),
        ("nginx", nginx.rpartition("/")[2] if "/" in nginx else nginx),
    ]


def check_tools(names: Iterable[str]) -> None:
    """Raise BenchError naming the install command when a tool is missing."""
    packages = {"wrk": "wrk", "nginx": "nginx", "podman": "podman", "buildah": "buildah"}
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        pkgs = " ".join(packages.get(m, m) for m in missing)
        raise BenchError(
            f"missing tools: {', '.join(missing)}; install them with "
            f"`apt-get install -y --no-install-recommends {pkgs}` (scripts/setup.sh does)"
        )
