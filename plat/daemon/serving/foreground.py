"""Starts on a caller's path, and the background work that lets them pass.

A deploy's instance or a cold start that the pool cannot serve starts a
container while someone waits for it. The pool's own work (starting members,
unpacking a new version for later claims) has no one waiting: on two cores,
run beside a start it made that start take three times as long (a function's
first deploy: 1.06 s against 0.34 s for the next). So the pool waits until no
such start is in flight, for ``limit`` seconds at most, then goes on anyway:
a burst of starts delays a refill, it never stops one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator

POLL = 0.1  # how often a waiter asks whether it is wanted after all


class Foreground:
    def __init__(self) -> None:
        self.starting = 0
        self._quiet = asyncio.Event()
        self._quiet.set()

    @contextlib.contextmanager
    def start(self) -> Iterator[None]:
        """Around a start someone waits for."""
        self.starting += 1
        self._quiet.clear()
        try:
            yield
        finally:
            self.starting -= 1
            if not self.starting:
                self._quiet.set()

    async def quiet(self, limit: float, wanted: Callable[[], bool] = lambda: False) -> None:
        """Wait until no start is in flight, ``limit`` seconds at most, or until
        ``wanted()`` (someone waits for the background work after all)."""
        deadline = time.monotonic() + limit
        while self.starting and not wanted():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._quiet.wait(), min(left, POLL))
