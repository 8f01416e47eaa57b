"""When the daemon gives its heap back: only when idle and grown, and glibc's trim
really returns freed pages."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest

from plat.daemon.heap import HeapTrimmer, libc_trim, resident_bytes

MIB = 1 << 20


class Rig:
    def __init__(self) -> None:
        self.busy = False
        self.rss = 100 * MIB
        self.trimmed = 0

    def trim(self) -> None:
        self.trimmed += 1
        self.rss = 90 * MIB

    def trimmer(self) -> HeapTrimmer:
        return HeapTrimmer(lambda: self.busy, trim=self.trim, resident=lambda: self.rss)


async def test_a_grown_heap_is_trimmed_once_the_calls_are_over() -> None:
    rig = Rig()
    trimmer = rig.trimmer()
    await trimmer.check()
    assert rig.trimmed == 0  # not grown since the start
    rig.busy, rig.rss = True, 130 * MIB
    await trimmer.check()
    assert rig.trimmed == 0  # a burst in progress: not now
    rig.busy = False
    await trimmer.check()
    assert rig.trimmed == 1 and trimmer.floor == 90 * MIB
    await trimmer.check()
    assert rig.trimmed == 1  # nothing grew since: an idle daemon does not trim again


async def test_small_growth_is_left_alone_and_the_floor_follows_memory_down() -> None:
    rig = Rig()
    trimmer = rig.trimmer()
    rig.rss = 103 * MIB
    await trimmer.check()
    assert rig.trimmed == 0
    rig.rss = 80 * MIB
    await trimmer.check()
    assert trimmer.floor == 80 * MIB
    rig.rss = 85 * MIB  # 5 MiB over the new floor
    await trimmer.check()
    assert rig.trimmed == 1


async def test_without_malloc_trim_nothing_is_done() -> None:
    trimmer = HeapTrimmer(lambda: False, trim=None, resident=lambda: 500 * MIB)
    trimmer.floor = 0
    await trimmer.check()
    assert trimmer.trims == 0


async def test_run_checks_every_interval_until_cancelled() -> None:
    rig = Rig()
    trimmer = rig.trimmer()
    rig.rss = 200 * MIB
    task = asyncio.create_task(trimmer.run(0.01))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if rig.trimmed:
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rig.trimmed == 1


def test_resident_size_is_read_from_proc() -> None:
    assert 10 * MIB < resident_bytes() < 4096 * MIB


def test_glibcs_trim_returns_the_pages_a_fragmented_heap_freed() -> None:
    """In a fresh interpreter: 60 MB of 1 kB buffers, every 64th pinned by a small
    object allocated between them, are freed; the heap cannot shrink from its top,
    so resident memory stays until the trim hands the free pages back."""
    if libc_trim() is None:
        pytest.fail("this host's C library has no malloc_trim (glibc expected)")
    script = textwrap.dedent(
        """
        from plat.daemon.heap import libc_trim, resident_bytes
        junk, keep = [], []
        for i in range(60000):
            junk.append(bytes(1000) + bytes([i % 256]))
            if i % 64 == 0:
                keep.append(bytes(200) + bytes([i % 256]))
        del junk
        freed = resident_bytes()
        libc_trim()()
        print(freed, resident_bytes())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    freed, trimmed = (int(x) for x in out.split())
    assert freed - trimmed > 30 * MIB, (freed >> 20, trimmed >> 20)
