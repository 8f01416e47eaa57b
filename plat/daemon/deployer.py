"""One deploy, start to finish: build (or find) the artifact, record it, roll it out.

Events go to ``emit`` as dicts (streamed to the CLI as NDJSON). In dev mode a
newer deploy of the same function supersedes (cancels) the one in progress, and
a code-only change may skip the build (see ``Artifacts.hot``).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from plat.api import DeployEvent, Timings, message
from plat.daemon.drivers.secretvalue import Secrets
from plat.daemon.drivers.versions import Artifacts, BuildOutcome, Release
from plat.daemon.metrics import Metrics
from plat.daemon.serving.controller import Controller
from plat.daemon.store import Store
from plat.errors import BuildError
from plat.manifest import Manifest

Emit = Callable[[DeployEvent], None]
# The values of the secrets a manifest names; raises PlatError naming what is missing.
ResolveSecrets = Callable[[Manifest], Awaitable[Secrets]]


async def no_secrets(manifest: Manifest) -> Secrets:
    return {}


class Deployer:
    def __init__(
        self,
        store: Store,
        controller: Controller,
        artifacts: Artifacts,
        metrics: Metrics,
        resolve: ResolveSecrets = no_secrets,
    ) -> None:
        self.store = store
        self.resolve = resolve
        self.controller = controller
        self.artifacts = artifacts
        self.metrics = metrics
        self.locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._dev: dict[str, asyncio.Task[Any]] = {}

    def supersede(self, name: str, task: asyncio.Task[Any]) -> None:
        """Make ``task`` the dev deploy of ``name``, cancelling the one in progress."""
        previous = self._dev.get(name)
        if previous is not None and not previous.done():
            previous.cancel()
        self._dev[name] = task

    async def remove(self, name: str) -> None:
        """Remove function ``name``: its instances, its records, and what was stored for
        it under the home (artifacts, snapshots). Raises NotFoundError when unknown."""
        # A dev deploy under way holds the lock until its build ends: cancelled first.
        task = self._dev.pop(name, None)
        if task is not None and not task.done():
            task.cancel()
        async with self.locks[name]:
            await self.controller.remove(name)
            await self.artifacts.forget(name)

    async def deploy(
        self, manifest: Manifest, source: Path, emit: Emit, *, force: bool, dev: bool
    ) -> None:
        """Raises PlatError (BuildError, InstanceFailed...) after emitting progress."""
        started = time.monotonic()
        async with self.locks[manifest.name]:
            # What can be refused is refused before a build: quota, missing secrets.
            self.controller.quotas.check_deploy(
                manifest.name, max(1, manifest.scale.min), manifest.resources.memory
            )
            secrets = await self.resolve(manifest)
            emit({"type": "phase", "phase": "build"})
            outcome = await self._artifact(manifest, source, emit, force=force, dev=dev)
            emit(
                {
                    "type": "built",
                    "version": outcome.version,
                    "image": outcome.image,
                    "cached": outcome.cached,
                    "hot": bool(outcome.mounts),
                    "seconds": outcome.seconds,
                }
            )
            release = Release(
                manifest, outcome.version, outcome.image, dict(outcome.mounts), secrets
            )
            fs = self.controller.functions.get(manifest.name)
            timings: Timings = {"build": outcome.seconds, "start": 0.0, "ready": 0.0, "swap": 0.0}
            if fs is not None and fs.release == release and fs.ready_instances():
                emit(message("already serving this version"))
            else:
                emit({"type": "phase", "phase": "start"})
                before_swap = time.monotonic()
                fs = await self.controller.deploy(
                    release,
                    str(source.resolve()),
                    on_event=lambda m: emit(message(m)),
                )
                new = [i for i in fs.instances if i.ready_seconds is not None]
                timings["start"] = max((i.start_seconds or 0.0) for i in new) if new else 0.0
                timings["ready"] = max((i.ready_seconds or 0.0) for i in new) if new else 0.0
                timings["swap"] = max(
                    0.0, time.monotonic() - before_swap - timings["start"] - timings["ready"]
                )
            emit(
                {
                    "type": "done",
                    "version": outcome.version,
                    "cached": outcome.cached,
                    "hot": bool(outcome.mounts),
                    "build_seconds": outcome.seconds,
                    "ready_seconds": timings["start"] + timings["ready"],
                    "timings": timings,
                    "seconds": time.monotonic() - started,
                }
            )

    async def refresh_secrets(self, name: str) -> bool:
        """Roll function ``name`` onto its secrets' current values (blue/green, as a
        deploy); False when they did not change or it is not running."""
        async with self.locks[name]:
            fs = self.controller.functions.get(name)
            record = await self.store.get_function(name)
            if fs is None or record is None:
                return False
            secrets = await self.resolve(fs.manifest)
            if secrets == fs.release.secrets:
                return False
            await self.controller.deploy(replace(fs.release, secrets=secrets), record.source_dir)
            return True

    async def _artifact(
        self, manifest: Manifest, source: Path, emit: Emit, *, force: bool, dev: bool
    ) -> BuildOutcome:
        lines: list[str] = []

        def on_line(line: str) -> None:
            lines.append(line)
            emit({"type": "log", "line": line})

        started = time.monotonic()
        try:
            if dev and not force:
                # A code-only change is mounted; a dependency change may be installed.
                hot = await self.artifacts.hot(manifest, source, on_line)
                if hot is not None:
                    await self._record(manifest, hot)
                    return hot
            outcome = await self.artifacts.build(manifest, source, on_line, force=force)
        except BuildError:
            self.metrics.build_finished("failed", time.monotonic() - started)
            # Failed builds of known functions keep their log for `plat logs --build`.
            if await self.store.get_function(manifest.name):
                await self.store.record_version(
                    manifest.name,
                    "failed-" + time.strftime("%Y%m%d%H%M%S"),
                    "",
                    status="failed",
                    builder=self.artifacts.name,
                    build_log="\n".join(lines),
                    build_seconds=time.monotonic() - started,
                    manifest=manifest.to_dict(),
                )
            raise
        self.metrics.build_finished("cached" if outcome.cached else "built", outcome.seconds)
        known = await self.store.get_version(manifest.name, outcome.version)
        if not outcome.cached or known is None:
            await self._record(manifest, outcome)
        return outcome

    async def _record(self, manifest: Manifest, outcome: BuildOutcome) -> None:
        await self.store.record_version(
            manifest.name,
            outcome.version,
            outcome.image,
            status="built",
            builder=outcome.builder,
            build_log=outcome.log,
            build_seconds=outcome.seconds,
            manifest=manifest.to_dict(),
            mounts=dict(outcome.mounts),
        )
