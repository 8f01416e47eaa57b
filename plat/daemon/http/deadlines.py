"""Coarse deadlines for many concurrent waits: one loop timer per tick, not one per wait.

The gateway gives every call a deadline (the function's timeout). A loop timer
per call costs a timer handle created and cancelled per request; here a call
joins the set of its time slot (``resolution`` wide) and leaves it when done,
and one timer fires per occupied slot. A deadline is met up to ``resolution``
late.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Expiring(Protocol):
    def expire(self) -> None:
        """The deadline passed. Must not raise."""


class Deadlines:
    """Calls ``expire()`` on each item added, at its deadline unless removed before.

    Deadlines are in the loop's clock (``loop.time()``).
    """

    def __init__(self, resolution: float = 0.05) -> None:
        self.resolution = resolution
        self._per_second = 1.0 / resolution
        self._slots: dict[int, set[Expiring]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_slot = 0

    @property
    def pending(self) -> int:
        """Items registered and not expired or removed yet."""
        return sum(len(items) for items in self._slots.values())

    def add(self, item: Expiring, deadline: float) -> int:
        """Register ``item``; returns the slot to pass to ``remove``."""
        slot = int(deadline * self._per_second) + 1
        items = self._slots.get(slot)
        if items is None:
            items = self._slots[slot] = set()
            if self._timer is None or slot < self._timer_slot:
                self._schedule(slot)
        items.add(item)
        return slot

    def remove(self, item: Expiring, slot: int) -> None:
        items = self._slots.get(slot)
        if items is not None:
            items.discard(item)
            if not items:
                del self._slots[slot]

    def close(self) -> None:
        """Forget every deadline (none expires). Idempotent."""
        self._slots.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule(self, slot: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_slot = slot
        self._timer = asyncio.get_running_loop().call_at(slot * self.resolution, self._fire)

    def _fire(self) -> None:
        self._timer = None
        # The timer was for _timer_slot: the loop may run it a clock tick early.
        now = max(self._timer_slot, int(asyncio.get_running_loop().time() * self._per_second))
        for slot in sorted(s for s in self._slots if s <= now):
            for item in self._slots.pop(slot):
                item.expire()
        if self._slots:
            self._schedule(min(self._slots))
