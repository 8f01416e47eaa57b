"""The function controller: instances per function, readiness, replacement, blue/green.

Traffic only reaches an instance after its readiness probe passed. A new version
starts, gets ready and takes traffic before the old instances drain and stop. A
watchdog replaces instances that died. On start, the controller reconciles the
instances the backend holds (by label) with what the store says.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator

import aiohttp

from plat.daemon.collector import LogCollector
from plat.daemon.drivers.base import Backend, InstanceSpec, RunningInstance
from plat.daemon.serving.autoscaler import Autoscaler, ScalerSettings
from plat.daemon.serving.function_state import FunctionState, Instance, NoCapacity, Release
from plat.daemon.serving.pool import WarmPool
from plat.daemon.serving.probe import Health, NotReady, probe_health, probe_once, wait_ready
from plat.daemon.store import InstanceRecord, Store
from plat.daemon.tasks import Finishing, TaskGroup
from plat.errors import NotFoundError, PlatError
from plat.manifest import Manifest, validate_manifest
from plat.runtimes import get_runtime

log = logging.getLogger(__name__)

EventSink = Callable[[str], None]

# Why an unhealthy instance is replaced, by what its health check found.
_UNHEALTHY: dict[Health, str] = {
    "down": "exited or stopped answering",
    "busy": "has every worker stuck in calls that outran their timeout",
}


class InstanceFailed(PlatError):
    status = 502
    code = "instance_failed"


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
    ) -> None:
        self.store = store
        self.pool = pool
        self.backend = backend
        self.collector = collector
        self.ready_timeout = ready_timeout
        self.drain_timeout = drain_timeout
        self.watch_interval = watch_interval
        self.scaler_settings = scaler or ScalerSettings()
        self.autoscale_tick = autoscale_tick
        self.queue_limit = queue_limit
        self.queue_timeout = queue_timeout
        self._autoscaler: asyncio.Task[None] | None = None
        self.functions: dict[str, FunctionState] = {}
        self.tasks = TaskGroup(log)
        self._session: aiohttp.ClientSession | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._draining: set[Instance] = set()
        self._starting: set[Instance] = set()
        self._removing: set[Instance] = set()  # stopped, their containers being removed
        self._leftovers: set[Instance] = set()  # stopped, but the engine failed to remove them
        self._stopping = Finishing()
        # Called with each instance as it stops (the gateway closes its connections).
        self.on_instance_stopped: list[Callable[[Instance], None]] = []

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True, limit=0)
            )
        return self._session

    async def start(self) -> None:
        """Reconcile with the backend, then watch instances. Idempotent."""
        if self._watchdog is not None:
            return
        await self.reconcile()
        self._sync_pool(*(fs.release for fs in self.functions.values()))
        self._watchdog = asyncio.create_task(self._watch(), name="controller-watchdog")
        self._autoscaler = asyncio.create_task(self._autoscale(), name="autoscaler")

    async def close(self, *, stop_instances: bool = True) -> None:
        for task in (self._watchdog, self._autoscaler):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._watchdog = self._autoscaler = None
        for fs in self.functions.values():
            fs.fail_waiters(NoCapacity("the daemon is shutting down"))
        draining = list(self._draining)
        await self.tasks.close()
        await self._stopping.wait()
        if self.pool is not None:
            await self.pool.close()
        if stop_instances:
            everything = [i for fs in self.functions.values() for i in fs.instances]
            everything += [i for i in draining if i.state != "stopped"]
            everything += list(self._leftovers)
            self._leftovers.clear()
            await asyncio.gather(
                *(self._stop(i, "the daemon is stopping", timeout=5.0) for i in everything)
            )
            for fs in self.functions.values():
                fs.instances.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def instance_states(self) -> list[tuple[str, str, int]]:
        """(function, state, count) of every instance, for the metrics."""
        counts: dict[tuple[str, str], int] = {}
        for fs in self.functions.values():
            for inst in fs.instances:
                key = (fs.name, inst.state)
                counts[key] = counts.get(key, 0) + 1
        for inst in self._starting:
            key = (inst.running.function, "starting")
            counts[key] = counts.get(key, 0) + 1
        for inst in self._draining:
            if inst.state == "draining":
                key = (inst.running.function, "draining")
                counts[key] = counts.get(key, 0) + 1
        return [(fn, state, n) for (fn, state), n in counts.items()]

    def live_instances(self, name: str) -> list[Instance]:
        """Every instance of ``name`` the controller holds: starting, serving, draining
        (the store's rows are a best-effort copy of this)."""
        fs = self.functions.get(name)
        held = list(fs.instances) if fs is not None else []
        held += [i for i in self._starting if i.running.function == name]
        held += [i for i in self._draining if i.running.function == name and i.state == "draining"]
        held += [i for i in self._removing | self._leftovers if i.running.function == name]
        return held

    # instances

    def _sync_pool(self, *prepare: Release) -> None:
        """Keep the pool warm for the runtimes in use; unpack ``prepare`` for later claims."""
        if self.pool is None:
            return
        self.pool.want(fs.release for fs in self.functions.values())
        for release in prepare:
            self.pool.prepare(release)

    def _spec(self, release: Release) -> InstanceSpec:
        manifest = release.manifest
        env = dict(manifest.env)
        handler = manifest.handler or get_runtime(manifest.runtime).handler
        if manifest.runtime != "dockerfile" and handler:
            env["PLAT_HANDLER"] = handler
        return InstanceSpec(
            function=manifest.name,
            version=release.version,
            image=release.image,
            env=env,
            memory=manifest.resources.memory,
            cpu=manifest.resources.cpu,
            pids=manifest.resources.pids,
            user=None if manifest.runtime == "dockerfile" else "10001:10001",
            mounts=dict(release.mounts),
        )

    async def _start_instance(
        self, release: Release, on_event: EventSink | None = None
    ) -> Instance:
        started = time.monotonic()
        spec = self._spec(release)
        if self.pool is not None:
            handler = spec.env.get("PLAT_HANDLER", "")
            running = await self.pool.claim(release, spec.env, handler)
            if running is not None:
                inst = Instance(running=running, started_at=time.time(), pooled=True)
                with self._stopped_on_failure(inst):
                    return await self._adopt_pooled(inst, release, started, on_event)
        instance_id = secrets.token_hex(4)
        running = await self.backend.start(spec, instance_id)
        inst = Instance(running=running, started_at=time.time())
        inst.start_seconds = time.monotonic() - started
        self._starting.add(inst)
        try:
            with self._stopped_on_failure(inst):
                return await self._await_ready(inst, release.manifest, release.version, on_event)
        finally:
            self._starting.discard(inst)

    @contextlib.contextmanager
    def _stopped_on_failure(self, inst: Instance) -> Iterator[None]:
        """Whatever interrupts a start (an error, a cancellation) stops its container:
        an instance the controller does not hold is never left running."""
        try:
            yield
        except BaseException as exc:
            if inst.state != "stopped":
                why = f"its start did not finish ({type(exc).__name__})"
                self.tasks.spawn(self._stop(inst, why, timeout=1.0), name=f"abort-{inst.id}")
            raise

    async def _await_ready(
        self,
        inst: Instance,
        manifest: Manifest,
        version: str,
        on_event: EventSink | None,
    ) -> Instance:
        running, instance_id = inst.running, inst.id
        started = time.monotonic()
        if self.collector is not None:
            self.collector.attach(running)
            self.collector.note(running, f"[plat] instance {instance_id} started")
        await self._book(self.store.add_instance(self._record(inst, version, "starting")), inst)
        if on_event:
            on_event(f"instance {instance_id} started on {running.address}, waiting for ready")
        try:
            await wait_ready(
                self.session,
                running.host,
                running.port,
                timeout=self.ready_timeout,
                alive=lambda: self.backend.is_alive(running),
            )
        except (NotReady, asyncio.CancelledError) as exc:
            tail = ""
            if isinstance(exc, NotReady):
                tail = await self.backend.logs(running, tail=30)
            reason = (
                "its start was cancelled"
                if isinstance(exc, asyncio.CancelledError)
                else "it did not become ready"
            )
            await self._stop(inst, reason, timeout=1.0)
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise InstanceFailed(
                f"{manifest.name} (version {version}) did not become ready: {exc}"
                + (f"\n--- instance log (last lines) ---\n{tail.rstrip()}" if tail.strip() else ""),
                hint="fix the error above; the previous version (if any) keeps serving",
            ) from None
        inst.ready_seconds = time.monotonic() - started
        inst.state = "ready"
        total = inst.ready_seconds + (inst.start_seconds or 0.0)
        await self._book(self.store.set_instance_state(instance_id, "ready", total), inst)
        log.info(
            "instance %s of %s ready in %.3f s", instance_id, manifest.name, inst.ready_seconds
        )
        return inst

    @staticmethod
    async def _book(write: Awaitable[None], inst: Instance) -> None:
        """An instance's row in the store, best effort: the instance serves whether or
        not it is written (a full disk), and reconcile finds containers by label."""
        try:
            await write
        except (sqlite3.Error, OSError) as exc:
            log.warning("could not record instance %s in the store: %s", inst.id, exc)

    def _record(
        self, inst: Instance, version: str, state: str, ready_seconds: float | None = None
    ) -> InstanceRecord:
        """The store's row for ``inst`` (its function is the one it runs)."""
        running = inst.running
        return InstanceRecord(
            running.id,
            running.function,
            version,
            self.backend.name,
            running.address,
            state,
            inst.started_at,
            ready_seconds,
        )

    async def _adopt_pooled(
        self,
        inst: Instance,
        release: Release,
        started: float,
        on_event: EventSink | None,
    ) -> Instance:
        """A pool instance already specialised as ``release``: ready for traffic now."""
        running = inst.running
        inst.state = "ready"
        inst.start_seconds = 0.0
        inst.ready_seconds = time.monotonic() - started
        if self.collector is not None:
            self.collector.attach(running)
            self.collector.note(
                running, f"[plat] instance {running.id} specialised from the pre-warmed pool"
            )
        await self._book(
            self.store.add_instance(
                self._record(inst, release.version, "ready", inst.ready_seconds)
            ),
            inst,
        )
        if on_event:
            on_event(
                f"instance {running.id} specialised from the pre-warmed pool on {running.address}"
            )
        log.info(
            "instance %s of %s specialised from the pool in %.3f s",
            running.id,
            release.manifest.name,
            inst.ready_seconds,
        )
        return inst

    async def _stop(self, inst: Instance, reason: str, timeout: float = 5.0) -> None:
        """Stop, let the log reader see the last lines, then remove the instance.

        Every stop is logged with its ``reason``. Once begun, this runs to its end even
        if the caller is cancelled (a drain cut short by shutdown); ``close`` waits for
        it, so no container is left behind."""
        log.info("stopping instance %s of %s: %s", inst.id, inst.running.function, reason)
        if self.collector is not None:
            self.collector.note(inst.running, f"[plat] instance {inst.id} stopping: {reason}")
        await self._stopping.run(self._stop_now(inst, timeout))

    async def _stop_now(self, inst: Instance, timeout: float) -> None:
        inst.state = "stopped"
        for listener in self.on_instance_stopped:
            listener(inst)
        self._removing.add(inst)
        try:
            await self._remove(inst, timeout)
        finally:
            self._removing.discard(inst)

    async def _remove(self, inst: Instance, timeout: float) -> None:
        try:
            await self.backend.stop(inst.running, timeout=timeout)
            if self.collector is not None:
                await self.collector.detach(inst.id)
            await self.backend.remove(inst.running)
        except PlatError as exc:
            # The engine is away: the watchdog removes it once it answers again.
            log.warning("stopping instance %s failed (retried later): %s", inst.id, exc)
            self._leftovers.add(inst)
            return
        if inst.pooled and self.pool is not None:
            self.pool.forget(inst.id)
        await self._book(self.store.remove_instance(inst.id), inst)

    async def _drain(self, inst: Instance, reason: str) -> None:
        inst.state = "draining"
        self._draining.add(inst)
        try:
            if inst.inflight:
                inst.idle.clear()
                try:
                    await asyncio.wait_for(inst.idle.wait(), timeout=self.drain_timeout)
                except TimeoutError:
                    log.warning(
                        "instance %s still had %d requests after draining", inst.id, inst.inflight
                    )
            await self._stop(inst, reason)
        finally:
            self._draining.discard(inst)

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
                new = await asyncio.gather(
                    *(self._start_instance(release, on_event) for _ in range(count))
                )
            except BaseException:
                if fresh and not fs.instances:
                    self.functions.pop(name, None)
                raise
            old = fs.instances
            fs.release = release
            fs.instances = list(new)
            fs.target = count
            fs.dispatch()
            await self.store.upsert_function(
                name, release.manifest.to_dict(), source_dir, release.version
            )
            for inst in old:
                self.tasks.spawn(
                    self._drain(inst, f"version {release.version} replaced it"),
                    name=f"drain-{inst.id}",
                )
        self._sync_pool(release)
        return fs

    async def remove(self, name: str) -> None:
        fs = self.functions.pop(name, None)
        record = await self.store.get_function(name)
        if fs is None and record is None:
            raise NotFoundError(f"no function named {name!r}", hint="`plat ls` lists functions")
        if fs is not None:
            fs.fail_waiters(NotFoundError(f"function {name!r} was removed"))
            async with fs.lock:
                await asyncio.gather(
                    *(self._stop(i, "the function was removed", timeout=2.0) for i in fs.instances)
                )
                fs.instances.clear()
        await self.store.delete_function(name)
        await self.backend.unprepare(name)
        self._sync_pool()

    # traffic

    async def acquire(self, name: str) -> tuple[Instance, float]:
        """An instance of ``name`` with a slot taken for the caller; pair with release().

        Also returns how long the request waited because no instance was ready (a
        cold start); 0.0 otherwise. Raises NotFoundError, TooManyRequests (the
        queue is full) or NoCapacity (no slot within the queue timeout).
        """
        fs = self.functions.get(name)
        if fs is None:
            raise NotFoundError(f"no function named {name!r}", hint="`plat ls` lists functions")
        fs.last_request = time.monotonic()
        inst = fs.take()
        if inst is not None:
            return inst, 0.0
        cold = not fs.ready_instances()
        started = time.monotonic()
        self._on_demand(fs, extra=1)
        inst = await fs.wait_for_slot(queue_limit=self.queue_limit, timeout=self.queue_timeout)
        return inst, (time.monotonic() - started) if cold else 0.0

    def release(self, inst: Instance) -> None:
        fs = self.functions.get(inst.running.function)
        if fs is not None and fs.holds(inst):
            fs.release_slot(inst)
        elif inst.inflight > 0:  # its function was removed (or replaced) meanwhile
            inst.inflight -= 1
            if inst.inflight <= 0:
                inst.idle.set()

    # scaling

    def _on_demand(self, fs: FunctionState, extra: int = 0) -> None:
        """Start instances at once when queued demand exceeds what is ready or starting."""
        scale = fs.manifest.scale
        have = len(fs.ready_instances()) + fs.starting
        demand = fs.inflight() + len(fs.waiters) + extra
        need = -(-demand // fs.concurrency)  # ceil
        if have == 0 and demand > 0:
            need = max(need, 1)
        more = min(scale.max, need) - have
        if more > 0:
            fs.target = max(fs.target, have + more)
            fs.scaler.burst(time.monotonic())
            self._scale_up(fs, more)

    def _scale_up(self, fs: FunctionState, count: int) -> None:
        release = fs.release
        fs.starting += count

        async def one() -> None:
            try:
                inst = await self._start_instance(release)
            except PlatError as exc:
                log.error("could not start an instance of %s: %s", fs.name, exc)
                if not fs.ready_instances() and fs.starting <= 1:
                    fs.fail_waiters(
                        exc if isinstance(exc, InstanceFailed) else NoCapacity(exc.message)
                    )
                return
            finally:
                fs.starting -= 1
            current = fs.release
            if (
                self.functions.get(fs.name) is not fs
                or (current.version, current.image) != (release.version, release.image)
                or current.mounts != release.mounts
            ):
                await self._stop(inst, "started for a version or function that is gone")
                return
            fs.instances.append(inst)
            fs.dispatch()

        for _ in range(count):
            self.tasks.spawn(one(), name=f"scale-up-{fs.name}")

    def rescale(self, name: str, manifest: Manifest) -> FunctionState:
        """Apply new scale settings to a running function now (no new version)."""
        fs = self.functions.get(name)
        if fs is None:
            raise NotFoundError(f"no function named {name!r}", hint="`plat ls` lists functions")
        fs.release = dataclasses.replace(fs.release, manifest=manifest)
        scale = manifest.scale
        current = len(fs.ready_instances()) + fs.starting
        fs.target = max(scale.min, min(scale.max, current))
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
        await self._drain(inst, "the autoscaler scaled the function down")
        if (
            self.functions.get(fs.name) is fs
            and not fs.instances
            and not fs.starting
            and not fs.lock.locked()
            and (self.pool is None or not self.pool.serves(fs.release))
        ):
            await self.backend.prepare(self._spec(fs.release), secrets.token_hex(4))
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
            current = len(fs.ready_instances()) + fs.starting
            decision = fs.scaler.decide(
                now, current, minimum=scale.min, maximum=scale.max, concurrency=fs.concurrency
            )
            fs.decision = decision
            fs.target = decision.desired
            if decision.desired > current:
                self._scale_up(fs, decision.desired - current)
            elif decision.desired < current and fs.starting == 0:
                self._scale_down(fs, current - decision.desired)

    async def _autoscale(self) -> None:
        while True:
            await asyncio.sleep(self.autoscale_tick)
            try:
                self.autoscale_once(time.monotonic())
            except Exception:
                log.exception("autoscaler tick failed")

    def scaler_states(self) -> list[tuple[str, int, int, float, bool]]:
        """(function, desired, actual, observed concurrency, panicking) for the metrics."""
        out = []
        for fs in self.functions.values():
            d = fs.decision
            out.append(
                (
                    fs.name,
                    fs.target,
                    len(fs.ready_instances()),
                    d.observed_stable if d else 0.0,
                    bool(d and d.panicking),
                )
            )
        return out

    def suspect(self, inst: Instance) -> None:
        """The gateway could not talk to ``inst``: no traffic until a check clears it."""
        if inst.state != "ready":
            return
        inst.state = "suspect"
        self.tasks.spawn(self._check(inst), name=f"check-{inst.id}")

    async def _check(self, inst: Instance) -> None:
        health = await self._health(inst)
        if health == "ready" and inst.state == "suspect":
            inst.state = "ready"
            fs = self.functions.get(inst.running.function)
            if fs is not None:
                fs.dispatch()
        elif health != "ready":
            await self._replace(inst, health)

    def timed_out(self, inst: Instance) -> None:
        """A call on ``inst`` outran its timeout: replace it if it is wedged (every
        worker stuck in a handler that never returns, or no answer at all)."""
        if inst.state != "ready" or inst.checking:
            return
        inst.checking = True
        self.tasks.spawn(self._check_wedged(inst), name=f"wedged-{inst.id}")

    async def _check_wedged(self, inst: Instance) -> None:
        try:
            health = await self._health(inst)
        finally:
            inst.checking = False
        if health != "ready" and inst.state == "ready":
            await self._replace(inst, health)

    async def _health(self, inst: Instance) -> Health:
        running = inst.running
        try:
            if not await self.backend.is_alive(running):
                return "down"
        except PlatError as exc:  # the engine is away: the probe alone tells
            log.warning("could not ask the engine about instance %s: %s", inst.id, exc)
        return await probe_health(self.session, running.host, running.port, timeout=2.0)

    async def _replace(self, inst: Instance, health: Health) -> None:
        """Take ``inst`` out of service and start its successor. A busy (wedged) one
        drains first: its calls end at their deadlines with the function's 504."""
        fs = self.functions.get(inst.running.function)
        if fs is None or inst not in fs.instances:
            return
        why = _UNHEALTHY[health]
        log.warning("instance %s of %s %s; replacing it", inst.id, fs.name, why)
        fs.instances.remove(inst)
        await self._ensure(fs)
        if health == "busy":
            await self._drain(inst, why)
        else:
            await self._stop(inst, why, timeout=1.0)

    async def _ensure(self, fs: FunctionState) -> None:
        """Start what is missing to reach the function's target (after a death, at start)."""
        if self.functions.get(fs.name) is not fs:
            return
        missing = fs.target - len(fs.instances) - fs.starting
        if fs.waiters:
            missing = max(missing, 1 - len(fs.ready_instances()) - fs.starting)
        if missing > 0:
            self._scale_up(fs, missing)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.watch_interval)
            # An instance started after the listing began is missing from it, not dead.
            listed_at = time.time()
            try:
                alive = {r.backend_ref for r in await self.backend.list() if r.running}
            except Exception as exc:  # the watchdog outlives any engine outage
                log.warning("watchdog could not list instances: %s", exc)
                continue
            for inst in list(self._leftovers):
                self._leftovers.discard(inst)
                self.tasks.spawn(
                    self._stopping.run(self._stop_now(inst, timeout=1.0)),
                    name=f"remove-{inst.id}",
                )
            await self._sweep()
            for fs in list(self.functions.values()):
                for inst in list(fs.instances):
                    if (
                        inst.state in ("ready", "suspect")
                        and inst.running.backend_ref not in alive
                        and inst.started_at < listed_at
                    ):
                        self.tasks.spawn(self._replace(inst, "down"), name=f"replace-{inst.id}")

    async def _sweep(self) -> None:
        """Retry the backend's and the pool's clean-ups that failed during an outage."""
        try:
            await self.backend.sweep()
            if self.pool is not None:
                await self.pool.sweep()
        except Exception as exc:  # the watchdog outlives any engine outage
            log.warning("watchdog could not remove leftovers: %s", exc)

    # start-up

    async def _discard(self, running: RunningInstance) -> None:
        await self.backend.stop(running, timeout=2.0)
        await self.backend.remove(running)

    async def reconcile(self) -> None:
        """Adopt healthy instances of current versions, remove everything else, fill gaps."""
        records = await self.store.list_functions()
        found = await self.backend.list()
        known = {r.id for r in await self.store.list_instances()}
        adopted: set[str] = set()
        for record in records:
            if record.version is None:
                continue
            version = await self.store.get_version(record.name, record.version)
            if version is None:
                continue
            if (self.backend.name == "process") != version.image.startswith("process:"):
                log.warning(
                    "%s was deployed for another backend; `plat deploy` it again", record.name
                )
                continue
            manifest = validate_manifest(
                record.manifest, source=f"stored manifest of {record.name}"
            )
            release = Release(manifest, record.version, version.image, version.mounts)
            fs = FunctionState(record.name, release, scaler=Autoscaler(self.scaler_settings))
            fs.target = max(1, manifest.scale.min) if manifest.scale.min else 0
            self.functions[record.name] = fs
            for running in found:
                if (
                    running.function == record.name
                    and running.version == record.version
                    and running.running
                    and len(fs.instances) < max(fs.target, 1)
                    and await probe_once(self.session, running.host, running.port, timeout=2.0)
                ):
                    inst = Instance(running=running, started_at=time.time(), state="ready")
                    fs.instances.append(inst)
                    if self.collector is not None:
                        since = await self.store.last_log_ts(running.id)
                        self.collector.attach(running, since=since)
                    adopted.add(running.id)
                    await self.store.add_instance(self._record(inst, record.version, "ready"))
            fs.target = max(fs.target, len(fs.instances))
        stale = [r for r in found if r.id not in adopted]
        await asyncio.gather(*(self._discard(r) for r in stale))
        for instance_id in known - adopted:
            await self.store.remove_instance(instance_id)
        log.info("reconciled: adopted %d instance(s), removed %d", len(adopted), len(stale))
        for fs in self.functions.values():
            await self._ensure(fs)
