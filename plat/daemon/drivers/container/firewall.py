"""plat's own firewall rules between its tenant networks, beside netavark's.

Podman's ``isolate`` option makes netavark add rules that drop traffic between
isolated bridges. Measured on these hosts (netavark 1.4, Podman 4.3), those
rules do not survive concurrent network changes: while other networks are set
up and torn down (another daemon, a test, ``podman network rm``), a tenant's
instance could reach another tenant's instance again, because netavark removes
a bridge's rules when the last container on it goes and rewrites its chains
as networks come and go. Isolation must not depend on that, so plat keeps two
chains of its own that netavark never touches:

    FORWARD          -j PLAT-ISOLATION-1                      (first rule)
    PLAT-ISOLATION-1 -i <bridge> ! -o <bridge> -j PLAT-ISOLATION-2   per bridge
    PLAT-ISOLATION-2 -o <bridge> -j DROP                              per bridge

for every bridge of a plat tenant network on the host (every daemon adds its
own; rules are only added and removed one by one, never flushed, so daemons
share the chains safely). Traffic from a tenant network to anywhere else (the
host, the internet) passes; traffic from one plat bridge to another is
dropped. It needs root and ``iptables``; without them ``available`` is False,
the daemon says so once, and netavark's rules are all there is.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil

log = logging.getLogger(__name__)

FIRST = "PLAT-ISOLATION-1"
SECOND = "PLAT-ISOLATION-2"


def _rules(bridge: str) -> list[tuple[str, list[str]]]:
    return [
        (FIRST, ["-i", bridge, "!", "-o", bridge, "-j", SECOND]),
        (SECOND, ["-o", bridge, "-j", "DROP"]),
    ]


async def iptables(binary: str, *args: str) -> tuple[int, str, str]:
    """Run ``binary`` (iptables) with ``args``, waiting up to 5 s for the xtables
    lock: (its exit code, its output, its errors)."""
    proc = await asyncio.create_subprocess_exec(
        binary,
        "-w",
        "5",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


class Firewall:
    def __init__(self, iptables: str | None = None) -> None:
        self.iptables = iptables or shutil.which("iptables")
        self._lock = asyncio.Lock()
        self._ready = False
        self._warned = False

    @property
    def available(self) -> bool:
        return self.iptables is not None and os.geteuid() == 0

    async def _run(self, *args: str) -> tuple[int, str]:
        assert self.iptables is not None
        code, out, err = await iptables(self.iptables, *args)
        return code, (out + err).strip()

    async def _ensure(self, chain: str, rule: list[str]) -> None:
        code, _ = await self._run("-C", chain, *rule)
        if code != 0:
            code, out = await self._run("-A", chain, *rule)
            if code != 0:
                raise OSError(f"iptables could not add {chain} {' '.join(rule)}: {out}")

    async def _chains(self) -> None:
        if self._ready:
            return
        for chain in (FIRST, SECOND):
            code, out = await self._run("-N", chain)
            if code != 0 and "exists" not in out:
                raise OSError(f"iptables could not make chain {chain}: {out}")
        await self._jump_first()
        self._ready = True

    async def _jump_first(self) -> None:
        """FORWARD jumps to plat's chain before any rule that accepts (netavark's
        NETAVARK_FORWARD accepts everything from a network's subnet)."""
        code, out = await self._run("-S", "FORWARD")
        if code != 0:
            raise OSError(f"iptables could not list FORWARD: {out}")
        rules = [line for line in out.splitlines() if line.startswith("-A FORWARD")]
        ours = f"-A FORWARD -j {FIRST}"
        if ours in rules:
            before = rules[: rules.index(ours)]
            if not any("ACCEPT" in line or "NETAVARK_FORWARD" in line for line in before):
                return
            while (await self._run("-D", "FORWARD", "-j", FIRST))[0] == 0:
                pass
        code, out = await self._run("-I", "FORWARD", "1", "-j", FIRST)
        if code != 0:
            raise OSError(f"iptables could not add the jump to {FIRST}: {out}")

    async def isolate(self, bridge: str) -> bool:
        """Drop traffic between ``bridge`` and every other plat bridge; idempotent.
        False when this host gives plat no firewall (one warning)."""
        if not self.available:
            self._warn("plat's firewall rules need root and iptables")
            return False
        async with self._lock:
            try:
                await self._chains()
                # the jump may have moved or gone since (a firewall reload): put it back
                await self._jump_first()
                for chain, rule in _rules(bridge):
                    await self._ensure(chain, rule)
            except OSError as exc:
                self._warn(str(exc))
                return False
        return True

    async def forget(self, bridge: str) -> None:
        """Remove ``bridge``'s rules (its network is gone); idempotent."""
        if not self.available or not self._ready:
            return
        async with self._lock:
            for chain, rule in _rules(bridge):
                while (await self._run("-D", chain, *rule))[0] == 0:
                    pass

    def _warn(self, why: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning(
                "tenant networks rely on netavark's isolation alone (%s); concurrent network "
                "changes on this host can open them to each other",
                why,
            )
