"""The container backend: the docker SDK against the Docker Engine API (Podman or Docker).

The SDK blocks, so every call runs in a thread. Instances run hardened: no
capabilities, no-new-privileges, read-only root with a tmpfs /tmp, memory, CPU
and pids limits, an init process, and a port published on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp
import docker
import docker.errors
from docker.models.containers import Container
from docker.types import LogConfig

from plat.daemon.backends import (
    LABEL_DAEMON,
    LABEL_FUNCTION,
    LABEL_INSTANCE,
    LABEL_VERSION,
    InstanceSpec,
    OutputLine,
    RunningInstance,
)
from plat.errors import EngineError

log = logging.getLogger(__name__)


def run_options(spec: InstanceSpec, instance_id: str, daemon_id: str) -> dict[str, Any]:
    """The keyword arguments of ``containers.run`` for one instance (pure, tested)."""
    options: dict[str, Any] = {
        "image": spec.image,
        "name": f"plat-{spec.function}-{instance_id}",
        "detach": True,
        "environment": {
            **spec.env,
            "PORT": str(spec.port),
            "PLAT_FUNCTION": spec.function,
            "PLAT_VERSION": spec.version,
        },
        "labels": {
            LABEL_FUNCTION: spec.function,
            LABEL_VERSION: spec.version,
            LABEL_DAEMON: daemon_id,
            LABEL_INSTANCE: instance_id,
        },
        "ports": {f"{spec.port}/tcp": ("127.0.0.1", None)},
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "read_only": True,
        "tmpfs": {"/tmp": "rw,size=64m,mode=1777"},
        "mem_limit": spec.memory,
        "memswap_limit": spec.memory,
        "nano_cpus": int(spec.cpu * 1e9),
        "pids_limit": spec.pids,
        "init": True,
        # The engine's own copy of the output is bounded; plat keeps what it needs.
        "log_config": LogConfig(type="k8s-file", config={"max-size": "10mb"}),
    }
    if spec.user is not None:
        options["user"] = spec.user
    if spec.mounts:
        options["volumes"] = {
            host: {"bind": target, "mode": "ro"} for host, target in spec.mounts.items()
        }
    return options


STREAMS = {1: "stdout", 2: "stderr"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def demultiplex(content: aiohttp.StreamReader) -> AsyncIterator[tuple[str, bytes]]:
    """Frames of the Docker API's multiplexed log stream: (stream name, payload)."""
    while True:
        try:
            header = await content.readexactly(8)
        except asyncio.IncompleteReadError:
            return
        size = int.from_bytes(header[4:8], "big")
        try:
            payload = await content.readexactly(size)
        except asyncio.IncompleteReadError as exc:
            payload = exc.partial
        yield STREAMS.get(header[0], "stdout"), payload


async def timestamped_lines(
    frames: AsyncIterator[tuple[str, bytes]],
) -> AsyncIterator[OutputLine]:
    """Lines from frames that each start with a timestamp; a line may span frames
    (engines log a partial line as its own entry, timestamp included)."""
    partial: dict[str, tuple[float, str]] = {}
    async for stream, payload in frames:
        stamp, _, text = payload.decode(errors="replace").partition(" ")
        first_ts, head = partial.pop(stream, (parse_timestamp(stamp), ""))
        pieces = (head + text).split("\n")
        for line in pieces[:-1]:
            yield OutputLine(first_ts, stream, line)
        if pieces[-1]:
            partial[stream] = (first_ts if len(pieces) == 1 else parse_timestamp(stamp), pieces[-1])
    for stream, (ts, rest) in partial.items():
        yield OutputLine(ts, stream, rest)


def parse_timestamp(value: str) -> float:
    """Seconds since the epoch from an RFC 3339 time with up to nanoseconds."""
    try:
        if "." in value:
            head, _, frac = value.partition(".")
            digits = "".join(ch for ch in frac if ch.isdigit())
            zone = frac[len(digits) :]
            value = f"{head}.{digits[:6]:0<6}{zone}"
        if value.endswith("Z"):
            value = value[:-1] + "+00:00"
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return time.time()


class ContainerBackend:
    name = "container"

    def __init__(self, endpoint: str, daemon_id: str) -> None:
        self._endpoint = endpoint
        self.daemon_id = daemon_id
        self._client = docker.DockerClient(base_url=endpoint, timeout=60)
        if endpoint.startswith("unix://"):
            self._socket: str | None = endpoint[len("unix://") :]
            self._api_base = "http://engine/v1.40"
        else:
            self._socket = None
            self._api_base = endpoint.replace("tcp://", "http://", 1).rstrip("/") + "/v1.40"

    def _connector(self) -> aiohttp.BaseConnector:
        if self._socket is not None:
            return aiohttp.UnixConnector(path=self._socket)
        return aiohttp.TCPConnector()

    @property
    def endpoint(self) -> str:
        return self._endpoint

    async def _call(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(func, *args, **kwargs)
        except docker.errors.NotFound:
            raise
        except docker.errors.APIError as exc:
            raise EngineError(f"container engine error: {exc.explanation or exc}") from exc
        except docker.errors.DockerException as exc:
            raise EngineError(
                f"container engine at {self._endpoint} failed: {exc}", hint="run `plat doctor`"
            ) from exc

    def _start_blocking(self, spec: InstanceSpec, instance_id: str) -> RunningInstance:
        options = run_options(spec, instance_id, self.daemon_id)
        # Choosing the host port here spares an inspect call after the start; a port
        # taken in between makes the start fail, and the next free one is tried.
        for attempt in range(3):
            port = free_port()
            options["ports"] = {f"{spec.port}/tcp": ("127.0.0.1", port)}
            try:
                container: Container = self._client.containers.run(**options)
            except docker.errors.APIError as exc:
                if attempt < 2 and "address already in use" in str(exc).lower():
                    with contextlib.suppress(docker.errors.APIError):
                        self._client.containers.get(options["name"]).remove(force=True)
                    continue
                raise
            return RunningInstance(
                id=instance_id,
                function=spec.function,
                version=spec.version,
                host="127.0.0.1",
                port=port,
                backend_ref=container.id or options["name"],
            )
        raise EngineError(f"could not publish a port for {options['name']}")

    async def start(self, spec: InstanceSpec, instance_id: str) -> RunningInstance:
        return await self._call(self._start_blocking, spec, instance_id)  # type: ignore[no-any-return]

    def _stop_blocking(self, ref: str, timeout: float) -> None:
        try:
            self._client.containers.get(ref).stop(timeout=int(timeout))
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            log.warning("stopping %s: %s", ref, exc)

    async def stop(self, instance: RunningInstance, timeout: float = 5.0) -> None:
        await self._call(self._stop_blocking, instance.backend_ref, timeout)

    def _remove_blocking(self, ref: str) -> None:
        try:
            self._client.containers.get(ref).remove(force=True)
        except docker.errors.NotFound:
            return

    async def remove(self, instance: RunningInstance) -> None:
        await self._call(self._remove_blocking, instance.backend_ref)

    async def output(
        self, instance: RunningInstance, since: float | None = None
    ) -> AsyncIterator[OutputLine]:
        """Follow the engine's log stream of the container (demultiplexed, timestamped)."""
        params = {"follow": "1", "stdout": "1", "stderr": "1", "timestamps": "1"}
        if since is not None:
            params["since"] = f"{since:.6f}"
        url = f"{self._api_base}/containers/{instance.backend_ref}/logs"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        async with (
            aiohttp.ClientSession(connector=self._connector(), timeout=timeout) as session,
            session.get(url, params=params) as resp,
        ):
            if resp.status != 200:
                log.warning("log stream of %s: HTTP %s", instance.id, resp.status)
                return
            async for line in timestamped_lines(demultiplex(resp.content)):
                yield line

    def _list_blocking(self) -> list[RunningInstance]:
        # One listing call: the SDK's containers.list() inspects every container too,
        # which made the watchdog's poll cost grow with the number of containers.
        found = []
        for entry in self._client.api.containers(
            all=True, filters={"label": f"{LABEL_DAEMON}={self.daemon_id}"}
        ):
            labels = entry.get("Labels") or {}
            port = next(
                (int(p["PublicPort"]) for p in entry.get("Ports") or [] if p.get("PublicPort")),
                0,
            )
            found.append(
                RunningInstance(
                    id=labels.get(LABEL_INSTANCE, str(entry.get("Id", ""))[:12]),
                    function=labels.get(LABEL_FUNCTION, ""),
                    version=labels.get(LABEL_VERSION, ""),
                    host="127.0.0.1",
                    port=port,
                    backend_ref=str(entry.get("Id", "")),
                    running=entry.get("State") == "running",
                )
            )
        return found

    async def list(self) -> list[RunningInstance]:
        return await self._call(self._list_blocking)  # type: ignore[no-any-return]

    def _alive_blocking(self, ref: str) -> bool:
        try:
            container = self._client.containers.get(ref)
        except docker.errors.NotFound:
            return False
        return bool(container.status == "running")

    async def is_alive(self, instance: RunningInstance) -> bool:
        return await self._call(self._alive_blocking, instance.backend_ref)  # type: ignore[no-any-return]

    def _logs_blocking(self, ref: str, tail: int) -> str:
        try:
            data = self._client.containers.get(ref).logs(tail=tail)
        except docker.errors.NotFound:
            return ""
        return data.decode(errors="replace") if isinstance(data, bytes) else str(data)

    async def logs(self, instance: RunningInstance, tail: int = 50) -> str:
        return await self._call(self._logs_blocking, instance.backend_ref, tail)  # type: ignore[no-any-return]

    def _rename_blocking(self, ref: str, name: str) -> None:
        try:
            self._client.containers.get(ref).rename(name)
        except docker.errors.NotFound:
            return

    async def rename(self, instance: RunningInstance, function: str) -> None:
        """``plat-<function>-<id>``, as if started for it (labels cannot change)."""
        await self._call(
            self._rename_blocking, instance.backend_ref, f"plat-{function}-{instance.id}"
        )

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)
