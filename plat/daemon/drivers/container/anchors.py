"""Anchors: one idle container on each tenant network, so that netavark never tears a
tenant network down completely while the tenant exists.

Why: netavark (1.4, Podman 4.3's) installs the jump from the FORWARD chain to its
isolation chains with every isolated network's rules, and deletes it when ANY
isolated network is torn down completely (its last container stops). From then
until the next container starts on an isolated network, no isolated network is
isolated from any other (measured: see docs/backends.md, "Tenant networks").
A tenant that scales to zero would do exactly that. An anchor (catatonit, the
engine's own init, in pause mode: no process of the image runs) keeps its network
in use, so instances come and go without a complete teardown. When plat removes a
network (and its anchor) it restarts another anchor, whose start puts the jump
back.

Anchors are Podman only (Docker isolates bridge networks by rules it never drops)
and carry ``plat.anchor=<daemon id>``, not ``plat.daemon``: they are no instances.
"""

from __future__ import annotations

from typing import Any

from plat.daemon.drivers.base import LABEL_TENANT
from plat.daemon.drivers.container.engine import Engine, EngineAPIError, explanation

LABEL_ANCHOR = "plat.anchor"
LABEL_STACK = "plat.stack"  # on a function's image: the stack image it was built on
# Podman mounts its init (catatonit) here when HostConfig.Init is set; -P: pause mode.
PODMAN_INIT = "/run/podman-init"


def anchor_name(network: str) -> str:
    return f"{network}-anchor"


def paused_body(network: str, image: str, labels: dict[str, str]) -> dict[str, Any]:
    """The create body of a container of the engine's init in pause mode on ``network``
    (pure): any image will do, as what runs is the init, mounted from the host. An
    anchor is one; so is a holder of a standby's network."""
    return {
        "Image": image,
        "Entrypoint": [PODMAN_INIT],
        "Cmd": ["-P"],
        "User": "10001:10001",
        "Labels": labels,
        "HostConfig": {
            "Init": True,
            "NetworkMode": network,
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges"],
            "ReadonlyRootfs": True,
            "Memory": 16 * 1024**2,
            "PidsLimit": 8,
            "LogConfig": {"Type": "k8s-file", "Config": {"max-size": "1mb"}},
        },
        "NetworkingConfig": {"EndpointsConfig": {network: {}}},
    }


def anchor_body(network: str, tenant: str, daemon_id: str, image: str) -> dict[str, Any]:
    """The create body of ``network``'s anchor (pure)."""
    return paused_body(network, image, {LABEL_ANCHOR: daemon_id, LABEL_TENANT: tenant})


async def anchor_image(engine: Engine, image: str) -> str:
    """What an anchor made beside an instance of ``image`` runs: the image's stack
    (label ``plat.stack``), which functions share and plat keeps, rather than the
    function's own image, which an anchor would pin against pruning; ``image``
    itself when it names no stack that exists (a ``dockerfile`` function)."""
    reply = await engine.call("GET", f"/images/{image}/json")
    if reply.status == 200 and isinstance(reply.data, dict):
        labels = (reply.data.get("Config") or {}).get("Labels") or {}
        stack = labels.get(LABEL_STACK)
        if isinstance(stack, str) and stack and await engine.image_exists(stack):
            return stack
    return image


async def start_anchor(
    engine: Engine, network: str, tenant: str, daemon_id: str, image: str
) -> None:
    """Create and start ``network``'s anchor (idempotent: one that exists is started)."""
    name = anchor_name(network)
    reply = await engine.call(
        "POST",
        "/containers/create",
        params={"name": name},
        body=anchor_body(network, tenant, daemon_id, await anchor_image(engine, image)),
    )
    if reply.status not in (201, 409):
        raise EngineAPIError(reply.status, explanation(reply))
    await engine.start(name)


async def remove_anchor(engine: Engine, network: str) -> None:
    await engine.remove(anchor_name(network))


async def restart_anchor(engine: Engine, network: str) -> bool:
    """Stop and start ``network``'s anchor: its start puts the isolation jump back.
    False when there is no such anchor (yet)."""
    reply = await engine.call(
        "POST", f"/containers/{anchor_name(network)}/restart", params={"t": "0"}
    )
    if reply.status not in (204, 404):
        raise EngineAPIError(reply.status, explanation(reply))
    return reply.status == 204


async def used_by_others(engine: Engine, network: str) -> bool:
    """Whether a container other than its anchor is attached to ``network`` (running
    or not: a standby container holds it too)."""
    entries = await engine.containers({"network": [network]})
    anchor = "/" + anchor_name(network)
    return any(anchor not in (entry.get("Names") or []) for entry in entries)


async def daemon_anchors(engine: Engine, daemon_id: str) -> list[str]:
    """The ids of the anchors of ``daemon_id``'s networks."""
    entries = await engine.containers({"label": [f"{LABEL_ANCHOR}={daemon_id}"]})
    return [str(entry["Id"]) for entry in entries]
