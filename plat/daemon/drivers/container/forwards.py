"""Port forwards netavark left behind, removed.

A published port is a DNAT rule: ``OUTPUT``/``PREROUTING`` jump to
``NETAVARK-HOSTPORT-DNAT``, which has one rule per published port of a container
(its comment names the container's id) jumping to the network's
``NETAVARK-DN-<hash>`` chain, which rewrites the destination to the container's
address. netavark removes them when the container goes, unless its teardown
fails: measured here (netavark 1.4), a container whose network namespace is gone
before it is removed (``open container netns: no such file or directory``)
leaves them all. The leftover rule then takes every later connection to
127.0.0.1 on that port to an address nobody holds ("No route to host", after
~3 s): the next instance plat publishes there is unreachable, and so is any
other program that listens on it. They accumulate; nothing else removes them.

``StaleForwards.sweep`` removes the forwards of containers the engine no longer
has. A forward is removed only when two sweeps (seconds apart) found it stale, so
that a teardown in flight is netavark's to finish. It reads the rules before it
lists the containers: a rule it read belongs to a container made before, which
the listing names unless it is gone. Only with root, ``iptables`` and rootful
Podman (plat's own engine, whose containers own these rules); a host whose
netavark uses nftables has no such chain, and nothing is done.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shlex
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from plat.daemon.drivers.container.firewall import iptables

log = logging.getLogger(__name__)

CHAIN = "NETAVARK-HOSTPORT-DNAT"
_ID = re.compile(r"\bid: ([0-9a-f]{64})\b")


@dataclass(frozen=True)
class Forward:
    """One published port of one container: its rule in CHAIN."""

    container: str
    port: int
    chain: str  # the network's NETAVARK-DN-* chain it jumps to
    rule: tuple[str, ...]  # the rule's arguments after ``-A CHAIN``


def _arguments(line: str, chain: str) -> tuple[str, ...] | None:
    """A ``-S`` line of ``chain``'s rules as arguments after ``-A chain``."""
    try:
        words = shlex.split(line)
    except ValueError:
        return None
    if words[:2] != ["-A", chain]:
        return None
    return tuple(words[2:])


def _option(rule: tuple[str, ...], name: str) -> str | None:
    for i, word in enumerate(rule[:-1]):
        if word == name:
            return rule[i + 1]
    return None


def parse_forwards(listing: str) -> list[Forward]:
    """The forwards of ``iptables -t nat -S NETAVARK-HOSTPORT-DNAT``'s output."""
    found = []
    for line in listing.splitlines():
        rule = _arguments(line, CHAIN)
        if rule is None:
            continue
        match = _ID.search(line)
        port, target = _option(rule, "--dport"), _option(rule, "-j")
        if match and port and port.isdigit() and target:
            found.append(Forward(match.group(1), int(port), target, rule))
    return found


def network_rules(listing: str, chain: str, port: int) -> list[tuple[str, ...]]:
    """``chain``'s rules (``iptables -t nat -S chain``) for ``port``, in order."""
    rules = []
    for line in listing.splitlines():
        rule = _arguments(line, chain)
        if rule is not None and _option(rule, "--dport") == str(port):
            rules.append(rule)
    return rules


def destination(rule: tuple[str, ...]) -> str | None:
    """The address a DNAT rule sends to (None for the chain's other rules)."""
    target = _option(rule, "--to-destination")
    if target is None:
        return None
    host, _, _ = target.rpartition(":")
    return (host or target).strip("[]")


def removals(
    stale: list[Forward],
    live: list[Forward],
    chain_rules: list[tuple[str, ...]],
    live_addresses: set[str],
) -> list[tuple[str, ...]]:
    """Which of one port's rules in one network chain go with its ``stale`` forwards:
    its DNAT rules to addresses no live forward's container holds, and the copies
    of its other rules beyond one per live forward (netavark adds the same ones for
    every container that publishes the port on the network)."""
    keep = len(live)
    if not stale:
        return []
    doomed: list[tuple[str, ...]] = []
    seen: dict[tuple[str, ...], int] = {}
    for rule in chain_rules:
        address = destination(rule)
        if address is not None:
            if keep == 0 or address not in live_addresses:
                doomed.append(rule)
            continue
        seen[rule] = seen.get(rule, 0) + 1
        if seen[rule] > keep:
            doomed.append(rule)
    return doomed


class StaleForwards:
    def __init__(self, iptables: str | None = None) -> None:
        self.iptables = iptables or shutil.which("iptables")
        self._suspects: set[Forward] = set()
        # Something may have left a forward: true at start (a daemon before this one)
        # and after every removal; a sweep with nothing to do costs nothing.
        self._due = True
        self._lock = asyncio.Lock()
        self._warned = False

    @property
    def available(self) -> bool:
        return self.iptables is not None and os.geteuid() == 0

    def touched(self) -> None:
        """A container went: its forwards may be left; the next sweeps look."""
        self._due = True

    async def _run(self, *args: str) -> tuple[int, str]:
        assert self.iptables is not None
        code, out, err = await iptables(self.iptables, "-t", "nat", *args)
        return code, out if code == 0 else err

    async def sweep(
        self,
        containers: Callable[[], Awaitable[set[str]]],
        addresses: Callable[[str], Awaitable[set[str]]],
    ) -> list[Forward]:
        """Remove the forwards found stale by this sweep and the one before; the
        removed ones. ``containers``: the ids of every container the engine has;
        ``addresses``: a container's addresses on its networks."""
        if not (self._due or self._suspects) or not self.available:
            return []
        async with self._lock:
            self._due = False
            code, listing = await self._run("-S", CHAIN)
            if code != 0:  # no published port since boot, or nftables: nothing of netavark's
                self._suspects.clear()
                return []
            forwards = parse_forwards(listing)
            try:
                ids = await containers()
            except BaseException:  # the engine is away: look again at the next sweep
                self._due = True
                raise
            stale = {f for f in forwards if f.container not in ids}
            confirmed = stale & self._suspects
            self._suspects = stale - confirmed
            if confirmed:
                await self._remove(confirmed, [f for f in forwards if f not in stale], addresses)
            return sorted(confirmed, key=lambda f: (f.port, f.container))

    async def _remove(
        self,
        stale: set[Forward],
        live: list[Forward],
        addresses: Callable[[str], Awaitable[set[str]]],
    ) -> None:
        for forward in sorted(stale, key=lambda f: f.port):
            log.warning(
                "removing the port forward netavark left for container %s: 127.0.0.1:%d "
                "led to an address nobody holds",
                forward.container[:12],
                forward.port,
            )
            await self._delete(CHAIN, forward.rule)
        for chain, port in sorted({(f.chain, f.port) for f in stale}):
            same = [f for f in live if f.chain == chain and f.port == port]
            held: set[str] = set()
            for forward in same:
                held |= await addresses(forward.container)
            code, listing = await self._run("-S", chain)
            if code != 0:
                continue
            gone = [f for f in stale if f.chain == chain and f.port == port]
            for rule in removals(gone, same, network_rules(listing, chain, port), held):
                await self._delete(chain, rule)

    async def _delete(self, chain: str, rule: tuple[str, ...]) -> None:
        code, out = await self._run("-D", chain, *rule)
        if code != 0 and not self._warned:
            self._warned = True
            log.warning("could not remove a stale port forward from %s: %s", chain, out.strip())
