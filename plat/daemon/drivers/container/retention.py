"""Which of a function's images stay in the engine's store.

Every build of a new version makes an image (``localhost/plat/<name>:<version>``,
labelled ``plat.function=<name>``). Kept forever they pile up, and the store's
size is what every later build and container start pays for: measured on one
machine, a deploy took 0.63 s of wall time with 4 in parallel on a store of
three images and 1.57 s on one of 1,300. So a function keeps its ``keep`` newest
images (the one serving, and the ones before it for a quick redeploy of a
previous version), and ``plat rm`` removes them all. An image a container
still uses (an instance draining, a standby) is not removed; the next prune
tries it again. Stack images are shared by functions and stay.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Mapping

from plat.daemon.drivers.container.builders import Builder, Image

log = logging.getLogger("plat.images")

KEEP = 3
LABEL = "plat.function"


def surplus(
    images: list[Image], keep: int, spare: str, order: Mapping[str, int] | None = None
) -> list[str]:
    """The tags to remove: all but the ``keep`` newest images, never ``spare`` (pure).

    ``order`` (tag -> a number that grows with each build) settles images created in
    the same second: the engine's listing gives whole seconds, and two deploys can
    come that close."""
    seen = order or {}

    def age(image: Image) -> tuple[float, int]:
        return image.created, max((seen.get(tag, 0) for tag in image.tags), default=0)

    newest = sorted(images, key=age, reverse=True)
    kept = 1 if any(spare in image.tags for image in images) else 0
    drop: list[str] = []
    for image in newest:
        if spare in image.tags:
            continue
        if kept < keep:
            kept += 1
            continue
        drop.extend(image.tags)
    return drop


class ImageRetention:
    """Prunes a function's old images in the background after a build, and removes
    them all when it is removed. ``on_removed`` hears of each tag removed (caches)."""

    def __init__(
        self, builder: Builder, on_removed: Callable[[str], None], keep: int = KEEP
    ) -> None:
        self.builder = builder
        self.on_removed = on_removed
        self.keep = keep
        self._tasks: set[asyncio.Task[None]] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._order: dict[str, int] = {}  # tags built by this daemon, in build order
        self._builds = itertools.count(1)

    def built(self, name: str, tag: str) -> None:
        """``tag`` was just built for ``name``: prune the older ones, off the deploy's path."""
        self._order[tag] = next(self._builds)
        task = asyncio.create_task(self._prune(name, tag), name=f"prune-images-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _prune(self, name: str, spare: str) -> None:
        await self._remove(name, self.keep, spare)

    async def remove_all(self, name: str) -> None:
        await self._remove(name, 0, "")
        self._locks.pop(name, None)  # the function is gone: its lock need not stay

    async def _remove(self, name: str, keep: int, spare: str) -> None:
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            try:
                images = await self.builder.labelled(f"{LABEL}={name}")
                for tag in surplus(images, keep, spare, self._order):
                    self._order.pop(tag, None)
                    self.on_removed(tag)
                    await self.builder.remove_image(tag)
            except Exception:  # images left behind, nothing worse: never fails a deploy or rm
                log.warning("could not remove old images of %s", name, exc_info=True)

    async def wait(self) -> None:
        """Let the prunes under way end (tests; the daemon's shutdown)."""
        await asyncio.gather(*self._tasks, return_exceptions=True)
