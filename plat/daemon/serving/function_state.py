"""A function's live state: its release, its instances, and admission of requests.

Admission enforces ``scale.concurrency``: an instance never gets more requests
at once than that. Requests beyond the capacity of the ready instances wait in
a bounded FIFO; a slot that frees up (or an instance that becomes ready) goes
straight to the oldest waiter.

Slots are leak-proof by construction: ``_grant`` is the only way a slot is
taken and ``_return`` the only way one comes back; a waiter handed a slot in
the same loop pass in which its caller gave up (cancelled, timed out) returns
it before the error propagates. ``admission()`` checks the books: the slots
held on instances equal the calls that hold one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field

from plat.api import AdmissionView
from plat.daemon.drivers.versions import Release
from plat.daemon.serving.autoscaler import Autoscaler, Decision
from plat.daemon.serving.instance import Instance, Start
from plat.errors import PlatError
from plat.manifest import Manifest

log = logging.getLogger(__name__)


class TooManyRequests(PlatError):
    status = 429
    code = "too_many_requests"


class NoCapacity(PlatError):
    status = 503
    code = "no_capacity"


@dataclass(frozen=True)
class Admission:
    """The admission books of one function (see ``FunctionState.admission``)."""

    inflight: int  # calls that were handed a slot and have not returned it
    held: int  # slots taken on instances (draining ones included) and not returned
    waiting: int  # callers queued for a slot
    ok: bool  # held == inflight, and each instance's count matches its slots

    def as_dict(self) -> AdmissionView:
        return {
            "inflight": self.inflight,
            "held": self.held,
            "waiting": self.waiting,
            "ok": self.ok,
        }


def _granted(waiter: asyncio.Future[Instance]) -> bool:
    return waiter.done() and not waiter.cancelled() and waiter.exception() is None


@dataclass(eq=False)
class FunctionState:
    name: str
    release: Release
    instances: list[Instance] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiters: deque[asyncio.Future[Instance]] = field(default_factory=deque)
    # Every start under way for this function: scale-ups of its release and the
    # starts of a version being deployed (see ``starts``).
    starting: set[Start] = field(default_factory=set)
    scaler: Autoscaler = field(default_factory=Autoscaler)
    # Instances the controller keeps, and the autoscaler's decision behind it:
    # written through ``set_target`` only.
    _target: int = 1
    decision: Decision | None = None
    # When the last request arrived (monotonic): one shorter than an autoscaler tick
    # shows up in no concurrency sample, yet it is traffic that defers scale to zero.
    last_request: float | None = None
    # Slots taken per instance (instances that left ``instances`` while busy too),
    # and how many of them their callers hold: see ``admission``.
    holders: dict[Instance, int] = field(default_factory=dict)
    active: int = 0

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

    @property
    def target(self) -> int:
        return self._target

    def set_target(self, count: int, decision: Decision | None = None) -> None:
        """The number of instances to keep; ``decision`` when the autoscaler chose it."""
        self._target = max(0, count)
        if decision is not None:
            self.decision = decision

    @property
    def starts(self) -> int:
        """Instances being started for the current release."""
        return sum(1 for s in self.starting if s.release.same_code(self.release))

    @property
    def capacity(self) -> int:
        """Instances that serve or soon will: ready ones and starts of this release."""
        return len(self.ready_instances()) + self.starts

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

    def _grant(self, inst: Instance) -> None:
        inst.inflight += 1
        self.holders[inst] = self.holders.get(inst, 0) + 1

    def _return(self, inst: Instance) -> bool:
        held = self.holders.get(inst, 0)
        if held <= 0:
            log.error("a slot of instance %s was returned twice; ignored", inst.id)
            return False
        if held == 1:
            del self.holders[inst]
        else:
            self.holders[inst] = held - 1
        inst.inflight -= 1
        if inst.inflight <= 0:
            inst.idle.set()
        return True

    def holds(self, inst: Instance) -> bool:
        return inst in self.holders

    def take(self) -> Instance | None:
        """A slot on the least busy ready instance, or None; pair with release_slot()."""
        inst = self.pick()
        if inst is not None:
            self._grant(inst)
            self.active += 1
        return inst

    async def wait_for_slot(self, *, queue_limit: int, timeout: float) -> Instance:
        """Queue for a slot; raises TooManyRequests when the queue is full, NoCapacity
        when no slot frees up within ``timeout``. Pair with release_slot().

        Slots of instances already starting do not count against ``queue_limit``:
        requests that share a cold start are not overflow. A slot handed over as
        the caller gives up (cancelled or timed out) is never lost: a timed-out
        caller keeps it, a cancelled one returns it.
        """
        if len(self.waiters) >= queue_limit + self.starts * self.concurrency:
            raise TooManyRequests(
                f"{self.name} is at capacity and {len(self.waiters)} requests are already "
                "waiting; retry shortly",
                hint="raise scale.max or scale.concurrency (`plat scale`)",
            )
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Instance] = loop.create_future()
        self.waiters.append(waiter)
        # A timer, not asyncio.timeout around a shield: no task is cancelled and no
        # second future made per queued call. A waiter leaves the queue when it is
        # handed a slot (dispatch pops it) or here when it gives up.
        timer = loop.call_later(timeout, self._expire, waiter, timeout)
        try:
            inst = await waiter
        except PlatError:  # expired, or failed by the controller: out of the queue
            raise
        except BaseException:  # cancelled: a slot handed over meanwhile goes back
            if _granted(waiter):
                self._return(waiter.result())
                self.dispatch()
            else:
                waiter.cancel()
                self._forget(waiter)
            raise
        finally:
            timer.cancel()
        self.active += 1
        return inst

    def _expire(self, waiter: asyncio.Future[Instance], timeout: float) -> None:
        """No slot within the queue timeout (one handed over first is kept)."""
        if not waiter.done():
            self._forget(waiter)
            waiter.set_exception(
                NoCapacity(
                    f"no instance of {self.name} could take the request within {timeout:g} s"
                )
            )

    def _forget(self, waiter: asyncio.Future[Instance]) -> None:
        with contextlib.suppress(ValueError):
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
            self._grant(inst)
            waiter.set_result(inst)

    def release_slot(self, inst: Instance) -> None:
        """Return a slot that take() or wait_for_slot() gave the caller."""
        if not self._return(inst):
            return
        self.active -= 1
        if inst.state == "ready" and self.waiters:
            self.dispatch()

    def admission(self) -> Admission:
        """The books: every slot taken is held by exactly one caller."""
        held = sum(self.holders.values())
        counted = {*self.instances, *self.holders}
        matches = all(inst.inflight == self.holders.get(inst, 0) for inst in counted)
        return Admission(
            inflight=self.active,
            held=held,
            waiting=len(self.waiters),
            ok=matches and held == self.active and self.active >= 0,
        )

    def fail_waiters(self, error: PlatError) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)
