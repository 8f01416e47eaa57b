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

Each tenant's instances sit on the tenant's own isolated network, and on no
other (:mod:`plat.daemon.drivers.container.networks`): one tenant's instance
cannot open a connection to another's. An instance's secrets are files on the
host's tmpfs (:mod:`plat.daemon.drivers.secretfiles`), bind-mounted read-only at
SECRETS_PATHS: never in the create body's environment, an image layer or
``podman inspect`` (which shows the folder, not the values).

A function that scaled to zero gets a *standby*: its next container, created but
not started (no process, no memory; ~25-50 ms of the cold start done ahead). The
start that follows only starts it. With Podman and published ports, up to
``standby_networks`` standbys have their network set up ahead too, held by a
paused container (:mod:`plat.daemon.drivers.container.holders`): ~90 ms less.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from plat.daemon.drivers.base import (
    LABEL_DAEMON,
    LOOPBACK,
    InstanceExit,
    InstanceSpec,
    OutputLine,
    RunningInstance,
    free_port,
)
from plat.daemon.drivers.container.documents import (
    bridge_address,
    container_name,
    create_body,
    instance_exit,
    listed_instance,
    network_missing,
)
from plat.daemon.drivers.container.engine import Engine, EngineAPIError
from plat.daemon.drivers.container.firewall import Firewall
from plat.daemon.drivers.container.forwards import StaleForwards
from plat.daemon.drivers.container.holders import LABEL_NETNS, Holders
from plat.daemon.drivers.container.networks import TenantNetworks
from plat.daemon.drivers.container.secretdirs import SecretDirs
from plat.daemon.drivers.secretfiles import SecretFiles
from plat.daemon.drivers.versions import PROCESS_IMAGE_PREFIX
from plat.daemon.tasks import Finishing
from plat.errors import EngineError, PlatError

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class _Standby:
    """A created, not started container for the next start of ``spec``."""

    spec: InstanceSpec
    instance_id: str
    ref: str
    port: int | None  # the published port (its holder's, if it has one); None: direct


class ContainerBackend:
    name = "container"
    isolates_tenants = True

    def __init__(
        self,
        endpoint: str,
        daemon_id: str,
        address: str = "published",
        secret_files: SecretFiles | None = None,
        firewall: Firewall | None = None,
        engine_name: str = "podman",
        standby_networks: int = 0,
    ) -> None:
        """``address``: ``direct``, ``published`` or ``auto`` (see the module's doc).
        ``secret_files``: where instances' secret files are written; without it an
        instance that has secrets cannot start. ``firewall``: plat's own isolation
        rules between tenant networks, beside netavark's. ``engine_name``: "podman"
        or "docker" (EngineInfo.name), which picks the log driver instances get.
        ``standby_networks``: how many standbys may have their network held ahead
        (Podman with published ports only; 0: none)."""
        self._endpoint = endpoint
        self.daemon_id = daemon_id
        self._log_driver = "json-file" if engine_name == "docker" else "k8s-file"
        self.direct = address == "direct" or (address == "auto" and direct_reachable(endpoint))
        self._standby: dict[str, _Standby] = {}
        self._held = 0 if engine_name != "podman" or self.direct else standby_networks
        self._preparing = Finishing()
        self._prepares: dict[str, set[asyncio.Task[Any]]] = {}  # under way, by function
        # Containers (ids, or names when a create's answer was lost) whose removal
        # failed while the engine was away; ``sweep`` removes them once it answers.
        self._unremoved: set[str] = set()
        self._engine = Engine(endpoint)
        self.networks = TenantNetworks(self._engine, daemon_id, firewall)
        self.holders = Holders(self._engine, self.networks, daemon_id, engine_name == "podman")
        self._secrets = SecretDirs(secret_files)
        self._swept_once = False  # what a daemon before this one left: secret folders, holders
        # Published ports netavark failed to unpublish (rootful Podman's rules only).
        self.forwards = StaleForwards() if engine_name == "podman" else None

    @property
    def endpoint(self) -> str:
        return self._endpoint

    async def start(self, spec: InstanceSpec, instance_id: str) -> RunningInstance:
        """Create and start the container: two Engine API calls (no inspect call on
        the cold start path, but for a direct instance's address; the first start of
        a tenant makes its network first).

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
            await self._discard(standby.ref, standby.instance_id)
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

    async def _discard_holder(self, instance_id: str) -> None:
        """Remove the holder of ``instance_id``'s network, if it has one; after the
        instance's container (the engine refuses the other order)."""
        name = self.holders.names.pop(instance_id, None)
        if name is not None:
            await self._discard(name)

    async def _create(
        self, spec: InstanceSpec, instance_id: str, holder: tuple[str, int] | None = None
    ) -> tuple[str, int | None]:
        """Create the instance's container on its tenant's network (or in ``holder``'s
        namespace: its name and published port), with its secret files: (its id, its
        published port or None)."""
        network = await self.networks.ensure(spec.tenant, spec.image, anchor=False)
        port = holder[1] if holder else None if self.direct else free_port()
        name = container_name(spec, instance_id)
        secrets_dir = self._secrets.write(spec, instance_id)
        try:
            body = create_body(
                spec,
                instance_id,
                self.daemon_id,
                port,
                network=network,
                secrets_dir=secrets_dir,
                log_driver=self._log_driver,
                holder=None if holder is None else holder[0],
            )
            try:
                return await self._engine.create(body, name), port
            except EngineAPIError as exc:
                if not network_missing(exc):
                    raise
            # Removed behind this object's back (`podman network rm`, remove_network):
            # made again, of the same name.
            self.networks.forget(spec.tenant)
            await self.networks.ensure(spec.tenant, spec.image, anchor=False)
            return await self._engine.create(body, name), port
        except BaseException as exc:
            if isinstance(exc, EngineError) and not isinstance(exc, EngineAPIError):
                # The engine may have made the container before the answer was lost.
                self._unremoved.add(name)
            self._secrets.drop(instance_id)
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
                self.networks.anchor_soon(spec.tenant, spec.image)
                network = self.networks.name(spec.tenant)
                host = LOOPBACK if port is not None else await self._address(ref, network)
                return RunningInstance(
                    id=instance_id,
                    function=spec.function,
                    version=spec.version,
                    host=host,
                    port=spec.port if port is None else port,
                    backend_ref=ref,
                )
        except BaseException:
            await self._discard(ref, instance_id)
            raise
        await self._discard(ref, instance_id)
        if port is not None and "address already in use" in refused.explanation.lower():
            return None
        raise refused

    async def prepare(self, spec: InstanceSpec, instance_id: str) -> None:
        """Create the container of the next start of ``spec`` (a standby).

        Runs to its end even when the caller is cancelled, so that what it creates is
        known (and removed by ``close``); ``unprepare`` waits for it."""
        task = asyncio.ensure_future(self._prepare(spec, instance_id))
        preparing = self._prepares.setdefault(spec.function, set())
        preparing.add(task)

        def done(_: object) -> None:
            preparing.discard(task)
            if not preparing and self._prepares.get(spec.function) is preparing:
                del self._prepares[spec.function]

        task.add_done_callback(done)
        await self._preparing.run(task)

    async def _prepare(self, spec: InstanceSpec, instance_id: str) -> None:
        await self._drop_standby(spec.function)
        await self._prepare_standby(spec, instance_id)

    async def _prepare_standby(self, spec: InstanceSpec, instance_id: str) -> None:
        holder = None
        try:
            if len(self.holders.names) < self._held:  # counted before any await: no race
                holder = await self.holders.hold(spec, instance_id)
            ref, port = await self._create(spec, instance_id, holder)
        except PlatError as exc:  # the engine's refusal, or secrets that cannot be written
            log.info("no standby container for %s: %s", spec.function, exc.message)
            await self._discard_holder(instance_id)
            return
        stale = self._standby.pop(spec.function, None)
        self._standby[spec.function] = _Standby(spec, instance_id, ref, port)
        if stale is not None:  # prepared twice at once: keep the newer
            await self._discard(stale.ref, stale.instance_id)

    async def unprepare(self, function: str) -> None:
        """Remove ``function``'s standby, after any preparation of one still under way
        (else it would be made after this returns: ``plat rm`` would leave it)."""
        preparing = self._prepares.get(function)
        if preparing:
            await asyncio.wait(set(preparing))
        await self._drop_standby(function)

    async def _drop_standby(self, function: str) -> None:
        standby = self._standby.pop(function, None)
        if standby is not None:
            await self._discard(standby.ref, standby.instance_id)

    async def _address(self, ref: str, network: str) -> str:
        """A started container's address on its tenant's network."""
        data = await self._engine.inspect(ref)
        address = bridge_address((data or {}).get("NetworkSettings"), network)
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
        await self._discard(running.backend_ref, running.id)

    async def _discard(self, ref: str, instance_id: str | None = None) -> None:
        """Remove a container (an id or a name), running or not, and the secret files
        of ``instance_id``; quietly, as a clean-up. One the engine cannot remove now
        is removed by ``sweep``."""
        if instance_id is not None:
            self._secrets.drop(instance_id)
        try:
            await self._engine.remove(ref)
        except EngineAPIError as exc:
            if exc.http_status >= 500:
                self._unremoved.add(ref)
        except EngineError:
            self._unremoved.add(ref)
        self._touched()
        if instance_id is not None:
            await self._discard_holder(instance_id)

    async def sweep(self) -> None:
        """Retry the removals that failed while the engine was away; the first time,
        remove the secret folders that neither a container of this daemon nor this
        object uses (a daemon that died left them: this object's own go with their
        containers; listing every container at each sweep cost the engine and the
        daemon CPU in proportion to the functions scaled to zero, whose standby
        containers it lists). Then the port forwards netavark left, if any."""
        for ref in list(self._unremoved):
            self._unremoved.discard(ref)
            await self._discard(ref)
        if not self._swept_once:
            self._secrets.sweep({instance.id for instance in await self.list()})
            for ref in await self.holders.unused():  # after list(): adopted ones are used
                await self._discard(ref)
            self._swept_once = True
        if self.forwards is not None and not self.direct:
            await self.forwards.sweep(self._container_ids, self._addresses)

    def _touched(self) -> None:
        if self.forwards is not None:
            self.forwards.touched()

    async def _container_ids(self) -> set[str]:
        return {str(entry.get("Id")) for entry in await self._engine.containers({})}

    async def _addresses(self, container: str) -> set[str]:
        data = await self._engine.inspect(container) or {}
        networks = (data.get("NetworkSettings") or {}).get("Networks") or {}
        return {str(n.get("IPAddress")) for n in networks.values() if n.get("IPAddress")}

    async def stop(self, instance: RunningInstance, timeout: float = 5.0) -> None:
        # An anchor starts after its tenant's first container: one still starting
        # must run before the last container goes (see networks.ensure).
        await self.networks.anchored()
        try:
            await self._engine.stop(instance.backend_ref, timeout)
        except EngineAPIError as exc:
            log.warning("stopping %s: %s", instance.backend_ref, exc.explanation)

    async def remove(self, instance: RunningInstance) -> None:
        await self.networks.anchored()
        try:
            await self._engine.remove(instance.backend_ref)
        finally:
            self._touched()
        self._secrets.drop(instance.id)
        await self._discard_holder(instance.id)

    async def remove_network(self, tenant: str) -> bool:
        """Remove ``tenant``'s network (its standby containers first); False, quietly,
        while other containers are attached to it (``plat tenant rm`` leaves it)."""
        for function, standby in list(self._standby.items()):
            if standby.spec.tenant == tenant:
                await self.unprepare(function)
        return await self.networks.remove(tenant)

    def output(
        self, instance: RunningInstance, since: float | None = None
    ) -> AsyncIterator[OutputLine]:
        """Follow the engine's log stream of the container (demultiplexed, timestamped)."""
        return self._engine.follow(instance.backend_ref, since)

    async def list(self) -> list[RunningInstance]:
        # One listing call: inspecting every container too made the watchdog's poll
        # cost grow with the number of containers.
        entries = await self._engine.containers({"label": [f"{LABEL_DAEMON}={self.daemon_id}"]})
        listed = [listed_instance(entry, self.daemon_id) for entry in entries]
        for entry, instance in zip(entries, listed, strict=True):
            holder = (entry.get("Labels") or {}).get(LABEL_NETNS)
            if holder:  # adopted: removed with the instance
                self.holders.names.setdefault(instance.id, str(holder))
        return listed

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
        """Remove the standby containers and the networks and secret root nothing
        uses any more; running instances (and what they use) stay, to be adopted."""
        await self._preparing.wait()
        for function in list(self._standby):
            await self.unprepare(function)
        await self.networks.remove_unused()
        self._secrets.close()
        await self._engine.close()
