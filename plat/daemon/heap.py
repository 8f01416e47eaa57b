"""Giving the heap a burst grew back to the system once the burst is over.

A thousand connections at once leave the daemon's resident memory tens of MiB
above where it was when they close: CPython frees their objects and buffers, but
glibc keeps the freed pages in its heap for the next ``malloc``, so the memory is
reusable by the daemon and unavailable to everything else on the machine.
``malloc_trim(0)`` hands it back. It is called from a periodic check, only when
nothing is in flight (trimming under load frees little, and a burst in progress
grows the heap again) and the resident memory has grown by ``growth`` bytes since
the last trim (so an idle daemon does not trim every period). Where the C library
has no ``malloc_trim`` (not glibc) the check does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
from collections.abc import Callable

log = logging.getLogger("plat.heap")

INTERVAL = 15.0  # seconds between checks
GROWTH = 4 << 20  # bytes of resident growth since the last trim that make it worth one
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int:
    """This process's resident set size (0 where /proc is not there)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return 0


def libc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)``, or None where the C library has none."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class HeapTrimmer:
    """Decides when to trim; ``check`` is one periodic look (its parts are seams for
    tests: the load, the resident size and the trim itself)."""

    def __init__(
        self,
        busy: Callable[[], bool],
        *,
        trim: Callable[[], object] | None = None,
        resident: Callable[[], int] = resident_bytes,
        growth: int = GROWTH,
    ) -> None:
        self.busy = busy
        self.trim = trim
        self.resident = resident
        self.growth = growth
        self.floor = resident()  # resident bytes after the last trim (or at start)
        self.trims = 0

    def due(self) -> bool:
        if self.trim is None or self.busy():
            return False
        now = self.resident()
        if now < self.floor:  # memory went back by itself: follow it down
            self.floor = now
        return now - self.floor >= self.growth

    async def check(self) -> None:
        if not self.due():
            return
        before = self.resident()
        assert self.trim is not None
        # In a thread: the C call releases the GIL, and a big heap takes milliseconds.
        await asyncio.to_thread(self.trim)
        self.floor = self.resident()
        self.trims += 1
        log.debug("heap trimmed: resident %d -> %d KiB", before >> 10, self.floor >> 10)

    async def run(self, interval: float = INTERVAL) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.check()
