"""One instance as the serving wing sees it, and a start under way."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Literal

from plat.daemon.drivers.base import RunningInstance
from plat.daemon.drivers.versions import Release

# starting: not ready yet; ready: takes traffic; suspect: a call failed on it, a
# check decides; draining: no new calls, its own end; stopped: gone or going.
InstanceState = Literal["starting", "ready", "suspect", "draining", "stopped"]
INSTANCE_STATES: tuple[InstanceState, ...] = ("starting", "ready", "suspect", "draining")


@dataclass(eq=False)
class Instance:
    running: RunningInstance
    started_at: float
    state: InstanceState = "starting"
    inflight: int = 0
    start_seconds: float | None = None
    ready_seconds: float | None = None
    pooled: bool = False  # specialised from the pre-warmed pool
    checking: bool = False  # a health check after a timeout is under way
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def id(self) -> str:
        return self.running.id

    @property
    def function(self) -> str:
        return self.running.function

    @property
    def total_ready_seconds(self) -> float | None:
        """From the start request to ready (None until ready)."""
        if self.ready_seconds is None:
            return None
        return self.ready_seconds + (self.start_seconds or 0.0)


@dataclass(eq=False)
class Start:
    """An instance being started for ``release``; ``instance`` once the backend made it."""

    release: Release
    instance: Instance | None = None
