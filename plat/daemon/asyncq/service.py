"""The queued-calls service: the queue, its door on the gateway, callbacks, cron
and retention, built and started together. The control API's call routes use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from plat.daemon.asyncq.callbacks import CallbackPolicy, Callbacks
from plat.daemon.asyncq.cron import Cron
from plat.daemon.asyncq.door import AsyncDoor
from plat.daemon.asyncq.invoker import Invoker
from plat.daemon.asyncq.ledger import Ledger
from plat.daemon.asyncq.queue import AsyncQueue, QueueState
from plat.daemon.gateway import Gateway
from plat.daemon.store import Store
from plat.daemon.store.calls import QueuedCall

log = logging.getLogger(__name__)

TRIM_INTERVAL = 60.0


@dataclass(frozen=True)
class CallRetention:
    calls: int = 10_000  # finished calls kept per function
    age: float = 7 * 86400.0


class CallService:
    def __init__(
        self,
        store: Store,
        gateway: Gateway,
        *,
        auth_header: str,
        callback_policy: CallbackPolicy,
        retention: CallRetention | None = None,
    ) -> None:
        self.store = store
        self.gateway = gateway
        self.retention = retention or CallRetention()
        self.ledger = Ledger(store)
        self.invoker = Invoker(gateway.invoke)
        self.callbacks = Callbacks(store, self.ledger, callback_policy)
        self.queue = AsyncQueue(
            store,
            self.ledger,
            self.invoker,
            gateway.controller.functions,
            auth_header=auth_header,
            on_finished=self.callbacks.deliver,
        )
        self.cron = Cron(store, self.ledger, self.queue, gateway.controller.functions)
        self._trimmer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.ledger.start()
        await self.queue.start()
        await self.callbacks.start()
        await self.cron.start()
        self.gateway.async_door = AsyncDoor(self.gateway, self.queue, self.callbacks.check_url)
        self._trimmer = asyncio.get_running_loop().create_task(self._trim(), name="calls-trim")

    async def close(self) -> None:
        self.gateway.async_door = None
        if self._trimmer is not None:
            self._trimmer.cancel()
            await asyncio.gather(self._trimmer, return_exceptions=True)
        await self.cron.close()
        await self.queue.close()
        await self.callbacks.close()
        await self.ledger.close()
        await self.invoker.close()

    def states(self) -> list[QueueState]:
        return self.queue.states()

    async def retry(self, call: QueuedCall) -> QueuedCall:
        return await self.queue.retry(call)

    async def _trim_calls(self) -> None:
        """Finished calls past the retention deleted, on the store's connection: the
        ledger's own writes need no turn of theirs to wait for it."""
        r = self.retention
        for function in await self.store.called_functions():
            try:
                await self.store.trim_calls(function, r.calls, time.time() - r.age)
                await self.store.commit()
            except BaseException:
                with contextlib.suppress(Exception):
                    await self.store.db.rollback()
                raise

    async def _trim(self) -> None:
        while True:
            await asyncio.sleep(TRIM_INTERVAL)
            try:
                await self._trim_calls()
            except Exception:
                log.exception("trimming finished calls failed")
