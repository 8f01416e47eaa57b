"""Work in order per key, one item at a time; a newer item supersedes a waiting one.

A hook's deliveries for one branch run one after the other (their deploys and
removals must not overtake each other); a push that arrives while an older one
of the same branch still waits takes its place, since only the newest commit of
a branch is worth deploying. Different keys run side by side.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from plat.daemon.tasks import TaskGroup

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class _Lane(Generic[T]):
    pending: T | None = None
    worker: asyncio.Task[Any] | None = None
    running: T | None = field(default=None)


class Lanes(Generic[T]):
    def __init__(self, tasks: TaskGroup, run: Callable[[T], Awaitable[None]]) -> None:
        """``run`` does one item; what it raises is logged, and the lane goes on."""
        self._tasks = tasks
        self._run = run
        self._lanes: dict[Hashable, _Lane[T]] = {}

    def put(self, key: Hashable, item: T) -> T | None:
        """Queue ``item`` on ``key``'s lane; returns the item it superseded, if any."""
        lane = self._lanes.setdefault(key, _Lane())
        old, lane.pending = lane.pending, item
        if lane.worker is None:
            lane.worker = self._tasks.spawn(self._drain(key, lane), name=f"lane-{key}")
        return old

    def busy(self, key: Hashable) -> bool:
        """Whether ``key``'s lane has an item running or waiting."""
        return key in self._lanes

    def running(self) -> list[T]:
        return [lane.running for lane in self._lanes.values() if lane.running is not None]

    def waiting(self) -> list[T]:
        return [lane.pending for lane in self._lanes.values() if lane.pending is not None]

    async def _drain(self, key: Hashable, lane: _Lane[T]) -> None:
        try:
            while lane.pending is not None:
                item, lane.pending = lane.pending, None
                lane.running = item
                try:
                    await self._run(item)
                except Exception:
                    log.exception("work on %s failed", key)
                finally:
                    lane.running = None
        finally:
            lane.worker = None
            if lane.pending is None:
                self._lanes.pop(key, None)
