"""A function's live state: its release, its instances, and admission of requests.

Admission enforces ``scale.concurrency``: an instance never gets more requests
at once than that. Requests beyond the capacity of the ready instances wait in
a bounded FIFO; a slot that frees up (or an instance that becomes ready) goes
straight to the oldest waiter.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from plat.daemon.autoscaler import Autoscaler, Decision
from plat.daemon.backends import RunningInstance
from plat.errors import PlatError
from plat.manifest import Manifest


class TooManyRequests(PlatError):
    status = 429
    code = "too_many_requests"


class NoCapacity(PlatError):
    status = 503
    code = "no_capacity"


@dataclass(eq=False)
class Instance:
    running: RunningInstance
    started_at: float
    state: str = "starting"  # starting | ready | suspect | draining | stopped
    inflight: int = 0
    start_seconds: float | None = None
    ready_seconds: float | None = None
    pooled: bool = False  # specialised from the pre-warmed pool
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
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiters: deque[asyncio.Future[Instance]] = field(default_factory=deque)
    starting: int = 0  # instances being started for this release
    target: int = 1  # instances the controller keeps (the autoscaler moves it)
    scaler: Autoscaler = field(default_factory=Autoscaler)
    decision: Decision | None = None
    # When the last request arrived (monotonic): one shorter than an autoscaler tick
    # shows up in no concurrency sample, yet it is traffic that defers scale to zero.
    last_request: float | None = None

    @property
    def manifest(self) -> Manifest:
        return self.release.manifest

    @property
    def version(self) -> str:
        return self.release.version

    @property
    def image(self) -> str:
        return self.release.image

    @property
    def concurrency(self) -> int:
        return self.manifest.scale.concurrency

    def ready_instances(self) -> list[Instance]:
        return [i for i in self.instances if i.state == "ready"]

    def inflight(self) -> int:
        return sum(i.inflight for i in self.instances)

    def pick(self) -> Instance | None:
        """The least busy ready instance with a free slot, or None."""
        best: Instance | None = None
        limit = self.concurrency
        for inst in self.instances:
            if (
                inst.state == "ready"
                and inst.inflight < limit
                and (best is None or inst.inflight < best.inflight)
            ):
                best = inst
        return best

    def take(self) -> Instance | None:
        inst = self.pick()
        if inst is not None:
            inst.inflight += 1
        return inst

    async def wait_for_slot(self, *, queue_limit: int, timeout: float) -> Instance:
        """Queue for a slot; raises TooManyRequests when the queue is full, NoCapacity
        when no slot frees up within ``timeout``.

        Slots of instances already starting do not count against ``queue_limit``:
        requests that share a cold start are not overflow.
        """
        if len(self.waiters) >= queue_limit + self.starting * self.concurrency:
            raise TooManyRequests(
                f"{self.name} is at capacity and {len(self.waiters)} requests are already "
                "waiting; retry shortly",
                hint="raise scale.max or scale.concurrency (`plat scale`)",
            )
        waiter: asyncio.Future[Instance] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                return waiter.result()  # handed a slot at the last moment: keep it
            waiter.cancel()
            raise NoCapacity(
                f"no instance of {self.name} could take the request within {timeout:g} s"
            ) from None
        finally:
            if waiter in self.waiters:
                self.waiters.remove(waiter)

    def dispatch(self) -> None:
        """Hand free slots to waiters, oldest first."""
        while self.waiters:
            inst = self.pick()
            if inst is None:
                return
            waiter = self.waiters.popleft()
            if waiter.done():
                continue
            inst.inflight += 1
            waiter.set_result(inst)

    def release_slot(self, inst: Instance) -> None:
        inst.inflight -= 1
        if inst.inflight <= 0:
            inst.idle.set()
        if inst.state == "ready" and self.waiters:
            self.dispatch()

    def fail_waiters(self, error: PlatError) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)
