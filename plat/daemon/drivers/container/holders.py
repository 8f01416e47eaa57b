"""Holders: a standby container's network, set up before its start.

A container's start on a bridge network spends most of its time on that network:
the namespace, the veth, the address and netavark's rules (~80 ms of a ~175 ms
start here), and the published port's rules (~25 ms more; measured in
docs/benchmarks-dev.md, "Cold start without the pool"). A standby container
made with a *holder* joins the network namespace of another container, started
when the standby is prepared: the engine's init in pause mode, attached to the
tenant's network, publishing the instance's port on 127.0.0.1. The start that
follows then starts the instance's process only.

A holder lives as long as its instance and is removed after it (the engine
refuses the other order). It carries ``plat.holder=<daemon id>``, not
``plat.daemon``: it is no instance, and never adopted or counted as one; the
instance carries the holder's name and the port it publishes.

Podman only (its init, catatonit, has the pause mode; anchors use it too), with
published ports; each holder costs ~0.4 MB (its conmon and catatonit), so a
daemon keeps at most ``standby_networks`` of them.
"""

from __future__ import annotations

import logging
from typing import Any

from plat.daemon.drivers.base import (
    LABEL_INSTANCE,
    LABEL_TENANT,
    LOOPBACK,
    InstanceSpec,
    free_port,
)
from plat.daemon.drivers.container.anchors import paused_body
from plat.daemon.drivers.container.engine import Engine, EngineAPIError
from plat.daemon.drivers.container.networks import TenantNetworks

log = logging.getLogger(__name__)

LABEL_HOLDER = "plat.holder"  # on a holder: its daemon's id
LABEL_NETNS = "plat.netns"  # on an instance in a holder's namespace: the holder's name
LABEL_PORT = "plat.port"  # on such an instance: the host port its holder publishes


def holder_name(daemon_id: str, instance_id: str) -> str:
    """Unique to the daemon too: two daemons on one engine never share (or remove)
    a holder, whatever their instance ids."""
    return f"plat-net-{daemon_id}-{instance_id}"


def holder_body(
    *,
    network: str,
    tenant: str,
    daemon_id: str,
    instance_id: str,
    image: str,
    port: int,
    host_port: int,
) -> dict[str, Any]:
    """The create body of the holder of ``instance_id`` (pure): on ``network`` only,
    publishing the instance's ``port`` on 127.0.0.1:``host_port``. What runs is the
    engine's init, mounted from the host, so any image will do."""
    exposed = f"{port}/tcp"
    labels = {LABEL_HOLDER: daemon_id, LABEL_INSTANCE: instance_id, LABEL_TENANT: tenant}
    body = paused_body(network, image, labels)
    body["ExposedPorts"] = {exposed: {}}
    body["HostConfig"]["PortBindings"] = {
        exposed: [{"HostIp": LOOPBACK, "HostPort": str(host_port)}]
    }
    return body


def joined(host_config: dict[str, Any], labels: dict[str, str], holder: str, port: int) -> None:
    """Make an instance's create body (its HostConfig and Labels, changed in place)
    join ``holder``'s namespace instead of attaching to a network itself."""
    host_config["NetworkMode"] = f"container:{holder}"
    labels[LABEL_NETNS] = holder
    labels[LABEL_PORT] = str(port)


class Holders:
    """The holders one daemon started, by the instance (standby or running) in
    their namespace; the backend removes each after its instance."""

    def __init__(
        self, engine: Engine, networks: TenantNetworks, daemon_id: str, podman: bool
    ) -> None:
        self._engine = engine
        self._networks = networks
        self._daemon_id = daemon_id
        self._podman = podman
        self.names: dict[str, str] = {}  # instance id -> holder name

    async def hold(self, spec: InstanceSpec, instance_id: str) -> tuple[str, int] | None:
        """Start the holder of ``instance_id``'s network: (its name, the port it
        publishes); None, quietly, when it could not start (the standby then sets up
        its network when it starts, as without a holder). Raises EngineError when
        the engine cannot be reached; the caller removes what it left."""
        name = holder_name(self._daemon_id, instance_id)
        self.names[instance_id] = name  # before the create: the caller's clean-up finds it
        network = await self._networks.ensure(spec.tenant, spec.image)
        for _ in range(3):  # a published port taken in between: the next free one
            port = free_port()
            body = holder_body(
                network=network,
                tenant=spec.tenant,
                daemon_id=self._daemon_id,
                instance_id=instance_id,
                image=spec.image,
                port=spec.port,
                host_port=port,
            )
            try:
                await self._engine.create(body, name)
                await self._engine.start(name)
                return name, port
            except EngineAPIError as exc:
                log.info("no network held for %s: %s", spec.function, exc.explanation)
                await self._engine.remove(name)
                if "address already in use" not in exc.explanation.lower():
                    break
        del self.names[instance_id]
        return None

    async def unused(self) -> list[str]:
        """The ids of this daemon's holders that no instance known here uses: a
        daemon that died left them."""
        if not self._podman:
            return []
        used = set(self.names.values())
        entries = await self._engine.containers({"label": [f"{LABEL_HOLDER}={self._daemon_id}"]})
        return [
            str(entry.get("Id"))
            for entry in entries
            if not used & {str(name).lstrip("/") for name in entry.get("Names") or []}
        ]
