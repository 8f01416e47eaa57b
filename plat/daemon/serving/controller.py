"""The function controller: which instances each function has, and traffic to them.

Traffic only reaches an instance after its readiness probe passed. A new version
starts, gets ready and takes traffic before the old instances drain and stop
(blue/green). The autoscaler moves each function's target; on-demand starts answer
queued calls at once. An instance a call found failing (``suspect``, ``timed_out``)
is checked and replaced when it is down or wedged; the watchdog replaces instances
that died. One instance's life (start, ready, drain, stop) is ``Instances``'.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections.abc import Callable

from plat.api import InstanceCount, ScalerState
from plat.daemon.collector import LogCollector
from plat.daemon.drivers.base import Backend
from plat.daemon.drivers.versions import Release
from plat.daemon.serving.autoscaler import Autoscaler, ScalerSettings
from plat.daemon.serving.function_state import FunctionState, NoCapacity
from plat.daemon.serving.instance import Instance, Start
from plat.daemon.serving.instances import EventSink, InstanceFailed, Instances, instance_spec
from plat.daemon.serving.pool import WarmPool
from plat.daemon.serving.quota import LimitsOf, Quotas
from plat.daemon.serving.reconcile import ResolveSecrets, reconcile
from plat.daemon.serving.repair import Repair
from plat.daemon.store import Store
from plat.daemon.tasks import TaskGroup
from plat.errors import NotFoundError, PlatError, no_function
from plat.manifest import Manifest

log = logging.getLogger(__name__)

__all__ = ["Controller", "EventSink", "InstanceFailed"]


class Controller:
    def __init__(
        self,
        store: Store,
        backend: Backend,
        *,
        ready_timeout: float = 30.0,
        drain_timeout: float = 30.0,
        watch_interval: float = 2.0,
        collector: LogCollector | None = None,
        scaler: ScalerSettings | None = None,
        autoscale_tick: float = 1.0,
        queue_limit: int = 256,
        queue_timeout: float = 30.0,
        pool: WarmPool | None = None,
        limits_of: LimitsOf | None = None,
        resolve_secrets: ResolveSecrets | None = None,
    ) -> None:
        """``limits_of(tenant)``: the tenant's quota (None: unlimited), checked before
        every start. ``resolve_secrets``: a function's secrets, read again at start-up."""
        self.resolve_secrets = resolve_secrets
        self.store = store
        self.backend = backend
        self.pool = pool
        self.watch_interval = watch_interval
        self.scaler_settings = scaler or ScalerSettings()
        self.autoscale_tick = autoscale_tick
        self.queue_limit = queue_limit
        self.queue_timeout = queue_timeout
        self.instances = Instances(
            store,
            backend,
            pool=pool,
            collector=collector,
            ready_timeout=ready_timeout,
            drain_timeout=drain_timeout,
        )
        self.functions: dict[str, FunctionState] = {}
        self.quotas = Quotas(self.functions, limits_of or (lambda tenant: None))
        self.tasks = TaskGroup(log)
        self.repair = Repair(self.functions, self.instances, backend, self.ensure, self.tasks)
        self._loops: list[asyncio.Task[None]] = []

    @property
    def on_instance_stopped(self) -> list[Callable[[Instance], None]]:
        return self.instances.on_stopped

    async def start(self) -> None:
        """Reconcile with the backend, then watch instances and autoscale. Idempotent."""
        if self._loops:
            return
        found = await reconcile(
            self.store, self.backend, self.instances, self.scaler_settings, self.resolve_secrets
        )
        self.functions.update((fs.name, fs) for fs in found)
        for fs in found:
            self.ensure(fs)
        self._sync_pool(*(fs.release for fs in self.functions.values()))
        self._loops = [
            asyncio.create_task(self.repair.watch(self.watch_interval), name="controller-watchdog"),
            asyncio.create_task(self._autoscale(), name="autoscaler"),
        ]

    async def close(self, *, stop_instances: bool = True) -> None:
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops = []
        for fs in self.functions.values():
            fs.fail_waiters(NoCapacity("the daemon is shutting down"))
        await self.tasks.close()
        serving = [i for fs in self.functions.values() for i in fs.instances]
        await self.instances.close(stop=serving if stop_instances else [])
        if stop_instances:
            for fs in self.functions.values():
                fs.instances.clear()

    def get(self, name: str) -> FunctionState:
        """The function's state; NotFoundError when it has none."""
        fs = self.functions.get(name)
        if fs is None:
            raise no_function(name)
        return fs

    def instance_states(self) -> list[InstanceCount]:
        """(function, state, count) of every instance, for the metrics."""
        counts: dict[tuple[str, str], int] = {}
        for fs in self.functions.values():
            for inst in fs.instances:
                key = (fs.name, inst.state)
                counts[key] = counts.get(key, 0) + 1
            if fs.starting:
                counts[(fs.name, "starting")] = len(fs.starting)
        for name, count in self.instances.draining_counts().items():
            counts[(name, "draining")] = counts.get((name, "draining"), 0) + count
        return [InstanceCount(fn, state, n) for (fn, state), n in counts.items()]

    def live_instances(self, name: str) -> list[Instance]:
        """Every instance of ``name`` the controller holds: starting, serving, draining
        (the store's rows are a best-effort copy of this)."""
        fs = self.functions.get(name)
        held: list[Instance] = []
        if fs is not None:
            held += fs.instances
            held += [s.instance for s in fs.starting if s.instance is not None]
        return held + self.instances.held(name)

    def _sync_pool(self, *prepare: Release) -> None:
        """Keep the pool warm for the runtimes in use; unpack ``prepare`` for later claims."""
        if self.pool is None:
            return
        self.pool.want(fs.release for fs in self.functions.values())
        for release in prepare:
            self.pool.prepare(release)

    async def _start(
        self, fs: FunctionState, release: Release, on_event: EventSink | None = None
    ) -> Instance:
        start = Start(release)
        fs.starting.add(start)
        try:
            return await self.instances.start(start, on_event)
        finally:
            fs.starting.discard(start)

    # deploy / remove

    async def deploy(
        self, release: Release, source_dir: str, on_event: EventSink | None = None
    ) -> FunctionState:
        """Start the new release, switch traffic to it once ready, then drain the old one.

        Raises InstanceFailed (the old version keeps serving) when it never becomes ready.
        """
        name = release.manifest.name
        fs = self.functions.get(name)
        fresh = fs is None
        if fs is None:
            fs = self.functions[name] = FunctionState(
                name, release, scaler=Autoscaler(self.scaler_settings)
            )
        async with fs.lock:
            scale = release.manifest.scale
            # Keep today's capacity; always start one, so a deploy is proven ready.
            count = max(1, min(scale.max, max(scale.min, len(fs.ready_instances()))))
            try:
                self.quotas.check_deploy(name, count, release.manifest.resources.memory)
                new = await asyncio.gather(
                    *(self._start(fs, release, on_event) for _ in range(count))
                )
            except BaseException:
                if fresh and not fs.instances:
                    self.functions.pop(name, None)
                raise
            old = fs.instances
            fs.release = release
            fs.instances = list(new)
            fs.set_target(count)
            # A deploy is activity: a min-0 function keeps the instance that proved it
            # for its idle period, rather than losing it at the next tick (the first
            # call after a deploy was a cold start).
            fs.scaler.active_at(time.monotonic())
            fs.dispatch()
            await self.store.upsert_function(
                name, release.manifest.to_dict(), source_dir, release.version
            )
            for inst in old:
                self.instances.drain_soon(inst, f"version {release.version} replaced it")
        self._sync_pool(release)
        return fs

    async def remove(self, name: str) -> None:
        fs = self.functions.pop(name, None)
        if fs is None and await self.store.get_function(name) is None:
            raise no_function(name)
        if fs is not None:
            fs.fail_waiters(NotFoundError(f"function {name!r} was removed"))
            async with fs.lock:
                await asyncio.gather(
                    *(
                        self.instances.stop(i, "the function was removed", timeout=2.0)
                        for i in fs.instances
                    )
                )
                fs.instances.clear()
        await self.store.delete_function(name)
        try:
            await self.backend.unprepare(name)
        except PlatError as exc:  # the engine is away: its standby is swept later
            log.warning("could not drop the standby of %s: %s", name, exc)
        self._sync_pool()

    # traffic

    async def acquire(self, name: str) -> tuple[Instance, float]:
        """An instance of ``name`` with a slot taken for the caller; pair with release().

        Also returns how long the request waited because no instance was ready (a
        cold start); 0.0 otherwise. Raises NotFoundError, TooManyRequests (the
        queue is full) or NoCapacity (no slot within the queue timeout).
        """
        fs = self.get(name)
        fs.last_request = time.monotonic()
        inst = fs.take()
        if inst is not None:
            return inst, 0.0
        cold = not fs.ready_instances()
        started = time.monotonic()
        self._on_demand(fs, extra=1)
        if fs.capacity == 0:  # nothing runs, and the tenant's quota let nothing start
            raise self.quotas.refusal(fs)
        inst = await fs.wait_for_slot(queue_limit=self.queue_limit, timeout=self.queue_timeout)
        return inst, (time.monotonic() - started) if cold else 0.0

    def release(self, inst: Instance) -> None:
        fs = self.functions.get(inst.function)
        if fs is not None and fs.holds(inst):
            fs.release_slot(inst)
        elif inst.inflight > 0:  # its function was removed (or replaced) meanwhile
            inst.inflight -= 1
            if inst.inflight <= 0:
                inst.idle.set()

    # scaling

    def _on_demand(self, fs: FunctionState, extra: int = 0) -> None:
        """Start instances at once when queued demand exceeds what is ready or starting."""
        have = fs.capacity
        if have >= fs.manifest.scale.max:  # all there is is serving or starting
            return
        demand = fs.inflight() + len(fs.waiters) + extra
        need = -(-demand // fs.concurrency)  # ceil
        if have == 0 and demand > 0:
            need = max(need, 1)
        more = min(fs.manifest.scale.max, need) - have
        if more > 0:
            fs.set_target(max(fs.target, have + more))
            fs.scaler.burst(time.monotonic())
            self._scale_up(fs, more)

    def _scale_up(self, fs: FunctionState, count: int) -> None:
        """Start ``count`` instances, as many as the tenant's quota leaves room for;
        calls that wait with no instance and no room are refused (429)."""
        allowed = self.quotas.room(fs, count)
        if allowed == 0 and fs.capacity == 0:
            fs.fail_waiters(self.quotas.refusal(fs))
        for _ in range(allowed):
            start = Start(fs.release)
            fs.starting.add(start)
            self.tasks.spawn(self._scale_up_one(fs, start), name=f"scale-up-{fs.name}")

    async def _scale_up_one(self, fs: FunctionState, start: Start) -> None:
        try:
            inst = await self.instances.start(start)
        except PlatError as exc:
            log.error("could not start an instance of %s: %s", fs.name, exc)
            if not fs.ready_instances() and fs.starts <= 1:
                fs.fail_waiters(exc if isinstance(exc, InstanceFailed) else NoCapacity(exc.message))
            return
        finally:
            fs.starting.discard(start)
        if self.functions.get(fs.name) is not fs or not fs.release.same_code(start.release):
            await self.instances.stop(inst, "started for a version or function that is gone")
            return
        fs.instances.append(inst)
        fs.dispatch()

    def rescale(self, name: str, manifest: Manifest) -> FunctionState:
        """Apply new scale settings to a running function now (no new version)."""
        fs = self.get(name)
        fs.release = dataclasses.replace(fs.release, manifest=manifest)
        scale = manifest.scale
        current = fs.capacity
        fs.set_target(max(scale.min, min(scale.max, current)))
        if fs.target > current:
            self._scale_up(fs, fs.target - current)
        elif fs.target < current:
            self._scale_down(fs, current - fs.target)
        fs.dispatch()
        return fs

    def _scale_down(self, fs: FunctionState, count: int) -> None:
        candidates = sorted(fs.ready_instances(), key=lambda i: i.inflight)[:count]
        for inst in candidates:
            fs.instances.remove(inst)
            self.tasks.spawn(self._scale_in(fs, inst), name=f"scale-down-{inst.id}")

    async def _scale_in(self, fs: FunctionState, inst: Instance) -> None:
        """Drain ``inst``; when that was the function's last instance, prepare its
        next start ahead (a standby, see the backend) unless the pool serves it."""
        await self.instances.drain(inst, "the autoscaler scaled the function down")
        if (
            self.functions.get(fs.name) is fs
            and not fs.instances
            and not fs.starting
            and not fs.lock.locked()
            and (self.pool is None or not self.pool.serves(fs.release))
        ):
            await self.backend.prepare(instance_spec(fs.release), secrets.token_hex(4))
            if self.functions.get(fs.name) is not fs:  # removed meanwhile
                await self.backend.unprepare(fs.name)

    def autoscale_once(self, now: float) -> None:
        """One autoscaler tick over every function (public for tests)."""
        for fs in list(self.functions.values()):
            if fs.lock.locked():
                continue  # a deploy or replacement is changing the instances
            scale = fs.manifest.scale
            fs.scaler.observe(now, fs.inflight() + len(fs.waiters))
            if fs.last_request is not None:
                fs.scaler.active_at(fs.last_request)
            current = fs.capacity
            decision = fs.scaler.decide(
                now, current, minimum=scale.min, maximum=scale.max, concurrency=fs.concurrency
            )
            fs.set_target(decision.desired, decision)
            if decision.desired > current:
                self._scale_up(fs, decision.desired - current)
            elif decision.desired < current and fs.starts == 0:
                self._scale_down(fs, current - decision.desired)

    async def _autoscale(self) -> None:
        while True:
            await asyncio.sleep(self.autoscale_tick)
            try:
                self.autoscale_once(time.monotonic())
            except Exception:
                log.exception("autoscaler tick failed")

    def scaler_states(self) -> list[ScalerState]:
        """Each function's autoscaler, for the metrics."""
        out = []
        for fs in self.functions.values():
            d = fs.decision
            observed = d.observed_stable if d else 0.0
            ready = len(fs.ready_instances())
            out.append(ScalerState(fs.name, fs.target, ready, observed, bool(d and d.panicking)))
        return out

    # repair (see Repair)

    def suspect(self, inst: Instance) -> None:
        """The gateway could not talk to ``inst``: no traffic until a check clears it."""
        self.repair.suspect(inst)

    def timed_out(self, inst: Instance) -> None:
        """A call on ``inst`` outran its timeout: replaced if it is wedged."""
        self.repair.timed_out(inst)

    def ensure(self, fs: FunctionState) -> None:
        """Start what is missing to reach the function's target (after a death, at start)."""
        if self.functions.get(fs.name) is not fs:
            return
        missing = fs.target - len(fs.instances) - fs.starts
        if fs.waiters:
            missing = max(missing, 1 - fs.capacity)
        if missing > 0:
            self._scale_up(fs, missing)
