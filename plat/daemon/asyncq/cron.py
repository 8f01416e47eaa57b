"""``schedule:`` lines turned into queued calls when they fire.

Each (function, line) remembers in the store the last tick it queued a call for.
When a line has fired since (the daemon was down over one tick or many), one call
is queued, not one per missed tick; a line seen for the first time starts with
its next tick, and so does a removed function deployed again. A tick is a
``POST /`` with ``X-Plat-Trigger: cron`` and a JSON body naming the line and the
tick, queued like any async call (retries, queue limit, ``plat calls``). Times
are UTC.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from plat.daemon.asyncq.ledger import Ledger
from plat.daemon.asyncq.queue import AsyncQueue, QueueFull
from plat.daemon.serving.function_state import FunctionState
from plat.daemon.store import Store
from plat.daemon.store.calls import QueuedCall, tick_saved, ticks_forgotten
from plat.triggers import last_tick, next_tick

log = logging.getLogger(__name__)

# Deploys and removals are noticed at least this often.
MAX_SLEEP = 1.0


class Cron:
    def __init__(
        self,
        store: Store,
        ledger: Ledger,
        queue: AsyncQueue,
        functions: Mapping[str, FunctionState],
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.queue = queue
        self.functions = functions
        self._ticks: dict[tuple[str, str], float] = {}
        self._seen: set[str] = set()  # scheduled functions seen deployed by this daemon
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._ticks = await self.store.cron_ticks()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="cron")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def next_runs(self) -> dict[str, float]:
        """When each scheduled function is called next (seconds since the epoch)."""
        now = time.time()
        out: dict[str, float] = {}
        for key, fs in list(self.functions.items()):
            for line in fs.manifest.schedule:
                at = next_tick(line, max(now, self._ticks.get((key, line), 0.0)))
                out[key] = min(out.get(key, at), at)
        return out

    async def _run(self) -> None:
        while True:
            try:
                await self.tick(time.time())
            except Exception:
                log.exception("the cron scheduler failed; trying again")
            upcoming = self.next_runs().values()
            wait = min([*upcoming, time.time() + MAX_SLEEP]) - time.time()
            await asyncio.sleep(min(max(wait, 0.05), MAX_SLEEP))

    async def tick(self, now: float) -> None:
        """Queue a call for every line that fired since its last queued tick."""
        self._forget_removed()
        for key, fs in list(self.functions.items()):
            if fs.manifest.schedule:
                self._seen.add(key)
            for line in fs.manifest.schedule:
                fired = last_tick(line, now)
                seen = self._ticks.get((key, line))
                if seen is None:  # new: from its next tick on
                    self._remember(key, line, fired)
                    continue
                if fired <= seen:
                    continue
                self._remember(key, line, fired)
                await self._queue(fs, line, fired, now)

    def _forget_removed(self) -> None:
        """Forget the ticks of functions removed since they were seen: deployed again,
        one starts afresh rather than being called at once for the time it was away."""
        for key in self._seen - self.functions.keys():
            self._seen.discard(key)
            for known in [k for k in self._ticks if k[0] == key]:
                del self._ticks[known]
            self.ledger.write(ticks_forgotten(key))

    def _remember(self, key: str, line: str, tick: float) -> None:
        self._ticks[(key, line)] = tick
        self.ledger.write(tick_saved(key, line, tick))

    async def _queue(self, fs: FunctionState, line: str, tick: float, now: float) -> None:
        stamp = datetime.fromtimestamp(tick, UTC).isoformat()
        call = QueuedCall(
            id=secrets.token_hex(16),
            function=fs.name,
            trigger="cron",
            method="POST",
            target="/",
            headers=[("Content-Type", "application/json")],
            body=json.dumps({"schedule": line, "tick": stamp}).encode(),
            callback_url=None,
            created_at=now,
            next_at=now,
            updated_at=now,
        )
        try:
            await self.queue.accept(call, fs.manifest)
        except QueueFull as exc:
            log.warning("the %s tick of %s was not queued: %s", stamp, fs.name, exc.message)
