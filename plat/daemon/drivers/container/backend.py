"""The container backend: the Docker Engine API (Podman or Docker).

Every call goes through one asynchronous Engine API client on the event loop
(:mod:`plat.daemon.drivers.container.engine`). Instances run hardened: no
capabilities, no-new-privileges, read-only root with a tmpfs /tmp, memory, CPU
and pids limits, and an init process.

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
import logging
import os
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from plat.daemon.drivers.base import (
    INSTANCE_PORT,
    LABEL_DAEMON,
    LABEL_FUNCTION,
    LABEL_INSTANCE,
    LABEL_VERSION,
    LOOPBACK,
    InstanceExit,
    InstanceSpec,
    OutputLine,
    RunningInstance,
    free_port,
)
from plat.daemon.drivers.container.engine import Engine, EngineAPIError
from plat.daemon.drivers.versions import PROCESS_IMAGE_PREFIX
from plat.daemon.tasks import Finishing
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
        self._engine = Engine(endpoint)

    @property
    def endpoint(self) -> str:
        return self._endpoint

    async def start(self, spec: InstanceSpec, instance_id: str) -> RunningInstance:
        """Create and start the container: two Engine API calls (no inspect call on
        the cold start path, but for a direct instance's address).

        A start that fails or is cancelled part-way leaves no container behind: once
        sent, the engine calls run to their end, then what they made is removed.
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
            return await self._engine.create(body, name), port
        except EngineAPIError:
            raise
        except EngineError:
            # The engine may have made the container before the answer was lost.
            self._unremoved.add(name)
            raise

    async def _start_created(
        self, spec: InstanceSpec, instance_id: str, ref: str, port: int | None
    ) -> RunningInstance | None:
        """Start a created container; None when a published port turned out taken (the
        container is removed), EngineError for any other failure."""
        try:
            try:
                await self._engine.start(ref)
            except EngineAPIError as exc:
                refused = exc
            else:
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
        await self._discard(ref)
        if port is not None and "address already in use" in refused.explanation.lower():
            return None
        raise refused

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
        data = await self._engine.inspect(ref)
        address = bridge_address((data or {}).get("NetworkSettings"))
        if not address:
            raise EngineError(
                f"container {ref[:12]} has no bridge address",
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
            await self._engine.remove(ref)
        except EngineAPIError as exc:
            if exc.http_status >= 500:
                self._unremoved.add(ref)
        except EngineError:
            self._unremoved.add(ref)

    async def sweep(self) -> None:
        for ref in list(self._unremoved):
            self._unremoved.discard(ref)
            await self._discard(ref)

    async def stop(self, instance: RunningInstance, timeout: float = 5.0) -> None:
        try:
            await self._engine.stop(instance.backend_ref, timeout)
        except EngineAPIError as exc:
            log.warning("stopping %s: %s", instance.backend_ref, exc.explanation)

    async def remove(self, instance: RunningInstance) -> None:
        await self._engine.remove(instance.backend_ref)

    def output(
        self, instance: RunningInstance, since: float | None = None
    ) -> AsyncIterator[OutputLine]:
        """Follow the engine's log stream of the container (demultiplexed, timestamped)."""
        return self._engine.follow(instance.backend_ref, since)

    async def list(self) -> list[RunningInstance]:
        # One listing call: inspecting every container too made the watchdog's poll
        # cost grow with the number of containers.
        entries = await self._engine.containers({"label": [f"{LABEL_DAEMON}={self.daemon_id}"]})
        return [listed_instance(entry) for entry in entries]

    def runs(self, image: str) -> bool:
        return not image.startswith(PROCESS_IMAGE_PREFIX)

    async def is_alive(self, instance: RunningInstance) -> bool:
        data = await self._engine.inspect(instance.backend_ref)
        return data is not None and (data.get("State") or {}).get("Status") == "running"

    async def logs(self, instance: RunningInstance, tail: int = 50) -> str:
        return await self._engine.logs(instance.backend_ref, tail)

    async def rename(self, instance: RunningInstance, function: str) -> None:
        """``plat-<function>-<id>``, as if started for it (labels cannot change)."""
        await self._engine.rename(instance.backend_ref, f"plat-{function}-{instance.id}")

    async def events(self, since: float | None = None) -> AsyncIterator[InstanceExit]:
        """Exits of this daemon's containers (the engine's ``die`` events), from
        ``since`` on; see ``Backend.events``. Raises EngineError when the engine's
        event stream breaks or ends (the engine stopped or restarted)."""
        filters = {
            "type": ["container"],
            # Docker filters on "die"; Podman 4 on its own name, "died" (either is known).
            "event": ["die", "died"],
            "label": [f"{LABEL_DAEMON}={self.daemon_id}"],
        }
        async for event in self._engine.events(filters, since):
            ended = instance_exit(event)
            if ended is not None:
                yield ended

    async def close(self) -> None:
        await self._preparing.wait()
        for function in list(self._standby):
            await self.unprepare(function)
        await self._engine.close()


def listed_instance(entry: Mapping[str, Any]) -> RunningInstance:
    """An instance from its container's entry in an Engine API listing (pure)."""
    labels = entry.get("Labels") or {}
    ports = entry.get("Ports") or []
    host, port = LOOPBACK, next((int(p["PublicPort"]) for p in ports if p.get("PublicPort")), 0)
    if not port:  # not published: reached at its bridge address
        host, port = bridge_address(entry.get("NetworkSettings")), INSTANCE_PORT
    return RunningInstance(
        id=labels.get(LABEL_INSTANCE, str(entry.get("Id", ""))[:12]),
        function=labels.get(LABEL_FUNCTION, ""),
        version=labels.get(LABEL_VERSION, ""),
        host=host,
        port=port,
        backend_ref=str(entry.get("Id", "")),
        running=entry.get("State") == "running",
    )


def instance_exit(event: Mapping[str, Any]) -> InstanceExit | None:
    """The exit an Engine API event tells of (pure); None for any other event."""
    if event.get("Type", "container") != "container" or (
        event.get("Action") or event.get("status")
    ) not in ("die", "died"):
        return None
    actor = event.get("Actor") or {}
    attributes = actor.get("Attributes") or {}
    ref = str(actor.get("ID") or event.get("id") or "")
    code = str(attributes.get("exitCode", ""))
    nanos = event.get("timeNano")
    return InstanceExit(
        instance_id=str(attributes.get(LABEL_INSTANCE) or ref[:12]),
        backend_ref=ref,
        exit_code=int(code) if code.lstrip("-").isdigit() else None,
        ts=nanos / 1e9 if isinstance(nanos, int) else float(event.get("time") or 0),
    )
