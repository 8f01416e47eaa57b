"""Tenant networks: each tenant's instances on an isolated container network of its own.

Two ordinary bridge networks are not isolated from each other. Podman (netavark)
blocks traffic between two networks only when BOTH carry the option
``isolate=true``; a container on a non-isolated network (the default ``podman``
one too) still reaches an isolated one, and the host reaches every network. So
every network plat puts an instance on (each tenant's, ``default`` included, and
the pool's members, which sit on their tenant's) is isolated, and no instance is
left on the engine's default network.

A network is made through Podman's own API (``POST /libpod/networks/create``):
the compatible ``/networks/create`` stores the option too, but warns that it does
not know it, answers 500 to a duplicate and turns on a DNS server per network.
An engine without that API (Docker) gets an ordinary bridge network, which Docker
isolates from every other bridge network by itself.

On Podman each network gets an anchor container (:mod:`.anchors`): netavark 1.4
drops every network's isolation when any isolated network loses its last
container, and a tenant scaling to zero must not do that. Where the daemon may
(root, iptables), each network's bridge also gets plat's own isolation rules
(:mod:`.firewall`), which no other program's network changes undo.

Names are ``plat-<tenant>-<daemon id>``: two plat homes sharing one engine each
have their own tenant ``acme``, and a daemon's networks are found by label
(``plat.daemon``, ``plat.tenant``) for clean-up. ``ensure`` is idempotent and
safe under concurrency (one creation in flight per name; a network another
process made first is accepted once it is checked to be isolated).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any, NamedTuple

from plat.daemon.drivers.base import LABEL_DAEMON, LABEL_TENANT
from plat.daemon.drivers.container.anchors import (
    remove_anchor,
    restart_anchor,
    start_anchor,
    used_by_others,
)
from plat.daemon.drivers.container.engine import Engine, EngineAPIError, Reply, explanation
from plat.daemon.drivers.container.firewall import Firewall
from plat.errors import EngineError

log = logging.getLogger(__name__)

ISOLATE = {"isolate": "true"}


def network_name(tenant: str, daemon_id: str) -> str:
    return f"plat-{tenant}-{daemon_id}"


def is_isolated(inspected: Mapping[str, Any]) -> bool:
    """Whether a libpod network inspect document says ``isolate=true``."""
    options = inspected.get("options") or {}
    return str(options.get("isolate", "")).lower() == "true"


def _from_podman(reply: Reply) -> bool:
    """Whether an error reply is Podman's own (it names a ``cause``); Docker answers
    a libpod path with a bare 404 ("page not found")."""
    return isinstance(reply.data, dict) and "cause" in reply.data


class Made(NamedTuple):
    created: bool  # False: one of that name existed (see ``check_isolated``)
    podman: bool  # made through Podman's own API (else Docker's)
    bridge: str = ""  # the host's bridge interface of a network made, as Podman says


def bridge_of(inspected: Mapping[str, Any]) -> str:
    """The bridge interface in a libpod network document ("" when it names none)."""
    return str(inspected.get("network_interface") or "")


async def create_network(engine: Engine, name: str, labels: Mapping[str, str]) -> Made:
    """Create an isolated bridge network. Raises EngineAPIError on a refusal."""
    body = {"name": name, "driver": "bridge", "options": ISOLATE, "labels": dict(labels)}
    reply = await engine.call("POST", "/networks/create", body=body, libpod=True)
    if reply.status == 200:
        return Made(True, podman=True, bridge=bridge_of(reply.data or {}))
    if reply.status == 409:
        return Made(False, podman=True)
    if reply.status == 404 and not _from_podman(reply):
        return Made(await _create_compatible(engine, name, labels), podman=False)
    raise EngineAPIError(reply.status, explanation(reply))


async def _create_compatible(engine: Engine, name: str, labels: Mapping[str, str]) -> bool:
    """Docker: a bridge network, isolated from the others by Docker's own rules."""
    body = {"Name": name, "Driver": "bridge", "CheckDuplicate": True, "Labels": dict(labels)}
    reply = await engine.call("POST", "/networks/create", body=body)
    if reply.status == 201:
        return True
    if reply.status == 409:
        return False
    raise EngineAPIError(reply.status, explanation(reply))


async def check_isolated(engine: Engine, name: str) -> str:
    """Raise EngineError unless the network ``name`` is isolated (a network of that
    name made by hand without the option would let other networks' containers in);
    its bridge interface ("" on Docker)."""
    reply = await engine.call("GET", f"/networks/{name}/json", libpod=True)
    if reply.status == 404 and not _from_podman(reply):
        return ""  # Docker: every bridge network is isolated from the others
    if reply.status == 404:
        raise EngineAPIError(404, f"network {name} vanished as it was created")
    if reply.status != 200:
        raise EngineAPIError(reply.status, explanation(reply))
    if not is_isolated(reply.data or {}):
        raise EngineError(
            f"the container network {name} exists but is not isolated "
            "(another tenant's instances could reach this one's)",
            hint=f"remove it (`podman network rm {name}`); plat creates it again, isolated",
        )
    return bridge_of(reply.data)


async def remove_network(engine: Engine, name: str) -> bool:
    """Remove a network unless containers are attached to it (then False, quietly);
    a missing one is removed already."""
    reply = await engine.call("DELETE", f"/networks/{name}")
    if reply.status in (200, 204, 404):
        return True
    text = explanation(reply).lower()
    # Podman: 500 "... has associated containers ..."; Docker: 403 "active endpoints".
    if "associated containers" in text or "being used" in text or "active endpoints" in text:
        return False
    raise EngineAPIError(reply.status, explanation(reply))


async def daemon_networks(engine: Engine, daemon_id: str) -> list[str]:
    """The names of the networks labelled ``plat.daemon=<daemon_id>``."""
    filters = json.dumps({"label": [f"{LABEL_DAEMON}={daemon_id}"]})
    reply = await engine.call("GET", "/networks", params={"filters": filters})
    if reply.status != 200:
        raise EngineAPIError(reply.status, explanation(reply))
    return [str(entry.get("Name")) for entry in reply.data or [] if entry.get("Name")]


class TenantNetworks:
    """The networks of one daemon's tenants (and their anchors), made on first use.

    ``ensure`` remembers what it made or checked; ``forget`` drops that (the engine
    said the network is gone) so that the next ``ensure`` asks again.
    """

    def __init__(self, engine: Engine, daemon_id: str, firewall: Firewall | None = None) -> None:
        self._engine = engine
        self.daemon_id = daemon_id
        self._firewall = firewall
        self._bridges: dict[str, str] = {}  # tenant: its bridge, isolated by the firewall
        self._ready: set[str] = set()  # tenants
        self._pending: dict[str, asyncio.Future[None]] = {}
        self._podman = False  # the engine has anchors (see the module's doc)
        # Each anchored tenant's anchor start, run after its first container's own;
        # one that failed is dropped, so the tenant's next start tries again.
        self._anchors: dict[str, asyncio.Task[None]] = {}

    def name(self, tenant: str) -> str:
        return network_name(tenant, self.daemon_id)

    async def ensure(self, tenant: str, image: str, *, anchor: bool = True) -> str:
        """The name of ``tenant``'s network, created (isolated) if need be; its anchor
        (of ``image``) starts in the background, or, with ``anchor=False``, once the
        caller says its own container started (``anchor_soon``): on two cores the two
        starts side by side made a tenant's first start take 0.5 s instead of 0.34 s.
        Concurrent calls share one creation."""
        if tenant in self._ready:
            if anchor:
                self.anchor_soon(tenant, image)
            return self.name(tenant)
        pending = self._pending.get(tenant)
        if pending is None:
            pending = asyncio.ensure_future(self._make(tenant, image, anchor))
            self._pending[tenant] = pending
            pending.add_done_callback(lambda _f: self._pending.pop(tenant, None))
        # Shielded: a caller cancelled mid-way leaves the creation to the others.
        await asyncio.shield(pending)
        return self.name(tenant)

    async def _make(self, tenant: str, image: str, anchor: bool) -> None:
        name = self.name(tenant)
        made = await create_network(
            self._engine, name, {LABEL_TENANT: tenant, LABEL_DAEMON: self.daemon_id}
        )
        bridge = made.bridge if made.created else await check_isolated(self._engine, name)
        if made.created:
            log.info("created isolated network %s for tenant %s", name, tenant)
        if self._firewall is not None and bridge and await self._firewall.isolate(bridge):
            self._bridges[tenant] = bridge
        self._podman = made.podman
        self._ready.add(tenant)
        if anchor:
            self.anchor_soon(tenant, image)

    def anchor_soon(self, tenant: str, image: str) -> None:
        """Start ``tenant``'s anchor (of ``image``) in the background, unless it has one."""
        if self._podman and tenant not in self._anchors:
            self._anchors[tenant] = asyncio.create_task(self._anchor(tenant, image))

    async def _anchor(self, tenant: str, image: str) -> None:
        try:
            await start_anchor(self._engine, self.name(tenant), tenant, self.daemon_id, image)
        except EngineError as exc:
            if self._anchors.get(tenant) is asyncio.current_task():
                del self._anchors[tenant]
            log.warning(
                "no anchor on network %s: isolation may lapse when its last instance stops: %s",
                self.name(tenant),
                exc.message,
            )

    async def anchored(self) -> None:
        """Wait for the anchors being started to have started (or failed); at once
        when none is (every stop and removal asks)."""
        starting = [task for task in self._anchors.values() if not task.done()]
        if starting:
            await asyncio.gather(*map(asyncio.shield, starting))

    def forget(self, tenant: str) -> None:
        self._ready.discard(tenant)
        self._anchors.pop(tenant, None)

    async def remove(self, tenant: str, *, restore: bool = True) -> bool:
        """Remove ``tenant``'s network and anchor; False (quietly) while other
        containers use it. ``restore``: restart another anchor afterwards, which puts
        back the isolation the removal took from every network."""
        name = self.name(tenant)
        anchoring = self._anchors.get(tenant)
        if anchoring is not None:
            await asyncio.shield(anchoring)
        if await used_by_others(self._engine, name):
            log.info("network %s kept: containers are still attached", name)
            return False
        # From here a start of the tenant makes the network (and anchor) anew.
        self._ready.discard(tenant)
        self._anchors.pop(tenant, None)
        bridge = self._bridges.pop(tenant, "")
        await remove_anchor(self._engine, name)
        if not await remove_network(self._engine, name):  # a start attached one meanwhile
            log.info("network %s kept: a container was attached as it was removed", name)
            return False
        if self._firewall is not None and bridge:  # a later network may take its name
            await self._firewall.forget(bridge)
        if restore:
            await self.restore()
        return True

    async def restore(self) -> None:
        """Restart one anchor that stays (if any), whose start puts back the jump to
        the isolation chains that a complete teardown took; never raises."""
        for tenant in list(self._anchors):
            try:
                if await restart_anchor(self._engine, self.name(tenant)):
                    return
            except EngineError as exc:
                log.warning("could not restore isolation: %s", exc.message)

    async def remove_unused(self) -> None:
        """Remove the networks (and anchors) this object made or checked that no
        instance uses (at close: the next start makes them again); never raises."""
        removed = False
        for tenant in sorted(self._ready | set(self._anchors)):
            try:
                removed = await self.remove(tenant, restore=False) or removed
            except EngineError as exc:
                log.info("could not remove network %s: %s", self.name(tenant), exc.message)
        if removed:
            await self.restore()
