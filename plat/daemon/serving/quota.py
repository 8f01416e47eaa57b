"""Tenant quotas: how many more instances a tenant's functions may start.

A tenant may be limited in instances and in memory (the sum of its instances'
``resources.memory``). Instances that serve or are starting count; draining ones
do not (they are on their way out, and a redeploy must not be refused because
its old version still drains). A quota is checked before every start: a deploy,
an on-demand start, the autoscaler, a replacement. It never stops what runs: a
lowered quota only refuses the next start.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

from plat.daemon.serving.function_state import FunctionState
from plat.errors import PlatError
from plat.tenancy import split_key, tenant_of
from plat.units import format_size


class Limits(NamedTuple):
    max_instances: int | None
    max_memory: int | None


class Usage(NamedTuple):
    instances: int
    memory: int


class QuotaExceeded(PlatError):
    status = 429
    code = "quota_exceeded"


LimitsOf = Callable[[str], Limits | None]


class Quotas:
    """Checks starts against each tenant's limits (``limits_of(tenant)``, None: none)."""

    def __init__(self, functions: Mapping[str, FunctionState], limits_of: LimitsOf) -> None:
        self.functions = functions
        self.limits_of = limits_of

    def usage(self, tenant: str, *, without: str | None = None) -> Usage:
        """What ``tenant``'s functions hold (serving and starting), leaving out the
        function ``without``."""
        instances = memory = 0
        for fs in self.functions.values():
            if fs.name == without or tenant_of(fs.name) != tenant:
                continue
            count = len(fs.instances) + fs.starts
            instances += count
            memory += count * fs.manifest.resources.memory
        return Usage(instances, memory)

    def room(self, fs: FunctionState, wanted: int) -> int:
        """How many of ``wanted`` new instances of ``fs`` fit in its tenant's quota."""
        tenant = tenant_of(fs.name)
        limits = self.limits_of(tenant)
        if limits is None or wanted <= 0:
            return max(wanted, 0)
        used = self.usage(tenant)
        room = wanted
        if limits.max_instances is not None:
            room = min(room, limits.max_instances - used.instances)
        if limits.max_memory is not None:
            each = fs.manifest.resources.memory
            room = min(room, (limits.max_memory - used.memory) // each)
        return max(room, 0)

    def check_deploy(self, name: str, count: int, memory: int) -> None:
        """Raises QuotaExceeded when ``count`` instances of ``memory`` bytes each for
        function ``name`` (replacing its current ones) exceed its tenant's quota."""
        tenant = tenant_of(name)
        limits = self.limits_of(tenant)
        if limits is None:
            return
        used = self.usage(tenant, without=name)
        if limits.max_instances is not None and used.instances + count > limits.max_instances:
            raise QuotaExceeded(
                f"tenant {tenant!r} may run {limits.max_instances} instance(s); "
                f"{used.instances} run and this deploy needs {count}",
                hint="lower scale.min, remove a function, or raise the tenant's --max-instances",
            )
        if limits.max_memory is not None and used.memory + count * memory > limits.max_memory:
            raise QuotaExceeded(
                f"tenant {tenant!r} may use {format_size(limits.max_memory)} of memory; "
                f"{format_size(used.memory)} is in use and this deploy needs "
                f"{count} x {format_size(memory)}",
                hint="lower resources.memory or scale.min, or raise the tenant's --max-memory",
            )

    def refusal(self, fs: FunctionState) -> QuotaExceeded:
        """The error for a call that found no instance and no room to start one."""
        name, tenant = split_key(fs.name)
        return QuotaExceeded(
            f"tenant {tenant!r} is at its quota: no instance of {name} "
            "can start until another stops",
            hint="retry later, or raise the tenant's quota",
        )
