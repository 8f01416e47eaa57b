"""The function controller: instances per function, readiness, replacement, blue/green.

Traffic only reaches an instance after its readiness probe passed. A new version
starts, gets ready and takes traffic before the old instances drain and stop. A
watchdog replaces instances that died. On start, the controller reconciles the
instances the backend holds (by label) with what the store says.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from plat.daemon.backends import Backend, InstanceSpec, RunningInstance
from plat.daemon.collector import LogCollector
from plat.daemon.probe import NotReady, probe_once, wait_ready
from plat.daemon.store import InstanceRecord, Store
from plat.daemon.tasks import TaskGroup
from plat.errors import NotFoundError, PlatError
from plat.manifest import Manifest, validate_manifest
from plat.runtimes import get_runtime

log = logging.getLogger(__name__)

EventSink = Callable[[str], None]


class InstanceFailed(PlatError):
    status = 502
    code = "instance_failed"


@dataclass(eq=False)
class Instance:
    running: RunningInstance
    started_at: float
    state: str = "starting"
    inflight: int = 0
    start_seconds: float | None = None
    ready_seconds: float | None = None
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def id(self) -> str:
        return self.running.id


@dataclass(frozen=True)
class Release:
    """What instances of a function run: a manifest, a version and its image (+ mounts)."""

    manifest: Manifest
    version: str
    image: str
    mounts: dict[str, str] = field(default_factory=dict)


@dataclass(eq=False)
class FunctionState:
    name: str
    release: Release
    instances: list[Instance] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def manifest(self) -> Manifest:
        return self.release.manifest

    @property
    def version(self) -> str:
        return self.release.version

    @property
    def image(self) -> str:
        return self.release.image

    def desired(self) -> int:
        # The warm pool holds at least one instance per function.
        return max(1, self.manifest.scale.min)

    def pick(self) -> Instance | None:
        best: Instance | None = None
        for inst in self.instances:
            if inst.state == "ready" and (best is None or inst.inflight < best.inflight):
                best = inst
        return best


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
    ) -> None:
        self.store = store
        self.backend = backend
        self.collector = collector
        self.ready_timeout = ready_timeout
        self.drain_timeout = drain_timeout
        self.watch_interval = watch_interval
        self.functions: dict[str, FunctionState] = {}
        self.tasks = TaskGroup(log)
        self._session: aiohttp.ClientSession | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._draining: set[Instance] = set()
        self._starting: set[Instance] = set()

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
        self._watchdog = asyncio.create_task(self._watch(), name="controller-watchdog")

    async def close(self, *, stop_instances: bool = True) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
            self._watchdog = None
        draining = list(self._draining)
        await self.tasks.close()
        if stop_instances:
            everything = [i for fs in self.functions.values() for i in fs.instances]
            everything += [i for i in draining if i.state != "stopped"]
            await asyncio.gather(*(self._stop(i, timeout=5.0) for i in everything))
            for fs in self.functions.values():
                fs.instances.clear()
                fs.ready.clear()
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

    # instances

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
        instance_id = secrets.token_hex(4)
        started = time.monotonic()
        running = await self.backend.start(self._spec(release), instance_id)
        inst = Instance(running=running, started_at=time.time())
        inst.start_seconds = time.monotonic() - started
        self._starting.add(inst)
        try:
            return await self._await_ready(inst, release.manifest, release.version, on_event)
        finally:
            self._starting.discard(inst)

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
        await self.store.add_instance(
            InstanceRecord(
                instance_id,
                manifest.name,
                version,
                self.backend.name,
                running.address,
                "starting",
                inst.started_at,
                None,
            )
        )
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
            await self._stop(inst, timeout=1.0)
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
        await self.store.set_instance_state(instance_id, "ready", total)
        log.info(
            "instance %s of %s ready in %.3f s", instance_id, manifest.name, inst.ready_seconds
        )
        return inst

    async def _stop(self, inst: Instance, timeout: float = 5.0) -> None:
        """Stop, let the log reader see the last lines, then remove the instance."""
        inst.state = "stopped"
        try:
            await self.backend.stop(inst.running, timeout=timeout)
            if self.collector is not None:
                await self.collector.detach(inst.id)
            await self.backend.remove(inst.running)
        except PlatError as exc:
            log.warning("stopping instance %s failed: %s", inst.id, exc)
        await self.store.remove_instance(inst.id)

    async def _drain(self, inst: Instance) -> None:
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
            await self._stop(inst)
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
            fs = self.functions[name] = FunctionState(name, release)
        async with fs.lock:
            count = max(1, release.manifest.scale.min)
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
            fs.ready.set()
            await self.store.upsert_function(
                name, release.manifest.to_dict(), source_dir, release.version
            )
            for inst in old:
                self.tasks.spawn(self._drain(inst), name=f"drain-{inst.id}")
        return fs

    async def remove(self, name: str) -> None:
        fs = self.functions.pop(name, None)
        record = await self.store.get_function(name)
        if fs is None and record is None:
            raise NotFoundError(f"no function named {name!r}", hint="`plat ls` lists functions")
        if fs is not None:
            async with fs.lock:
                fs.ready.clear()
                await asyncio.gather(*(self._stop(i, timeout=2.0) for i in fs.instances))
                fs.instances.clear()
        await self.store.delete_function(name)

    # traffic

    async def acquire(self, name: str, wait: float | None = None) -> tuple[Instance, float]:
        """A ready instance of ``name`` with its in-flight count taken; pair with release().

        Also returns how long the request waited for an instance to start (0.0 when
        one was ready: anything else is a cold start).
        """
        fs = self.functions.get(name)
        if fs is None:
            raise NotFoundError(f"no function named {name!r}", hint="`plat ls` lists functions")
        inst = fs.pick()
        if inst is not None:
            inst.inflight += 1
            return inst, 0.0
        started = time.monotonic()
        while inst is None:
            try:
                await asyncio.wait_for(fs.ready.wait(), timeout=wait or self.ready_timeout)
            except TimeoutError:
                raise InstanceFailed(f"function {name!r} has no ready instance") from None
            inst = fs.pick()
            if inst is None:
                fs.ready.clear()
        inst.inflight += 1
        return inst, time.monotonic() - started

    def release(self, inst: Instance) -> None:
        inst.inflight -= 1
        if inst.inflight <= 0:
            inst.idle.set()

    def suspect(self, inst: Instance) -> None:
        """The gateway could not talk to ``inst``: no traffic until a check clears it."""
        if inst.state != "ready":
            return
        inst.state = "suspect"
        fs = self.functions.get(inst.running.function)
        if fs is not None and fs.pick() is None:
            fs.ready.clear()
        self.tasks.spawn(self._check(inst), name=f"check-{inst.id}")

    async def _check(self, inst: Instance) -> None:
        alive = await self.backend.is_alive(inst.running) and await probe_once(
            self.session, inst.running.host, inst.running.port, timeout=2.0
        )
        if alive and inst.state == "suspect":
            inst.state = "ready"
            fs = self.functions.get(inst.running.function)
            if fs is not None:
                fs.ready.set()
        elif not alive:
            await self._replace(inst)

    async def _replace(self, inst: Instance) -> None:
        fs = self.functions.get(inst.running.function)
        if fs is None or inst not in fs.instances:
            return
        log.warning("instance %s of %s died; replacing it", inst.id, fs.name)
        if self.collector is not None:
            self.collector.note(inst.running, f"[plat] instance {inst.id} exited; replacing it")
        fs.instances.remove(inst)
        if not fs.pick():
            fs.ready.clear()
        await self._stop(inst, timeout=1.0)
        await self._ensure(fs)

    async def _ensure(self, fs: FunctionState) -> None:
        async with fs.lock:
            if self.functions.get(fs.name) is not fs:
                return
            missing = fs.desired() - len(fs.instances)
            for _ in range(missing):
                try:
                    inst = await self._start_instance(fs.release)
                except PlatError as exc:
                    log.error("could not start an instance of %s: %s", fs.name, exc)
                    return
                fs.instances.append(inst)
                fs.ready.set()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.watch_interval)
            try:
                alive = {r.backend_ref for r in await self.backend.list() if r.running}
            except PlatError as exc:
                log.warning("watchdog could not list instances: %s", exc)
                continue
            for fs in list(self.functions.values()):
                for inst in list(fs.instances):
                    if inst.state in ("ready", "suspect") and inst.running.backend_ref not in alive:
                        self.tasks.spawn(self._replace(inst), name=f"replace-{inst.id}")

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
            manifest = validate_manifest(
                record.manifest, source=f"stored manifest of {record.name}"
            )
            release = Release(manifest, record.version, version.image, version.mounts)
            fs = FunctionState(record.name, release)
            self.functions[record.name] = fs
            for running in found:
                if (
                    running.function == record.name
                    and running.version == record.version
                    and running.running
                    and len(fs.instances) < fs.desired()
                    and await probe_once(self.session, running.host, running.port, timeout=2.0)
                ):
                    inst = Instance(running=running, started_at=time.time(), state="ready")
                    fs.instances.append(inst)
                    if self.collector is not None:
                        since = await self.store.last_log_ts(running.id)
                        self.collector.attach(running, since=since)
                    adopted.add(running.id)
                    await self.store.add_instance(
                        InstanceRecord(
                            running.id,
                            record.name,
                            record.version,
                            self.backend.name,
                            running.address,
                            "ready",
                            inst.started_at,
                            None,
                        )
                    )
            if fs.instances:
                fs.ready.set()
        stale = [r for r in found if r.id not in adopted]
        await asyncio.gather(*(self._discard(r) for r in stale))
        for instance_id in known - adopted:
            await self.store.remove_instance(instance_id)
        log.info("reconciled: adopted %d instance(s), removed %d", len(adopted), len(stale))
        for fs in self.functions.values():
            if len(fs.instances) < fs.desired():
                self.tasks.spawn(self._ensure(fs), name=f"ensure-{fs.name}")
