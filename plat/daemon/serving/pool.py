"""The pre-warmed pool: generic instances of each runtime, started before they are needed.

A pool instance runs the runtime's image (base + shim, no function) in pool mode:
it listens at once and waits. Its code and dependency folders are two host
directories, empty at first, mounted read-only at the image's own paths
(``/home/app`` and ``/opt/plat/deps``). A cold start *claims* one: the daemon
hard-links the version's unpacked code and dependencies into those folders and
POSTs ``/.plat/specialize`` (with the instance's secret token) naming the
handler, the function's environment and version; the shim imports the handler
and from then on serves that function version only. A claimed instance never
returns to the pool; the pool refills in the background.

Pools are keyed by tenant, runtime and resource limits (memory, CPU, pids are
fixed when a container starts) and kept only for keys that deployed functions
use. The tenant is in the key because a member starts on its tenant's isolated
network, so it is only ever specialised for a function of that tenant. A
release that cannot be specialised (a ``dockerfile`` runtime, a version not
unpacked yet, an empty pool, a failed specialisation) gets ``None`` from
``claim`` and the caller starts an instance the normal way.

A release with secrets is not served by the pool for now: a member was started
without them, and secret files are mounted when a container is created. It
starts the normal way, its secrets mounted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import aiohttp

from plat.api import PoolState
from plat.daemon.drivers.base import Backend, InstanceSpec, RunningInstance
from plat.daemon.drivers.versions import APP_DIR, DEPS_DIR, Layout, Release
from plat.daemon.serving.foreground import Foreground
from plat.daemon.serving.links import link_layout, make_folders
from plat.daemon.serving.probe import NotReady, wait_ready
from plat.daemon.tasks import TaskGroup
from plat.errors import PlatError
from plat.runtimes import get_runtime
from plat.tenancy import DEFAULT_TENANT, tenant_of

log = logging.getLogger(__name__)

SPECIALIZE_PATH = "/.plat/specialize"
TOKEN_HEADER = "X-Plat-Pool-Token"
POOL_VERSION = "pool"
# How long a claim waits for a member that is starting before it starts an instance
# itself: a pool start takes ~0.3-0.7 s; longer means a slow first pool image build.
MEMBER_WAIT = 2.0
# How long the pool's background work waits for the starts someone waits for.
QUIET_LIMIT = 3.0


@dataclass(frozen=True)
class PoolKey:
    runtime: str
    memory: int
    cpu: float
    pids: int
    tenant: str = DEFAULT_TENANT

    @property
    def label(self) -> str:
        label = f"{self.runtime}/{self.memory // 1024**2}Mi/{self.cpu:g}cpu/{self.pids}pids"
        return label if self.tenant == DEFAULT_TENANT else f"{label}@{self.tenant}"


def pool_key(release: Release) -> PoolKey | None:
    """The pool a release's instances can come from; None when it cannot be specialised
    (or has secrets, see the module's doc)."""
    manifest = release.manifest
    if not get_runtime(manifest.runtime).poolable or release.secrets:
        return None
    res = manifest.resources
    return PoolKey(manifest.runtime, res.memory, res.cpu, res.pids, tenant_of(manifest.name))


class Sources(Protocol):
    """Unpacks versions so that pool instances can be specialised with them."""

    def layout(self, release: Release) -> Layout | None:
        """The unpacked files of ``release`` if they are ready; never waits."""
        ...

    async def prepare(self, release: Release) -> Layout | None:
        """Unpack ``release`` (idempotent); None when it has nothing to unpack."""
        ...

    def retain(self, releases: list[Release]) -> None:
        """Only ``releases`` (the deployed ones) need their files kept from now on."""
        ...


ImageFor = Callable[[str], Awaitable[str]]


@dataclass(eq=False)
class _Member:
    running: RunningInstance
    token: str
    folder: Path
    started: float = field(default_factory=time.monotonic)


@dataclass
class _Pool:
    key: PoolKey
    ready: list[_Member] = field(default_factory=list)
    starting: int = 0
    claimed: int = 0
    misses: int = 0
    # Claims waiting for a member that is starting (sooner than starting one anew).
    waiters: deque[asyncio.Future[_Member | None]] = field(default_factory=deque)

    def offer(self, member: _Member, size: int) -> bool:
        """A member got ready: to the longest-waiting claim, else into the pool unless
        it is full (a claim that gave up waiting leaves one too many); False: discard."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(member)
                return True
        if len(self.ready) >= size:
            return False
        self.ready.append(member)
        return True

    def starts_failed(self) -> None:
        """Nothing is starting any more: waiting claims start their instances themselves."""
        if self.starting == 0 and not self.ready:
            while self.waiters:
                waiter = self.waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)


class WarmPool:
    def __init__(
        self,
        backend: Backend,
        sources: Sources,
        image_for: ImageFor,
        folder: Path,
        *,
        size: int,
        session: Callable[[], aiohttp.ClientSession],
        ready_timeout: float = 30.0,
        specialize_timeout: float = 30.0,
        link: bool = True,
    ) -> None:
        self.backend = backend
        self.link = link
        self.sources = sources
        self.image_for = image_for
        self.folder = folder
        self.size = size
        self._session = session
        self.ready_timeout = ready_timeout
        self.specialize_timeout = specialize_timeout
        self.pools: dict[PoolKey, _Pool] = {}
        self._leftovers: list[_Member] = []  # removal failed while the engine was away
        self.tasks = TaskGroup(log)
        self._closed = False
        self.foreground = Foreground()  # the starts the background work lets pass

    @property
    def enabled(self) -> bool:
        return self.size > 0

    async def start(self) -> None:
        """Forget the folders of a previous daemon (its pool containers are reconciled away)."""
        await asyncio.to_thread(shutil.rmtree, self.folder, True)
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o755)

    async def close(self) -> None:
        self._closed = True
        await self.tasks.close()
        members = [m for pool in self.pools.values() for m in pool.ready] + self._leftovers
        for pool in self.pools.values():
            pool.ready.clear()
        self._leftovers = []
        await asyncio.gather(*(self._discard(m) for m in members))

    # what to keep warm

    def want(self, releases: Iterable[Release]) -> None:
        """Keep pools for the keys of ``releases``; drop the others; refill in the background."""
        if not self.enabled or self._closed:
            return
        releases = list(releases)
        self.tasks.spawn(asyncio.to_thread(self.sources.retain, releases), name="pool-retain")
        keys = {k for k in map(pool_key, releases) if k is not None}
        for key in list(self.pools):
            if key not in keys:
                pool = self.pools.pop(key)
                for member in pool.ready:
                    self.tasks.spawn(self._discard(member), name=f"pool-drop-{member.running.id}")
                pool.ready.clear()
        for key in keys:
            self._refill(self.pools.setdefault(key, _Pool(key)))

    def serves(self, release: Release) -> bool:
        """Whether a cold start of ``release`` is meant to come from the pool."""
        return self.enabled and pool_key(release) is not None

    def prepare(self, release: Release) -> None:
        """Unpack ``release`` in the background so that a later cold start can use the pool."""
        if self.serves(release):
            self.tasks.spawn(self._prepare(release), name=f"unpack-{release.manifest.name}")

    async def _prepare(self, release: Release) -> None:
        await self.foreground.quiet(QUIET_LIMIT)
        try:
            await self.sources.prepare(release)
        except PlatError as exc:
            log.warning("cannot unpack %s for the pool: %s", release.manifest.name, exc.message)

    def _refill(self, pool: _Pool) -> None:
        missing = self.size + len(pool.waiters) - len(pool.ready) - pool.starting
        for _ in range(max(0, missing)):
            pool.starting += 1
            self.tasks.spawn(self._start_member(pool), name=f"pool-{pool.key.runtime}")

    async def _start_member(self, pool: _Pool) -> None:
        member: _Member | None = None
        try:
            await self.foreground.quiet(QUIET_LIMIT, lambda: bool(pool.waiters))
            image = await self.image_for(pool.key.runtime)
            instance_id = secrets.token_hex(4)
            folder = self.folder / instance_id
            mounts = {str(folder / "app"): APP_DIR, str(folder / "deps"): DEPS_DIR}
            if self.link:
                await asyncio.to_thread(make_folders, folder)
            token = secrets.token_urlsafe(24)
            runtime = get_runtime(pool.key.runtime)
            spec = InstanceSpec(
                function=f"pool-{runtime.name}",
                version=POOL_VERSION,
                image=image,
                env={"PLAT_POOL_TOKEN": token},
                memory=pool.key.memory,
                cpu=pool.key.cpu,
                pids=pool.key.pids,
                mounts=mounts if self.link else {},
                tenant=pool.key.tenant,
            )
            # A start cancelled at shutdown may still create the container: let it
            # finish, so that the container is removed, not leaked.
            starting = asyncio.ensure_future(self.backend.start(spec, instance_id))
            try:
                running = await asyncio.shield(starting)
            except asyncio.CancelledError:
                with contextlib.suppress(PlatError):
                    await self._discard(_Member(await starting, token, folder))
                raise
            member = _Member(running, token, folder)
            await wait_ready(
                self._session(),
                running.host,
                running.port,
                timeout=self.ready_timeout,
                alive=lambda: self.backend.is_alive(running),
            )
        except (PlatError, NotReady) as exc:
            log.warning("a pool instance of %s did not start: %s", pool.key.label, exc)
            if member is not None:
                await self._discard(member)
            pool.starts_failed()
            return
        except asyncio.CancelledError:
            if member is not None:
                await asyncio.shield(self._discard(member))
            raise
        finally:
            pool.starting -= 1
        if self._closed or self.pools.get(pool.key) is not pool:
            await self._discard(member)
            return
        if not pool.offer(member, self.size):
            await self._discard(member)
            return
        log.info(
            "pool instance %s of %s ready in %.3f s",
            member.running.id,
            pool.key.label,
            time.monotonic() - member.started,
        )

    async def _discard(self, member: _Member) -> None:
        try:
            await self.backend.stop(member.running, timeout=1.0)
            await self.backend.remove(member.running)
        except PlatError as exc:
            log.warning(
                "removing pool instance %s failed (retried later): %s", member.running.id, exc
            )
            self._leftovers.append(member)
            return
        await asyncio.to_thread(shutil.rmtree, member.folder, True)

    async def sweep(self) -> None:
        """Remove the pool instances whose removal failed while the engine was away."""
        leftovers, self._leftovers = self._leftovers, []
        for member in leftovers:
            await self._discard(member)

    # claiming

    async def claim(
        self, release: Release, env: dict[str, str], handler: str
    ) -> RunningInstance | None:
        """A pool instance specialised as ``release``, ready for traffic; None to start normally."""
        key = pool_key(release) if self.enabled else None
        if key is None:
            return None
        pool = self.pools.setdefault(key, _Pool(key))
        layout = self.sources.layout(release)
        if layout is None:
            pool.misses += 1
            self.prepare(release)
            self._refill(pool)
            return None
        member = pool.ready.pop() if pool.ready else await self._wait_for_member(pool)
        self._refill(pool)
        if member is None:
            pool.misses += 1
            return None
        pool.claimed += 1
        try:
            if self.link:
                await asyncio.to_thread(link_layout, layout, member.folder)
                await self._specialize(member, release, env, handler)
            else:
                await self._specialize(member, release, env, handler, layout)
        except (OSError, PlatError) as exc:
            log.warning(
                "pool instance %s could not become %s: %s; starting one normally",
                member.running.id,
                release.manifest.name,
                exc,
            )
            self.tasks.spawn(self._discard(member), name=f"pool-drop-{member.running.id}")
            return None
        except asyncio.CancelledError:
            self.tasks.spawn(self._discard(member), name=f"pool-drop-{member.running.id}")
            raise
        self.tasks.spawn(self._rename(member.running, release), name=f"rename-{member.running.id}")
        return replace(member.running, function=release.manifest.name, version=release.version)

    async def _rename(self, running: RunningInstance, release: Release) -> None:
        try:
            await self.backend.rename(running, release.manifest.name)
        except PlatError as exc:
            log.warning("could not rename pool instance %s: %s", running.id, exc.message)

    async def _wait_for_member(self, pool: _Pool) -> _Member | None:
        """The next member to get ready, when one is starting; None (start normally) if not."""
        if pool.starting == 0:
            return None
        waiter: asyncio.Future[_Member | None] = asyncio.get_running_loop().create_future()
        pool.waiters.append(waiter)
        self._refill(pool)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout=MEMBER_WAIT)
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result() is not None:
                member = waiter.result()
                assert member is not None
                if not pool.offer(member, self.size):  # handed over as the claim gave up
                    self.tasks.spawn(self._discard(member), name=f"pool-drop-{member.running.id}")
            _forget(pool, waiter)
            raise
        if waiter.done() and not waiter.cancelled():
            return waiter.result()
        _forget(pool, waiter)
        return None

    async def _specialize(
        self,
        member: _Member,
        release: Release,
        env: dict[str, str],
        handler: str,
        paths: Layout | None = None,
    ) -> None:
        """POST the specialisation; ``paths`` names the files when they are not linked."""
        running = member.running
        payload: dict[str, object] = {
            "function": release.manifest.name,
            "version": release.version,
            "handler": handler,
            "env": env,
        }
        if paths is not None:
            payload["app"] = str(paths.app)
            payload["paths"] = [str(paths.deps)] if paths.deps is not None else []
        try:
            async with self._session().post(
                f"http://{running.address}{SPECIALIZE_PATH}",
                data=json.dumps(payload),
                headers={TOKEN_HEADER: member.token, "Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=self.specialize_timeout),
            ) as resp:
                answer = await resp.text()
                if resp.status != 200:
                    raise PlatError(f"specialisation answered {resp.status}: {answer[:500]}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PlatError(f"specialisation failed: {type(exc).__name__}: {exc}") from exc

    def forget(self, instance_id: str) -> None:
        """A claimed instance was removed: its folders go too."""
        folder = self.folder / instance_id
        if folder.exists():
            self.tasks.spawn(
                asyncio.to_thread(shutil.rmtree, folder, True), name=f"pool-forget-{instance_id}"
            )

    def states(self) -> list[PoolState]:
        """Each pool's counts, for metrics and status."""
        return [
            PoolState(p.key.label, len(p.ready), p.starting, p.claimed, p.misses)
            for p in self.pools.values()
        ]


def _forget(pool: _Pool, waiter: asyncio.Future[_Member | None]) -> None:
    waiter.cancel()
    with contextlib.suppress(ValueError):
        pool.waiters.remove(waiter)
