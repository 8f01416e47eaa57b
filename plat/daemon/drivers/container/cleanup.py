"""Removing every container of a daemon that is gone, or could not close in time,
then its tenants' networks (those no other container still uses).

Blocking, for ``plat daemon stop``: through the Engine API when it answers, else
through the podman CLI (the daemon's own ``podman system service`` went with it;
its containers did not).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import subprocess
from collections.abc import Mapping
from typing import Any

from plat.daemon.drivers.base import LABEL_DAEMON
from plat.daemon.drivers.container.anchors import LABEL_ANCHOR, daemon_anchors
from plat.daemon.drivers.container.engine import Engine, EngineAPIError
from plat.daemon.drivers.container.holders import LABEL_HOLDER
from plat.daemon.drivers.container.networks import daemon_networks, remove_network
from plat.errors import EngineError

log = logging.getLogger(__name__)


def remove_all(endpoint: str, daemon_id: str, timeout: float = 30.0) -> tuple[list[str], list[str]]:
    """Remove every container labelled ``plat.daemon=<daemon_id>``, running or not
    (``podman rm -f``), then its networks' anchors and the networks labelled so (a
    network still in use is left); returns the names of the containers removed and
    of those still there.

    Blocking (it runs its own event loop: call it from a thread or the CLI). Raises
    EngineError when the engine cannot be reached.
    """
    return asyncio.run(_remove_all(endpoint, daemon_id, timeout))


def _names(entry: Mapping[str, Any]) -> str:
    return ",".join(n.lstrip("/") for n in entry.get("Names") or []) or str(entry.get("Id"))


async def _remove_all(endpoint: str, daemon_id: str, timeout: float) -> tuple[list[str], list[str]]:
    filters = {"label": [f"{LABEL_DAEMON}={daemon_id}"]}
    holders = {"label": [f"{LABEL_HOLDER}={daemon_id}"]}
    async with Engine(endpoint, timeout=timeout) as engine:
        removed = []
        # The instances, then the holders of their networks (the engine refuses the
        # other order).
        for entry in [*await engine.containers(filters), *await engine.containers(holders)]:
            try:
                await engine.remove(str(entry["Id"]), volumes=True)
            except EngineAPIError as exc:  # named in ``remaining`` below
                log.warning("removing %s: %s", _names(entry), exc.explanation)
                continue
            removed.append(_names(entry))
        remaining = [_names(entry) for entry in await engine.containers(filters)]
        remaining += [_names(entry) for entry in await engine.containers(holders)]
        if not remaining:  # else the networks stay, anchored, with what is left
            await _remove_networks(engine, daemon_id)
    return removed, remaining


async def _remove_networks(engine: Engine, daemon_id: str) -> None:
    """Remove a daemon's anchors, then its networks (one in use by another is left)."""
    try:
        for anchor in await daemon_anchors(engine, daemon_id):
            await engine.remove(anchor)
        for network in await daemon_networks(engine, daemon_id):
            await remove_network(engine, network)
    except EngineAPIError as exc:
        log.warning("removing the networks of daemon %s: %s", daemon_id, exc.explanation)


def remove_all_podman(daemon_id: str, podman: str = "podman") -> tuple[list[str], list[str]]:
    """``remove_all`` through the podman CLI, for when no Engine API answers.
    Raises EngineError when podman is missing or fails."""
    exe = shutil.which(podman)
    if exe is None:
        raise EngineError("podman is not installed", hint="run `plat doctor`")
    listing = [exe, "ps", "-a", "--filter", f"label={LABEL_DAEMON}={daemon_id}"]
    listing += ["--format", "{{.Names}}"]
    holding = [exe, "ps", "-a", "--filter", f"label={LABEL_HOLDER}={daemon_id}"]
    holding += ["--format", "{{.Names}}"]

    def run(cmd: list[str]) -> list[str]:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise EngineError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip()[-500:]}")
        return [line for line in proc.stdout.split() if line]

    found = run(listing)
    if found:
        with contextlib.suppress(EngineError):  # what stays is named by the listing below
            run([exe, "rm", "-f", "-t", "0", *found])
    held = run(holding)  # after the instances in their namespaces
    if held:
        with contextlib.suppress(EngineError):
            run([exe, "rm", "-f", "-t", "0", *held])
    found += held
    remaining = run(listing) + run(holding)
    anchors = run([exe, "ps", "-aq", "--filter", f"label={LABEL_ANCHOR}={daemon_id}"])
    if anchors:
        with contextlib.suppress(EngineError):
            run([exe, "rm", "-f", "-t", "0", *anchors])
    networks = run([exe, "network", "ls", "-q", "--filter", f"label={LABEL_DAEMON}={daemon_id}"])
    for network in networks:  # one at a time: one still in use must not keep the others
        with contextlib.suppress(EngineError):
            run([exe, "network", "rm", network])
    return [name for name in found if name not in remaining], remaining
