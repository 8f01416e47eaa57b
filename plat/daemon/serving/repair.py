"""Instances that fail: checked when a call found them failing, replaced when they
are down or wedged, and noticed by the watchdog when they die between calls.

The watchdog follows the backend's exit events (a listing on each reconnection
covers what the stream missed); an instance a listing misses is replaced only
once the engine confirms it is gone. A ``suspect`` instance (the gateway could
not talk to it) takes no traffic until a health check clears it; one whose call
outran its timeout (``timed_out``) is checked for being wedged (every worker
stuck). A replacement starts first (the function's target), then the old one
drains (busy) or stops (down).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from plat.daemon.drivers.base import Backend, InstanceExit
from plat.daemon.serving.function_state import FunctionState
from plat.daemon.serving.instance import Instance
from plat.daemon.serving.instances import Instances
from plat.daemon.serving.probe import Health, probe_health
from plat.daemon.tasks import TaskGroup
from plat.errors import PlatError

log = logging.getLogger(__name__)

# Why an unhealthy instance is replaced, by what its health check found.
_UNHEALTHY: dict[Health, str] = {
    "down": "exited or stopped answering",
    "busy": "has every worker stuck in calls that outran their timeout",
}


class Repair:
    def __init__(
        self,
        functions: dict[str, FunctionState],
        instances: Instances,
        backend: Backend,
        ensure: Callable[[FunctionState], None],
        tasks: TaskGroup,
    ) -> None:
        self.functions = functions
        self.instances = instances
        self.backend = backend
        self.ensure = ensure
        self.tasks = tasks

    def suspect(self, inst: Instance) -> None:
        """The gateway could not talk to ``inst``: no traffic until a check clears it."""
        if inst.state != "ready":
            return
        inst.state = "suspect"
        self.tasks.spawn(self._check(inst), name=f"check-{inst.id}")

    async def _check(self, inst: Instance) -> None:
        health = await self._health(inst)
        if health == "ready" and inst.state == "suspect":
            inst.state = "ready"
            fs = self.functions.get(inst.function)
            if fs is not None:
                fs.dispatch()
        elif health != "ready":
            await self.replace(inst, health)

    def timed_out(self, inst: Instance) -> None:
        """A call on ``inst`` outran its timeout: replace it if it is wedged (every
        worker stuck in a handler that never returns, or no answer at all)."""
        if inst.state != "ready" or inst.checking:
            return
        inst.checking = True
        self.tasks.spawn(self._check_wedged(inst), name=f"wedged-{inst.id}")

    async def _check_wedged(self, inst: Instance) -> None:
        try:
            health = await self._health(inst)
        finally:
            inst.checking = False
        if health != "ready" and inst.state == "ready":
            await self.replace(inst, health)

    async def _health(self, inst: Instance) -> Health:
        running = inst.running
        try:
            if not await self.backend.is_alive(running):
                return "down"
        except PlatError as exc:  # the engine is away: the probe alone tells
            log.warning("could not ask the engine about instance %s: %s", inst.id, exc)
        return await probe_health(self.instances.session, running.host, running.port, timeout=2.0)

    async def replace(self, inst: Instance, health: Health) -> None:
        """Take ``inst`` out of service and start its successor. A busy (wedged) one
        drains first: its calls end at their deadlines with the function's 504."""
        fs = self.functions.get(inst.function)
        if fs is None or inst not in fs.instances:
            return
        why = _UNHEALTHY[health]
        log.warning("instance %s of %s %s; replacing it", inst.id, fs.name, why)
        fs.instances.remove(inst)
        self.ensure(fs)
        if health == "busy":
            await self.instances.drain(inst, why)
        else:
            await self.instances.stop(inst, why, timeout=1.0)

    async def watch(self, interval: float) -> None:
        """Notice instances that die between calls, from the backend's exit events.

        On every (re)connection to the event stream one listing covers what the
        stream missed meanwhile (the engine restarted, the daemon just started).
        Removals that failed while the engine was away are retried every
        ``interval`` s."""
        sweeper = asyncio.create_task(self._sweep_every(interval), name="sweeper")
        try:
            while True:
                try:
                    # From now on: what happened before is the listing's to find.
                    await self._listen(time.time())
                except PlatError as exc:
                    log.warning("lost the engine's event stream (reconnecting): %s", exc.message)
                except Exception:  # the watchdog outlives anything a backend does
                    log.exception("the instance event stream failed; reconnecting")
                await asyncio.sleep(interval)
        finally:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)

    async def _listen(self, since: float) -> None:
        """Exits since ``since`` (a listing first: instances gone before that), until
        the stream ends."""
        events = self.backend.events(since)
        try:
            await self._check_listing(since)
            async for exit in events:
                self._exited(exit)
        finally:
            close = getattr(events, "aclose", None)  # an async generator's
            if close is not None:
                await close()

    def _exited(self, exit: InstanceExit) -> None:
        for fs in list(self.functions.values()):
            for inst in fs.instances:
                if inst.running.backend_ref == exit.backend_ref and inst.state in (
                    "ready",
                    "suspect",
                ):
                    log.warning(
                        "instance %s of %s exited (code %s)", inst.id, fs.name, exit.exit_code
                    )
                    self.tasks.spawn(self.replace(inst, "down"), name=f"replace-{inst.id}")
                    return

    async def _check_listing(self, listed_at: float) -> None:
        alive = {r.backend_ref for r in await self.backend.list() if r.running}
        for fs in list(self.functions.values()):
            for inst in list(fs.instances):
                if (
                    inst.state in ("ready", "suspect")
                    and inst.running.backend_ref not in alive
                    and inst.started_at < listed_at
                ):
                    self.tasks.spawn(self._confirm_down(inst), name=f"confirm-{inst.id}")

    async def _sweep_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.instances.sweep()

    async def _confirm_down(self, inst: Instance) -> None:
        """A listing missed ``inst``: replace it only if the engine says it is gone (a
        listing can miss an instance that just started or was just renamed)."""
        try:
            alive = await self.backend.is_alive(inst.running)
        except PlatError as exc:
            log.warning("could not ask the engine about instance %s: %s", inst.id, exc)
            return
        if not alive:
            await self.replace(inst, "down")
