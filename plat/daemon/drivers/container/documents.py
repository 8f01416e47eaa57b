"""What plat says to the Engine API about an instance, and what it reads back (pure).

The create body of an instance's container (hardened, on its tenant's network,
its secrets mounted), and instances and exits read from the engine's listings,
inspect documents and events. No I/O here: tables of cases test it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from plat.daemon.drivers.base import (
    INSTANCE_PORT,
    LABEL_DAEMON,
    LABEL_FUNCTION,
    LABEL_INSTANCE,
    LABEL_TENANT,
    LABEL_VERSION,
    LOOPBACK,
    InstanceExit,
    InstanceSpec,
    RunningInstance,
)
from plat.daemon.drivers.container.engine import EngineAPIError
from plat.daemon.drivers.container.holders import LABEL_PORT, joined
from plat.daemon.drivers.container.networks import network_name
from plat.daemon.drivers.secretvalue import SECRETS_DIR, SECRETS_ENV, SECRETS_PATHS
from plat.tenancy import DEFAULT_TENANT


def container_name(spec: InstanceSpec, instance_id: str) -> str:
    return f"plat-{spec.function}-{instance_id}"


def create_body(
    spec: InstanceSpec,
    instance_id: str,
    daemon_id: str,
    host_port: int | None,
    *,
    network: str,
    secrets_dir: str | None = None,
    log_driver: str = "k8s-file",
    holder: str | None = None,
) -> dict[str, Any]:
    """The Engine API body of ``POST /containers/create`` for one instance (pure, tested).

    The instance's port is published on 127.0.0.1:``host_port`` only; with None it
    is not published (the instance is reached at its bridge address). It is
    attached to ``network`` only (its tenant's). ``secrets_dir``, a host folder of
    secret files, is mounted read-only at each of SECRETS_PATHS. ``log_driver``:
    Podman's ``k8s-file``; Docker has no such driver (its create answers "logging
    plugin k8s-file not found") and takes ``json-file``, with the same bound.
    ``holder``: the name of a started container whose network namespace the
    instance joins, which publishes its port on ``host_port``
    (:mod:`plat.daemon.drivers.container.holders`).
    """
    env = {
        **spec.env,
        "PORT": str(spec.port),
        "PLAT_FUNCTION": spec.function,
        "PLAT_VERSION": spec.version,
    }
    if secrets_dir is not None:
        env[SECRETS_ENV] = SECRETS_DIR
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
        "LogConfig": {"Type": log_driver, "Config": {"max-size": "10mb"}},
        "NetworkMode": network,
    }
    if host_port is not None and holder is None:
        host_config["PortBindings"] = {exposed: [{"HostIp": LOOPBACK, "HostPort": str(host_port)}]}
    binds = [f"{host}:{target}:ro" for host, target in spec.mounts.items()]
    if secrets_dir is not None:
        binds += [f"{secrets_dir}:{target}:ro" for target in SECRETS_PATHS]
    if binds:
        host_config["Binds"] = binds
    labels = {
        LABEL_FUNCTION: spec.function,
        LABEL_VERSION: spec.version,
        LABEL_DAEMON: daemon_id,
        LABEL_INSTANCE: instance_id,
        LABEL_TENANT: spec.tenant,
    }
    body: dict[str, Any] = {
        "Image": spec.image,
        "Env": [f"{key}={value}" for key, value in env.items()],
        "Labels": labels,
        "HostConfig": host_config,
    }
    if holder is not None and host_port is not None:
        joined(host_config, labels, holder, host_port)
    else:
        body["ExposedPorts"] = {exposed: {}}
        body["NetworkingConfig"] = {"EndpointsConfig": {network: {}}}
    if spec.user is not None:
        body["User"] = spec.user
    return body


def bridge_address(settings: Mapping[str, Any] | None, network: str | None = None) -> str:
    """The IPv4 address on ``network`` in an Engine API ``NetworkSettings`` (inspect
    or list); without one there, the first address it names."""
    settings = settings or {}
    networks: Mapping[str, Any] = settings.get("Networks") or {}
    mine = networks.get(network) if network else None
    if mine and mine.get("IPAddress"):
        return str(mine["IPAddress"])
    if settings.get("IPAddress"):
        return str(settings["IPAddress"])
    for entry in networks.values():
        if entry and entry.get("IPAddress"):
            return str(entry["IPAddress"])
    return ""


def secret_owner(user: str | None) -> tuple[int | None, int | None]:
    """The uid and gid an instance running as ``user`` ("uid:gid") reads its secret
    files as; None for what the image decides (or a user given by name)."""
    if user is None:
        return None, None
    uid, _, gid = user.partition(":")
    return (int(uid) if uid.isdigit() else None), (int(gid) if gid.isdigit() else None)


def network_missing(exc: EngineAPIError) -> bool:
    """The engine refused a create because the network named in it is gone."""
    text = exc.explanation.lower()
    return "network" in text and "not found" in text


def listed_instance(entry: Mapping[str, Any], daemon_id: str = "") -> RunningInstance:
    """An instance from its container's entry in an Engine API listing (pure).

    A container without a ``plat.tenant`` label was started before tenants had
    networks (on the engine's shared network): it counts as not running, so a
    restarted daemon replaces it rather than adopting it."""
    labels = entry.get("Labels") or {}
    ports = entry.get("Ports") or []
    host, port = LOOPBACK, next((int(p["PublicPort"]) for p in ports if p.get("PublicPort")), 0)
    if not port and str(labels.get(LABEL_PORT, "")).isdigit():  # its holder publishes it
        port = int(labels[LABEL_PORT])
    if not port:  # not published: reached at its bridge address, on its tenant's network
        network = network_name(labels.get(LABEL_TENANT, DEFAULT_TENANT), daemon_id)
        host, port = bridge_address(entry.get("NetworkSettings"), network), INSTANCE_PORT
    return RunningInstance(
        id=labels.get(LABEL_INSTANCE, str(entry.get("Id", ""))[:12]),
        function=labels.get(LABEL_FUNCTION, ""),
        version=labels.get(LABEL_VERSION, ""),
        host=host,
        port=port,
        backend_ref=str(entry.get("Id", "")),
        running=entry.get("State") == "running" and LABEL_TENANT in labels,
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
