"""Background tasks that are kept, logged when they fail, and cancelled on close."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class TaskGroup:
    def __init__(self, log: logging.Logger) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._log = log

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()


class Finishing:
    """Work that, once begun, runs to its end even if its caller is cancelled (so that
    what it makes or removes is known); ``wait`` awaits what still runs (at shutdown)."""

    def __init__(self) -> None:
        self._running: set[asyncio.Future[Any]] = set()

    async def run(self, work: Awaitable[T]) -> T:
        task = asyncio.ensure_future(work)
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return await asyncio.shield(task)

    async def wait(self) -> None:
        await asyncio.gather(*self._running, return_exceptions=True)


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it has ended (its outcome is not raised)."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
