"""One instance's life: its spec, start (or adoption from the pre-warmed pool), the
wait until it is ready, its row in the store, drain, stop and removal.

``Instances`` knows every instance that is not serving: starting ones (through the
functions' ``Start`` records), draining ones, ones being removed and ones whose
removal failed while the engine was away (``leftovers``, retried by ``sweep``). An
instance the daemon does not hold is never left running: whatever interrupts a
start stops its container, and a stop, once begun, runs to its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator

import aiohttp

from plat.daemon.collector import LogCollector
from plat.daemon.drivers.base import Backend, InstanceSpec, RunningInstance
from plat.daemon.drivers.versions import Release
from plat.daemon.serving.instance import Instance, InstanceState, Start
from plat.daemon.serving.pool import WarmPool
from plat.daemon.serving.probe import NotReady, wait_ready
from plat.daemon.store import InstanceRecord, Store
from plat.daemon.tasks import Finishing, TaskGroup
from plat.errors import PlatError
from plat.runtimes import get_runtime
from plat.tenancy import tenant_of

log = logging.getLogger(__name__)

EventSink = Callable[[str], None]


class InstanceFailed(PlatError):
    status = 502
    code = "instance_failed"


def instance_spec(release: Release) -> InstanceSpec:
    """What the backend runs for ``release``."""
    manifest = release.manifest
    runtime = get_runtime(manifest.runtime)
    env = dict(manifest.env)
    handler = manifest.handler or runtime.handler
    if runtime.poolable and handler:
        env["PLAT_HANDLER"] = handler
    if runtime.poolable:
        # For the shims' adapters: the kind of app, and what a Lambda context tells.
        if manifest.adapter is not None:
            env["PLAT_ADAPTER"] = manifest.adapter
        env["PLAT_TIMEOUT"] = f"{manifest.timeout:g}"
        env["PLAT_MEMORY_MB"] = str(manifest.resources.memory // 1024**2)
    return InstanceSpec(
        function=manifest.name,
        version=release.version,
        image=release.image,
        env=env,
        memory=manifest.resources.memory,
        cpu=manifest.resources.cpu,
        pids=manifest.resources.pids,
        user="10001:10001" if runtime.poolable else None,
        mounts=dict(release.mounts),
        tenant=tenant_of(manifest.name),
        secrets=release.secrets,
    )


class Instances:
    def __init__(
        self,
        store: Store,
        backend: Backend,
        *,
        pool: WarmPool | None = None,
        collector: LogCollector | None = None,
        ready_timeout: float = 30.0,
        drain_timeout: float = 30.0,
    ) -> None:
        self.store = store
        self.backend = backend
        self.pool = pool
        self.collector = collector
        self.ready_timeout = ready_timeout
        self.drain_timeout = drain_timeout
        self.tasks = TaskGroup(log)
        self.draining: set[Instance] = set()
        self.removing: set[Instance] = set()  # stopped, their containers being removed
        self.leftovers: set[Instance] = set()  # stopped; the engine failed to remove them
        self._stopping = Finishing()
        self._session: aiohttp.ClientSession | None = None
        # Called with each instance as it stops (the gateway closes its connections).
        self.on_stopped: list[Callable[[Instance], None]] = []

    @property
    def session(self) -> aiohttp.ClientSession:
        """The session readiness probes and pool specialisation use."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True, limit=0)
            )
        return self._session

    async def close(self, *, stop: list[Instance]) -> None:
        """Finish the stops under way, stop ``stop`` and what drains or was left over."""
        draining = [i for i in self.draining if i.state != "stopped"]
        await self.tasks.close()
        await self._stopping.wait()
        if self.pool is not None:
            await self.pool.close()
        everything = [*stop, *draining, *self.leftovers]
        self.leftovers.clear()
        await asyncio.gather(
            *(self.stop(i, "the daemon is stopping", timeout=5.0) for i in everything)
        )
        if self._session is not None:
            await self._session.close()
            self._session = None

    def held(self, name: str) -> list[Instance]:
        """Instances of ``name`` on their way out: draining, being removed, left over."""
        out = [i for i in self.draining if i.function == name and i.state == "draining"]
        out += [i for i in self.removing | self.leftovers if i.function == name]
        return out

    def draining_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for inst in self.draining:
            if inst.state == "draining":
                counts[inst.function] = counts.get(inst.function, 0) + 1
        return counts

    # start

    async def start(self, start: Start, on_event: EventSink | None = None) -> Instance:
        """An instance of ``start.release``, ready for traffic: specialised from the
        pool when it has one, else started and waited for. Raises InstanceFailed."""
        release = start.release
        started = time.monotonic()
        spec = instance_spec(release)
        if self.pool is not None:
            handler = spec.env.get("PLAT_HANDLER", "")
            running = await self.pool.claim(release, spec.env, handler)
            if running is not None:
                inst = Instance(running=running, started_at=time.time(), pooled=True)
                start.instance = inst
                with self._stopped_on_failure(inst):
                    return await self._adopt_pooled(inst, release, started, on_event)
        # The pool's background work waits for this start.
        with self.pool.foreground.start() if self.pool is not None else contextlib.nullcontext():
            running = await self.backend.start(spec, secrets.token_hex(4))
            inst = Instance(running=running, started_at=time.time())
            inst.start_seconds = time.monotonic() - started
            start.instance = inst
            with self._stopped_on_failure(inst):
                return await self._await_ready(inst, release, on_event)

    @contextlib.contextmanager
    def _stopped_on_failure(self, inst: Instance) -> Iterator[None]:
        """Whatever interrupts a start (an error, a cancellation) stops its container."""
        try:
            yield
        except BaseException as exc:
            if inst.state != "stopped":
                why = f"its start did not finish ({type(exc).__name__})"
                self.tasks.spawn(self.stop(inst, why, timeout=1.0), name=f"abort-{inst.id}")
            raise

    async def _await_ready(
        self, inst: Instance, release: Release, on_event: EventSink | None
    ) -> Instance:
        running, name = inst.running, release.manifest.name
        started = time.monotonic()
        if self.collector is not None:
            self.collector.attach(running)
            self.collector.note(running, f"[plat] instance {inst.id} started")
        await self.book(self.store.add_instance(self.record(inst, "starting")), inst)
        if on_event:
            on_event(f"instance {inst.id} started on {running.address}, waiting for ready")
        try:
            await wait_ready(
                self.session,
                running.host,
                running.port,
                timeout=self.ready_timeout,
                alive=lambda: self.backend.is_alive(running),
            )
        except asyncio.CancelledError:
            await self.stop(inst, "its start was cancelled", timeout=1.0)
            raise
        except NotReady as exc:
            tail = await self.backend.logs(running, tail=30)
            await self.stop(inst, "it did not become ready", timeout=1.0)
            raise InstanceFailed(
                f"{name} (version {release.version}) did not become ready: {exc}"
                + (f"\n--- instance log (last lines) ---\n{tail.rstrip()}" if tail.strip() else ""),
                hint="fix the error above; the previous version (if any) keeps serving",
            ) from None
        inst.ready_seconds = time.monotonic() - started
        inst.state = "ready"
        await self.book(
            self.store.set_instance_state(inst.id, "ready", inst.total_ready_seconds), inst
        )
        log.info(
            "instance %s of %s ready in %.3f s (its container's start took %.3f s before)",
            inst.id,
            name,
            inst.ready_seconds,
            inst.start_seconds or 0.0,
        )
        return inst

    async def _adopt_pooled(
        self, inst: Instance, release: Release, started: float, on_event: EventSink | None
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
        await self.book(self.store.add_instance(self.record(inst, "ready")), inst)
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

    async def adopt(self, running: RunningInstance, since: float | None) -> Instance:
        """An instance a previous daemon started, found healthy at start-up."""
        inst = Instance(running=running, started_at=time.time(), state="ready")
        if self.collector is not None:
            self.collector.attach(running, since=since)
        await self.book(self.store.add_instance(self.record(inst, "ready")), inst)
        return inst

    # the store's rows

    @staticmethod
    async def book(write: Awaitable[None], inst: Instance) -> None:
        """An instance's row in the store, best effort: the instance serves whether or
        not it is written (a full disk), and reconcile finds containers by label."""
        try:
            await write
        except (sqlite3.Error, OSError) as exc:
            log.warning("could not record instance %s in the store: %s", inst.id, exc)

    def record(self, inst: Instance, state: InstanceState) -> InstanceRecord:
        """The store's row for ``inst``."""
        running = inst.running
        return InstanceRecord(
            running.id,
            running.function,
            running.version,
            self.backend.name,
            running.address,
            state,
            inst.started_at,
            inst.total_ready_seconds,
        )

    # the end

    async def stop(self, inst: Instance, reason: str, timeout: float = 5.0) -> None:
        """Stop, let the log reader see the last lines, then remove the instance.

        Every stop is logged with its ``reason``. Once begun, this runs to its end even
        if the caller is cancelled (a drain cut short by shutdown); ``close`` waits for
        it, so no container is left behind."""
        log.info("stopping instance %s of %s: %s", inst.id, inst.function, reason)
        if self.collector is not None:
            self.collector.note(inst.running, f"[plat] instance {inst.id} stopping: {reason}")
        await self._stopping.run(self._stop_now(inst, timeout))

    async def _stop_now(self, inst: Instance, timeout: float) -> None:
        inst.state = "stopped"
        for listener in self.on_stopped:
            listener(inst)
        self.removing.add(inst)
        try:
            await self._remove(inst, timeout)
        finally:
            self.removing.discard(inst)

    async def _remove(self, inst: Instance, timeout: float) -> None:
        try:
            await self.backend.stop(inst.running, timeout=timeout)
            if self.collector is not None:
                await self.collector.detach(inst.id)
            await self.backend.remove(inst.running)
        except PlatError as exc:
            # The engine is away: ``sweep`` removes it once it answers again.
            log.warning("stopping instance %s failed (retried later): %s", inst.id, exc)
            self.leftovers.add(inst)
            return
        if inst.pooled and self.pool is not None:
            self.pool.forget(inst.id)
        await self.book(self.store.remove_instance(inst.id), inst)

    async def drain(self, inst: Instance, reason: str) -> None:
        """No new calls; stop once the calls in flight ended (or ``drain_timeout``)."""
        inst.state = "draining"
        self.draining.add(inst)
        try:
            if inst.inflight:
                inst.idle.clear()
                try:
                    await asyncio.wait_for(inst.idle.wait(), timeout=self.drain_timeout)
                except TimeoutError:
                    log.warning(
                        "instance %s still had %d requests after draining", inst.id, inst.inflight
                    )
            await self.stop(inst, reason)
        finally:
            self.draining.discard(inst)

    def drain_soon(self, inst: Instance, reason: str) -> None:
        self.tasks.spawn(self.drain(inst, reason), name=f"drain-{inst.id}")

    async def sweep(self) -> None:
        """Retry the removals that failed while the engine was away: the instances',
        the backend's own and the pool's."""
        for inst in list(self.leftovers):
            self.leftovers.discard(inst)
            self.tasks.spawn(
                self._stopping.run(self._stop_now(inst, timeout=1.0)), name=f"remove-{inst.id}"
            )
        try:
            await self.backend.sweep()
            if self.pool is not None:
                await self.pool.sweep()
        except Exception as exc:  # the watchdog outlives any engine outage
            log.warning("could not remove leftovers: %s", exc)

    async def discard(self, running: RunningInstance) -> None:
        """Remove a container no instance stands for (found at start-up)."""
        await self.backend.stop(running, timeout=2.0)
        await self.backend.remove(running)
