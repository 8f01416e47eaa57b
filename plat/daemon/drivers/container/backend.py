"""The container backend: the Docker Engine API (Podman or Docker).

Starting an instance, the cold-start path, calls the Engine API directly from the
event loop (aiohttp); the rest goes through the docker SDK, which blocks, in a
thread. Instances run hardened: no capabilities, no-new-privileges, read-only
root with a tmpfs /tmp, memory, CPU and pids limits, and an init process.

By default an instance's port is published on 127.0.0.1 only. With
``instance_address: direct`` (experimental, see docs/backends.md) the gateway
reaches it at its address on the engine's bridge network instead, which spares
every start netavark's firewall rules for the port; ``auto`` picks that when the
engine is rootful on this Linux host.

A function that scaled to zero gets a *standby*: its next container, created but
not started (no process, no network, no memory; ~25-50 ms of the cold start
done ahead). The start that follows only starts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
import docker
import docker.errors
import requests

from plat.daemon.drivers.base import (
    INSTANCE_PORT,
    LABEL_DAEMON,
    LABEL_FUNCTION,
    LABEL_INSTANCE,
    LABEL_VERSION,
    LOOPBACK,
    InstanceSpec,
    OutputLine,
    RunningInstance,
    free_port,
)
from plat.daemon.tasks import Finishing
from plat.engine import SDK_POOLS
from plat.errors import EngineError

log = logging.getLogger(__name__)


def container_name(spec: InstanceSpec, instance_id: str) -> str:
    return f"plat-{spec.function}-{instance_id}"


def create_body(
    spec: InstanceSpec, instance_id: str, daemon_id: str, host_port: int | None
) -> dict[str, Any]:
    """The Engine API body of ``POST /containers/create`` for one instance (pure, tested).

    The instance's port is published on 127.0.0.1:``host_port`` only; with None it
    is not published (the instance is reached at its bridge address).
    """
    env = {
        **spec.env,
        "PORT": str(spec.port),
        "PLAT_FUNCTION": spec.function,
        "PLAT_VERSION": spec.version,
    }
    exposed = f"{spec.port}/tcp"
    host_config: dict[str, Any] = {
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges"],
        "ReadonlyRootfs": True,
        "Tmpfs": {"/tmp": "rw,size=64m,mode=1777"},
        "Memory": spec.memory,
        "MemorySwap": spec.memory,
        "NanoCpus": int(spec.cpu * 1e9),
        "PidsLimit": spec.pids,
        "Init": True,
        # The engine's own copy of the output is bounded; plat keeps what it needs.
        "LogConfig": {"Type": "k8s-file", "Config": {"max-size": "10mb"}},
    }
    if host_port is not None:
        host_config["PortBindings"] = {exposed: [{"HostIp": LOOPBACK, "HostPort": str(host_port)}]}
    if spec.mounts:
        host_config["Binds"] = [f"{host}:{target}:ro" for host, target in spec.mounts.items()]
    body: dict[str, Any] = {
        "Image": spec.image,
        "Env": [f"{key}={value}" for key, value in env.items()],
        "Labels": {
            LABEL_FUNCTION: spec.function,
            LABEL_VERSION: spec.version,
            LABEL_DAEMON: daemon_id,
            LABEL_INSTANCE: instance_id,
        },
        "ExposedPorts": {exposed: {}},
        "HostConfig": host_config,
    }
    if spec.user is not None:
        body["User"] = spec.user
    return body


STREAMS = {1: "stdout", 2: "stderr"}


def _message(status: int, data: Any) -> str:
    """The engine's error message from an error response."""
    if isinstance(data, dict) and data.get("message"):
        return str(data["message"])
    return f"HTTP {status}"


def direct_reachable(endpoint: str) -> bool:
    """Whether instances' bridge addresses are routable from here: the engine is
    rootful on this Linux host (its socket belongs to root). Rootless engines and
    engines in a VM (Docker Desktop, a podman machine) keep their bridge private."""
    if sys.platform != "linux" or not endpoint.startswith("unix://"):
        return False
    try:
        return os.stat(endpoint[len("unix://") :]).st_uid == 0
    except OSError:
        return False


def bridge_address(settings: Mapping[str, Any] | None) -> str:
    """The first IPv4 address in an Engine API ``NetworkSettings`` (inspect or list)."""
    settings = settings or {}
    if settings.get("IPAddress"):
        return str(settings["IPAddress"])
    for network in (settings.get("Networks") or {}).values():
        if network and network.get("IPAddress"):
            return str(network["IPAddress"])
    return ""


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


@dataclass(frozen=True)
class _Standby:
    """A created, not started container for the next start of ``spec``."""

    spec: InstanceSpec
    instance_id: str
    ref: str
    port: int | None  # the published port; None when reached directly


class ContainerBackend:
    name = "container"

    def __init__(self, endpoint: str, daemon_id: str, address: str = "published") -> None:
        """``address``: ``direct``, ``published`` or ``auto`` (see the module's doc)."""
        self._endpoint = endpoint
        self.daemon_id = daemon_id
        self.direct = address == "direct" or (address == "auto" and direct_reachable(endpoint))
        self._standby: dict[str, _Standby] = {}
        self._preparing = Finishing()
        # Containers (ids, or names when a create's answer was lost) whose removal
        # failed while the engine was away; ``sweep`` removes them once it answers.
        self._unremoved: set[str] = set()
        self._client = docker.DockerClient(base_url=endpoint, timeout=60, num_pools=SDK_POOLS)
        self._engine: aiohttp.ClientSession | None = None
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
        except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
            # The SDK lets the transport's errors through (the engine's socket gone).
            raise EngineError(
                f"container engine at {self._endpoint} failed: {exc}", hint="run `plat doctor`"
            ) from exc

    def _session(self) -> aiohttp.ClientSession:
        """The Engine API session of the hot path (created on first use, in the loop)."""
        if self._engine is None or self._engine.closed:
            self._engine = aiohttp.ClientSession(
                connector=self._connector(), timeout=aiohttp.ClientTimeout(total=60)
            )
        return self._engine

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> tuple[int, Any]:
        """(status, decoded JSON or None) of one Engine API call; raises EngineError
        when the engine cannot be reached."""
        try:
            async with self._session().request(
                method, self._api_base + path, params=params, json=body
            ) as resp:
                data = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise EngineError(
                f"container engine at {self._endpoint} failed: {exc or type(exc).__name__}",
                hint="run `plat doctor`",
            ) from exc
        try:
            return status, json.loads(data) if data else None
        except ValueError:
            return status, {"message": data.decode(errors="replace")}

    async def start(self, spec: InstanceSpec, instance_id: str) -> RunningInstance:
        """Create and start the container: two Engine API calls from the event loop.

        The SDK's ``containers.run`` adds an inspect call and a thread hop to every
        cold start. A start that fails or is cancelled part-way leaves no container
        behind: once sent, the engine calls run to their end, then what they made is
        removed.
        """
        starting = asyncio.ensure_future(self._start(spec, instance_id))
        try:
            return await asyncio.shield(starting)
        except asyncio.CancelledError:
            await asyncio.shield(self._discard_when_started(starting))
            raise

    async def _start(self, spec: InstanceSpec, instance_id: str) -> RunningInstance:
        standby = self._standby.pop(spec.function, None)
        if standby is not None and standby.spec != spec:
            await self._discard(standby.ref)
        elif standby is not None:
            try:
                running = await self._start_created(
                    spec, standby.instance_id, standby.ref, standby.port
                )
            except EngineError as exc:  # removed by then; a fresh container may work
                log.info("standby container of %s did not start: %s", spec.function, exc)
            else:
                if running is not None:
                    return running
        # A published port is chosen here, which spares an inspect call after the
        # start; a port taken in between makes the start fail, and the next free one
        # is tried. A direct instance is inspected for its address instead.
        name = container_name(spec, instance_id)
        for _ in range(3):
            ref, port = await self._create(spec, instance_id)
            running = await self._start_created(spec, instance_id, ref, port)
            if running is not None:
                return running
        raise EngineError(f"could not publish a port for {name}")

    async def _create(self, spec: InstanceSpec, instance_id: str) -> tuple[str, int | None]:
        """Create the instance's container: (its id, its published port or None)."""
        port = None if self.direct else free_port()
        body = create_body(spec, instance_id, self.daemon_id, port)
        name = container_name(spec, instance_id)
        try:
            status, data = await self._request(
                "POST", "/containers/create", params={"name": name}, body=body
            )
        except EngineError:
            # The engine may have made the container before the answer was lost.
            self._unremoved.add(name)
            raise
        if status != 201:
            raise EngineError(f"container engine error: {_message(status, data)}")
        return str(data["Id"]), port

    async def _start_created(
        self, spec: InstanceSpec, instance_id: str, ref: str, port: int | None
    ) -> RunningInstance | None:
        """Start a created container; None when a published port turned out taken (the
        container is removed), EngineError for any other failure."""
        try:
            status, data = await self._request("POST", f"/containers/{ref}/start")
            if status in (204, 304):
                host = LOOPBACK if port is not None else await self._address(ref)
                return RunningInstance(
                    id=instance_id,
                    function=spec.function,
                    version=spec.version,
                    host=host,
                    port=spec.port if port is None else port,
                    backend_ref=ref,
                )
        except BaseException:
            await self._discard(ref)
            raise
        message = _message(status, data)
        await self._discard(ref)
        if port is not None and "address already in use" in message.lower():
            return None
        raise EngineError(f"container engine error: {message}")

    async def prepare(self, spec: InstanceSpec, instance_id: str) -> None:
        """Create the container of the next start of ``spec`` (a standby).

        Runs to its end even when the caller is cancelled, so that what it creates is
        known (and removed by ``close``)."""
        await self._preparing.run(self._prepare(spec, instance_id))

    async def _prepare(self, spec: InstanceSpec, instance_id: str) -> None:
        await self.unprepare(spec.function)
        try:
            ref, port = await self._create(spec, instance_id)
        except EngineError as exc:
            log.info("no standby container for %s: %s", spec.function, exc.message)
            return
        stale = self._standby.pop(spec.function, None)
        self._standby[spec.function] = _Standby(spec, instance_id, ref, port)
        if stale is not None:  # prepared twice at once: keep the newer
            await self._discard(stale.ref)

    async def unprepare(self, function: str) -> None:
        standby = self._standby.pop(function, None)
        if standby is not None:
            await self._discard(standby.ref)

    async def _address(self, ref: str) -> str:
        """A started container's address on its bridge network."""
        status, data = await self._request("GET", f"/containers/{ref}/json")
        address = bridge_address(data.get("NetworkSettings") if status == 200 else None)
        if not address:
            raise EngineError(
                f"container {ref[:12]} has no bridge address (HTTP {status})",
                hint="set PLAT_INSTANCE_ADDRESS=published to reach instances by a published port",
            )
        return address

    async def _discard_when_started(self, starting: asyncio.Future[RunningInstance]) -> None:
        try:
            running = await starting
        except Exception:  # it failed, and removed what it had made
            return
        await self._discard(running.backend_ref)

    async def _discard(self, ref: str) -> None:
        """Remove a container (an id or a name), running or not; quietly, as a
        clean-up. One the engine cannot remove now is removed by ``sweep``."""
        try:
            status, _ = await self._request("DELETE", f"/containers/{ref}", params={"force": "1"})
        except EngineError:
            status = 503
        if status >= 500:
            self._unremoved.add(ref)

    async def sweep(self) -> None:
        for ref in list(self._unremoved):
            self._unremoved.discard(ref)
            await self._discard(ref)

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
            host, port = (
                LOOPBACK,
                next(
                    (int(p["PublicPort"]) for p in entry.get("Ports") or [] if p.get("PublicPort")),
                    0,
                ),
            )
            if not port:  # not published: reached at its bridge address
                host, port = bridge_address(entry.get("NetworkSettings")), INSTANCE_PORT
            found.append(
                RunningInstance(
                    id=labels.get(LABEL_INSTANCE, str(entry.get("Id", ""))[:12]),
                    function=labels.get(LABEL_FUNCTION, ""),
                    version=labels.get(LABEL_VERSION, ""),
                    host=host,
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
        await self._preparing.wait()
        for function in list(self._standby):
            await self.unprepare(function)
        if self._engine is not None:
            await self._engine.close()
            self._engine = None
        await asyncio.to_thread(self._client.close)


def remove_all(endpoint: str, daemon_id: str, timeout: float = 30.0) -> tuple[list[str], list[str]]:
    """Remove every container labelled ``plat.daemon=<daemon_id>``, running or not
    (``podman rm -f``); returns the names removed and those still there afterwards.

    Blocking (the docker SDK); for a daemon that is gone or could not close in
    time. Raises EngineError when the engine cannot be reached.
    """
    filters = {"label": f"{LABEL_DAEMON}={daemon_id}"}

    def names(entry: Mapping[str, Any]) -> str:
        return ",".join(n.lstrip("/") for n in entry.get("Names") or []) or str(entry.get("Id"))

    try:
        with docker.APIClient(base_url=endpoint, timeout=int(timeout)) as api:
            removed = []
            for entry in api.containers(all=True, filters=filters):
                try:
                    api.remove_container(entry["Id"], force=True, v=True)
                except docker.errors.NotFound:
                    continue
                except docker.errors.APIError as exc:  # named in ``remaining`` below
                    log.warning("removing %s: %s", names(entry), exc.explanation or exc)
                    continue
                removed.append(names(entry))
            remaining = [names(entry) for entry in api.containers(all=True, filters=filters)]
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise EngineError(
            f"the container engine at {endpoint} did not answer: {exc}", hint="run `plat doctor`"
        ) from exc
    return removed, remaining


def remove_all_podman(daemon_id: str, podman: str = "podman") -> tuple[list[str], list[str]]:
    """``remove_all`` through the podman CLI, for when no Engine API answers (the
    daemon's own ``podman system service`` went with it; the containers did not).
    Raises EngineError when podman is missing or fails."""
    import shutil
    import subprocess

    exe = shutil.which(podman)
    if exe is None:
        raise EngineError("podman is not installed", hint="run `plat doctor`")
    listing = [exe, "ps", "-a", "--filter", f"label={LABEL_DAEMON}={daemon_id}"]
    listing += ["--format", "{{.Names}}"]

    def run(cmd: list[str]) -> list[str]:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise EngineError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip()[-500:]}")
        return [line for line in proc.stdout.split() if line]

    found = run(listing)
    if found:
        with contextlib.suppress(EngineError):  # what stays is named by the listing below
            run([exe, "rm", "-f", "-t", "0", *found])
    remaining = run(listing)
    return [name for name in found if name not in remaining], remaining
