"""The functions service: deploy, remove, rescale, describe and list functions.

What the control API offers, over the controller (what runs), the deployer (how a
version gets built and rolled out) and the store (what is recorded). Every change
to a function happens under its lock, one at a time.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from plat.api import (
    Description,
    FunctionSummary,
    InstanceView,
    ScaleResult,
    VersionView,
)
from plat.daemon.deployer import Deployer, Emit
from plat.daemon.metrics import Metrics
from plat.daemon.secrets.service import SecretsService
from plat.daemon.serving.controller import Controller
from plat.daemon.store import FunctionRecord, Store
from plat.errors import NotFoundError, PlatError, no_function
from plat.manifest import Manifest, Scale, load_manifest, validate_manifest
from plat.tenancy import DEFAULT_TENANT, function_key, split_key
from plat.triggers import next_tick


def next_run(schedule: list[str], now: float) -> float | None:
    """When the first of ``schedule``'s cron lines fires next (None without one)."""
    return min((next_tick(line, now) for line in schedule), default=None)


def with_scale(manifest: Manifest, override: dict[str, Any]) -> Manifest:
    """``manifest`` with some of its scale settings replaced (validated)."""
    merged = {**manifest.scale.model_dump(), **override}
    try:
        scale = Scale.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'scale'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise PlatError(f"invalid scale settings: {problems}") from None
    return manifest.model_copy(update={"scale": scale})


class Functions:
    def __init__(
        self,
        store: Store,
        controller: Controller,
        deployer: Deployer,
        metrics: Metrics,
        *,
        url_of: Callable[[str], str],
        uploads: Path | None = None,
        secrets: SecretsService | None = None,
    ) -> None:
        """``uploads``: where folders uploaded over HTTP are unpacked (and kept while
        a function's current version came from one)."""
        self.store = store
        self.controller = controller
        self.deployer = deployer
        self.metrics = metrics
        self.url_of = url_of
        self.uploads = uploads
        self.secrets = secrets
        self.uploading: set[Path] = set()
        self._pruning = asyncio.Lock()

    @property
    def builder(self) -> str:
        return self.deployer.artifacts.name

    def __len__(self) -> int:
        return len(self.controller.functions)

    async def record(self, name: str) -> FunctionRecord:
        """The stored function; NotFoundError when there is none."""
        record = await self.store.get_function(name)
        if record is None:
            raise no_function(name)
        return record

    # what is there

    def summary(self, key: str) -> FunctionSummary:
        fs = self.controller.get(key)
        name, tenant = split_key(key)
        return {
            "name": name,
            "tenant": tenant,
            "runtime": fs.manifest.runtime,
            "version": fs.version,
            "image": fs.image,
            "auth": fs.manifest.auth,
            "url": self.url_of(key),
            "instances": len(fs.ready_instances()),
            "desired": fs.target,
            "next_run": next_run(fs.manifest.schedule, time.time()),
        }

    async def summaries(self, tenant: str | None = None) -> list[FunctionSummary]:
        """The functions of ``tenant`` (None: of every tenant)."""
        out: list[FunctionSummary] = []
        previews = {p.function: p for p in await self.store.list_previews()}
        for record in await self.store.list_functions():
            name, owner = split_key(record.name)
            if tenant is not None and owner != tenant:
                continue
            item: FunctionSummary
            if record.name in self.controller.functions:
                item = self.summary(record.name)
            else:
                item = {
                    "name": name,
                    "tenant": owner,
                    "version": record.version,
                    "instances": 0,
                    "runtime": record.manifest.get("runtime"),
                    "url": None,
                }
            item["updated_at"] = record.updated_at
            preview = previews.get(record.name)
            if preview is not None:  # made by a git hook for a branch (plat.daemon.hooks)
                item["preview"] = {
                    "hook": preview.hook,
                    "branch": preview.branch,
                    "expires_at": preview.expires_at,
                }
            out.append(item)
        return out

    async def describe(self, name: str) -> Description:
        """``name``: the function's key."""
        record = await self.record(name)
        plain, tenant = split_key(name)
        body: Description = {
            "name": plain,
            "tenant": tenant,
            "manifest": {**record.manifest, "name": plain},
            "source_dir": record.source_dir,
            "version": record.version,
            "created_at": record.created_at,
            "updated_at": record.updated_at,
            "scale_override": record.scale_override,
        }
        fs = self.controller.functions.get(name)
        if fs is not None:
            body.update(self.summary(name))
            d = fs.decision
            body["autoscaler"] = {
                "desired": fs.target,
                "actual": len(fs.ready_instances()),
                "starting": fs.starts,
                "observed_concurrency": round(d.observed_stable, 3) if d else 0.0,
                "panic_concurrency": round(d.observed_panic, 3) if d else 0.0,
                "panicking": bool(d and d.panicking),
                "in_flight": fs.inflight(),
                "queued": len(fs.waiters),
            }
            body["admission"] = fs.admission().as_dict()
        body["versions"] = [
            VersionView(
                version=v.version,
                image=v.image,
                status=v.status,
                builder=v.builder,
                build_seconds=v.build_seconds,
                created_at=v.created_at,
            )
            for v in await self.store.list_versions(name)
        ]
        body["instance_list"] = await self._instance_views(name)
        return body

    async def _instance_views(self, name: str) -> list[InstanceView]:
        if name in self.controller.functions:  # what runs (the store may lag: a full disk)
            return [
                InstanceView(
                    id=i.id,
                    version=i.running.version,
                    address=i.running.address,
                    state=i.state,
                    started_at=i.started_at,
                    ready_seconds=i.total_ready_seconds,
                )
                for i in self.controller.live_instances(name)
            ]
        return [
            InstanceView(
                id=i.id,
                version=i.version,
                address=i.address,
                state=i.state,
                started_at=i.started_at,
                ready_seconds=i.ready_seconds,
            )
            for i in await self.store.list_instances(name)
        ]

    async def build_log(self, name: str, version: str) -> tuple[str, str]:
        """(version, log) of a build; ``latest`` names the newest."""
        if version == "latest":
            versions = await self.store.list_versions(name)
            if not versions:
                raise NotFoundError(f"no builds of {name!r}", hint="`plat deploy` builds it")
            version = versions[0].version
        text = await self.store.build_log(name, version)
        if text is None:
            raise NotFoundError(f"no build {version} of {name!r}")
        return version, text

    # changes

    async def load(self, source: Path, tenant: str = DEFAULT_TENANT) -> Manifest:
        """The manifest of the folder ``source`` as ``tenant``'s (named by its key), with
        the scale overrides `plat scale` set."""
        manifest = await asyncio.to_thread(load_manifest, source)
        if tenant != DEFAULT_TENANT:
            manifest = manifest.model_copy(update={"name": function_key(manifest.name, tenant)})
        record = await self.store.get_function(manifest.name)
        if record is not None and record.scale_override:
            manifest = with_scale(manifest, record.scale_override)
        return manifest

    async def deploy(
        self, manifest: Manifest, source: Path, emit: Emit, *, force: bool, dev: bool
    ) -> None:
        """Build and roll out; emits progress, then the function's summary.
        Raises PlatError (BuildError, InstanceFailed...) after emitting progress."""
        await self.deployer.deploy(manifest, source, emit, force=force, dev=dev)
        self.track_secrets(manifest.name)
        emit({"type": "function", "function": self.summary(manifest.name)})

    def track_secrets(self, name: str | None = None) -> None:
        """Have the Vault secrets of function ``name`` (None: of every function)
        re-read on their TTL, rolling it when a value changes."""
        if self.secrets is None:
            return
        names = [name] if name is not None else list(self.controller.functions)
        for key in names:
            fs = self.controller.functions.get(key)
            if fs is not None:
                self.secrets.track(
                    key,
                    fs.manifest.secrets,
                    self.deployer.refresh_secrets,
                    values=fs.release.secrets,
                )

    def supersede(self, name: str, task: asyncio.Task[Any]) -> None:
        self.deployer.supersede(name, task)

    async def remove(self, name: str) -> None:
        if self.secrets is not None:
            self.secrets.untrack(name)
        await self.deployer.remove(name)
        self.metrics.remove_function(name)
        await self.prune_uploads()

    async def prune_uploads(self, done: Path | None = None) -> None:
        """Remove uploaded folders no function's record names (``done``: a deploy
        from that folder ended, kept only if it is now the function's source)."""
        # One prune at a time: a prune that read the records before another deploy
        # recorded its folder must not remove that folder afterwards.
        async with self._pruning:
            if done is not None:
                self.uploading.discard(done)
            if self.uploads is None or not self.uploads.is_dir():
                return
            used = {Path(r.source_dir) for r in await self.store.list_functions()}
            for folder in self.uploads.iterdir():
                if folder.is_dir() and folder not in used and folder not in self.uploading:
                    await asyncio.to_thread(shutil.rmtree, folder, True)

    async def rescale(self, name: str, changes: dict[str, Any], *, reset: bool) -> ScaleResult:
        """Change scale settings now; they outlive redeploys (an override) until reset.
        ``reset`` goes back to what plat.yaml declares, then applies ``changes``."""
        record = await self.record(name)
        fs = self.controller.get(name)
        override: dict[str, Any] | None
        if reset:
            base = validate_manifest(
                {**fs.manifest.to_dict(), "scale": await self._declared_scale(record)},
                source=f"manifest of {name}",
                qualified=True,
            )
            manifest = with_scale(base, changes) if changes else base
            override = changes or None
        else:
            override = {**(record.scale_override or {}), **changes}
            manifest = with_scale(fs.manifest, changes)
        async with self.deployer.locks[name]:
            await self.store.set_scale_override(name, override, manifest.to_dict())
            self.controller.rescale(name, manifest)
        plain = split_key(name)[0]
        return {"function": plain, "scale": manifest.scale.model_dump(), "override": override}

    @staticmethod
    async def _declared_scale(record: FunctionRecord) -> dict[str, Any]:
        """The scale settings the function's plat.yaml declares (defaults if it is gone)."""
        try:
            declared = await asyncio.to_thread(load_manifest, Path(record.source_dir))
        except PlatError:
            return Scale().model_dump()
        return declared.scale.model_dump()
