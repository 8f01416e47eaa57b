"""Finding a Docker-Engine-API endpoint, and serving one with Podman when none answers.

Both Docker and Podman (``podman system service``) speak the Docker Engine API,
so the container backend only needs an endpoint. Discovery order: the configured
endpoint (``PLAT_ENGINE_HOST`` / config), ``DOCKER_HOST``, ``CONTAINER_HOST``, the
usual Podman sockets, then the socket a previous plat daemon's Podman service may
have left in ``$PLAT_HOME/run``. When nothing answers and podman is installed,
:class:`PodmanService` runs ``podman system service`` as a child of the daemon for
as long as the daemon lives.

Docker's default socket comes last, and only counts when podman is not installed
(or its service cannot start): on a host with both, a dockerd that happens to run
must not silently move every daemon to Docker, whose image store lacks what
``plat runtime bootstrap`` and buildah made in Podman's. Docker is chosen by
naming it (``PLAT_ENGINE_HOST``, ``engine_host`` or ``DOCKER_HOST``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests

from plat.errors import EngineError
from plat.paths import Home
from plat.subprocesses import death_signal_hook

log = logging.getLogger(__name__)

PODMAN_ROOTFUL_SOCKET = "unix:///run/podman/podman.sock"
DOCKER_SOCKET = "unix:///var/run/docker.sock"
DOCTOR_HINT = "run `plat doctor` to see what this host is missing"

# How long a freshly started `podman system service` may take to answer.
# Measured here: ~0.1 s; the bound leaves room for a loaded CI machine.
SERVICE_START_TIMEOUT = 10.0
SERVICE_STOP_TIMEOUT = 5.0
# Only used to build the client; ping() asks unversioned paths.
PING_API_VERSION = "1.41"


@dataclass(frozen=True)
class EngineInfo:
    """An endpoint that answered ``GET /version``."""

    endpoint: str
    name: str  # "podman" or "docker"
    version: str
    api_version: str


def normalize_endpoint(value: str) -> str:
    """``/path.sock`` and ``unix:/path`` become ``unix:///path``; other schemes pass through."""
    value = value.strip()
    if value.startswith("/"):
        return f"unix://{value}"
    if value.startswith("unix:") and not value.startswith("unix://"):
        return "unix://" + "/" + value[len("unix:") :].lstrip("/")
    return value


def socket_path(endpoint: str) -> Path | None:
    """The filesystem path of a ``unix://`` endpoint, else None."""
    if endpoint.startswith("unix://"):
        return Path(endpoint[len("unix://") :])
    return None


def candidate_endpoints(
    env: Mapping[str, str], configured: str | None = None, *, docker_default: bool = True
) -> list[str]:
    """Endpoints to try, in order, deduplicated, unix sockets in ``unix:///path`` form.

    ``configured`` (from ``PLAT_ENGINE_HOST`` or the config file) comes first, then
    ``DOCKER_HOST``, ``CONTAINER_HOST``, rootful Podman, the user's Podman
    (``$XDG_RUNTIME_DIR/podman/podman.sock``) and, with ``docker_default``, Docker's
    default socket. Empty values are ignored.
    """
    raw = [
        configured,
        env.get("PLAT_ENGINE_HOST"),
        env.get("DOCKER_HOST"),
        env.get("CONTAINER_HOST"),
        PODMAN_ROOTFUL_SOCKET,
    ]
    if env.get("XDG_RUNTIME_DIR"):
        raw.append(f"{env['XDG_RUNTIME_DIR'].rstrip('/')}/podman/podman.sock")
    if docker_default:
        raw.append(DOCKER_SOCKET)
    seen: list[str] = []
    for value in raw:
        if value and value.strip():
            endpoint = normalize_endpoint(value)
            if endpoint not in seen:
                seen.append(endpoint)
    return seen


def ping(endpoint: str, timeout: float = 1.0) -> EngineInfo | None:
    """Ask ``endpoint`` who it is; None when it does not answer. Blocking.

    Uses ``GET /_ping``, whose headers name the server and its API version:
    Podman answers it in milliseconds whereas its ``/version`` takes ~0.7 s (it
    probes conmon and the OCI runtime). ``/version`` is only asked when the
    headers say nothing. A unix endpoint whose socket file does not exist or
    refuses connections is answered None at once.
    """
    path = socket_path(endpoint)
    if path is not None and not _accepts(path, timeout):
        return None
    try:
        # An explicit version stops the SDK from asking /version at construction.
        api = docker.APIClient(base_url=endpoint, timeout=timeout, version=PING_API_VERSION)
    except (docker.errors.DockerException, requests.RequestException, OSError):
        return None
    try:
        # Each response is closed so its pooled socket is released before api.close().
        with api._get(api._url("/_ping", versioned_api=False)) as response:
            if response.status_code != 200:
                return None
            info = _info_from_headers(endpoint, response.headers)
        if info is None:
            with api._get(api._url("/version", versioned_api=False)) as response:
                response.raise_for_status()
                info = _info_from_version(endpoint, response.json())
        return info
    except (docker.errors.DockerException, requests.RequestException, OSError, ValueError):
        return None
    finally:
        api.close()


def _accepts(path: Path, timeout: float) -> bool:
    """Whether a unix socket accepts connections.

    Checked before the SDK connects because the SDK leaks its socket when connect
    fails (a ResourceWarning, an error under pytest), e.g. while a just-started
    service has created its socket file but does not listen yet.
    """
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def _info_from_headers(endpoint: str, headers: Mapping[str, str]) -> EngineInfo | None:
    api_version = headers.get("Api-Version", "")
    server = headers.get("Server", "")  # "Libpod/4.3.1 (linux)" or "Docker/24.0.7 (linux)"
    if not api_version or "/" not in server:
        return None
    product, _, rest = server.partition("/")
    version = rest.split()[0] if rest.split() else ""
    if headers.get("Libpod-Api-Version") or product.lower() == "libpod":
        return EngineInfo(
            endpoint, "podman", headers.get("Libpod-Api-Version") or version, api_version
        )
    return EngineInfo(endpoint, "docker", version, api_version)


def _info_from_version(endpoint: str, data: Mapping[str, Any]) -> EngineInfo:
    components = " ".join(str(c.get("Name", "")) for c in data.get("Components") or [])
    return EngineInfo(
        endpoint=endpoint,
        name="podman" if "podman" in components.lower() else "docker",
        version=str(data.get("Version", "")),
        api_version=str(data.get("ApiVersion", "")),
    )


def find_engine(
    env: Mapping[str, str],
    configured: str | None = None,
    *,
    extra: tuple[str, ...] = (),
    timeout: float = 1.0,
    docker_default: bool = True,
) -> EngineInfo | None:
    """The first candidate endpoint (then ``extra``) that answers, or None. Blocking."""
    endpoints = candidate_endpoints(env, configured, docker_default=docker_default)
    endpoints += [e for e in map(normalize_endpoint, extra) if e not in endpoints]
    for endpoint in endpoints:
        info = ping(endpoint, timeout)
        if info is not None:
            return info
    return None


class PodmanService:
    """``podman system service --time=0 unix://<socket>``, owned by the plat daemon.

    ``start()`` spawns the service and returns once it answers (or raises
    EngineError with the tail of its log). ``stop()`` terminates only the process
    this object started; both are idempotent. The socket is mode 0600 inside the
    daemon's private run folder.
    """

    def __init__(self, socket: Path, *, log_file: Path | None = None, podman: str = "podman"):
        self.socket = socket
        self.log_file = log_file or socket.with_suffix(".log")
        self.podman = podman
        self.info: EngineInfo | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._stopped = False

    @classmethod
    def for_home(cls, home: Home) -> PodmanService:
        return cls(home.run_dir / "podman.sock", log_file=home.run_dir / "podman-service.log")

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self, timeout: float = SERVICE_START_TIMEOUT) -> EngineInfo:
        """Spawn the service and wait until it answers; idempotent while running.

        Raises EngineError when podman is missing, exits early, or stays silent
        past ``timeout`` seconds (the process is then stopped).
        """
        if self._stopped:
            raise EngineError("this podman service was stopped; create a new one")
        if self.running and self.info is not None:
            return self.info
        podman = shutil.which(self.podman)
        if podman is None:
            raise EngineError("podman is not installed", hint=DOCTOR_HINT)
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        # A socket file left by a dead service would make this one fail to bind.
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        with self.log_file.open("ab") as log:
            proc = self._proc = await asyncio.create_subprocess_exec(
                podman,
                "system",
                "service",
                "--time=0",
                self.endpoint,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                # Own session: a Ctrl-C meant for `plat daemon run` must not kill the
                # engine before the daemon has stopped its instances.
                start_new_session=True,
                # Without it a killed daemon leaves an orphan podman service behind.
                preexec_fn=death_signal_hook(signal.SIGTERM),
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is not proc:  # stop() came meanwhile, and terminated it
                raise EngineError("this podman service was stopped while it started")
            if proc.returncode is not None:
                code = proc.returncode
                self._proc = None
                raise EngineError(
                    f"`podman system service` exited with code {code}:\n{self._log_tail()}",
                    hint=DOCTOR_HINT,
                )
            info = await asyncio.to_thread(ping, self.endpoint, 1.0)
            if info is not None and self._proc is proc:
                with contextlib.suppress(OSError):
                    os.chmod(self.socket, 0o600)
                self.info = info
                return info
            if time.monotonic() >= deadline:
                tail = self._log_tail()
                await self._terminate()
                raise EngineError(
                    f"`podman system service` did not answer on {self.socket} "
                    f"within {timeout:.0f}s:\n{tail}",
                    hint=DOCTOR_HINT,
                )
            # Sleep briefly, waking at once if the service exits.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 0.05)

    async def keep_running(self, max_delay: float = 10.0) -> None:
        """Restart the service whenever it exits, until stop(): run it as a task.

        Instances keep running without the engine; the daemon needs it back to start,
        stop, watch and follow them. Retries back off up to ``max_delay`` seconds."""
        delay = 0.25
        while not self._stopped:
            proc = self._proc
            if proc is not None and proc.returncode is None:
                await proc.wait()
                if self._stopped:
                    return
                log.warning(
                    "`podman system service` exited (code %s); restarting it", proc.returncode
                )
            try:
                await self.start()
            except EngineError as exc:
                if self._stopped:
                    return
                log.warning("could not restart `podman system service`: %s", exc.message)
                await asyncio.sleep(delay)
                delay = min(delay * 2, max_delay)
            else:
                if proc is not None:
                    log.info("`podman system service` is back (pid %s)", self.pid)
                delay = 0.25

    async def stop(self, timeout: float = SERVICE_STOP_TIMEOUT) -> None:
        """Terminate the service this object started (SIGTERM, then SIGKILL). Idempotent.

        After stop(), start() raises: a stopped service is not restarted.
        """
        self._stopped = True
        await self._terminate(timeout)

    async def _terminate(self, timeout: float = SERVICE_STOP_TIMEOUT) -> None:
        proc, self._proc = self._proc, None
        self.info = None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if proc is not None:
            with contextlib.suppress(FileNotFoundError):
                self.socket.unlink()

    def _log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.strip().splitlines()[-lines:]) or "(empty log)"


async def resolve_engine(
    home: Home, env: Mapping[str, str], configured: str | None = None
) -> tuple[EngineInfo, PodmanService | None]:
    """The engine the daemon should use, starting a PodmanService when none answers.

    Returns the endpoint's info and the service it started (None when an existing
    engine answered); the caller owns the service and must ``await service.stop()``.
    Raises EngineError with a `plat doctor` hint when nothing answers and podman
    is not installed or its service cannot start.
    """
    leftover = str(home.run_dir / "podman.sock")
    podman = shutil.which("podman") is not None
    info = await asyncio.to_thread(
        find_engine, env, configured, extra=(leftover,), docker_default=not podman
    )
    if info is not None:
        return info, None
    if not podman:
        tried = ", ".join(candidate_endpoints(env, configured))
        raise EngineError(
            f"no container engine answered (tried {tried}) and podman is not installed",
            hint=DOCTOR_HINT,
        )
    home.run_dir.mkdir(parents=True, exist_ok=True)
    service = PodmanService.for_home(home)
    try:
        info = await service.start()
    except EngineError:
        docker = await asyncio.to_thread(ping, DOCKER_SOCKET)
        if docker is None:
            raise
        log.warning("`podman system service` did not start; using Docker at %s", DOCKER_SOCKET)
        await service.stop()
        return docker, None
    return info, service
