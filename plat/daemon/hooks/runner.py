"""One delivery's work: fetch the commit, deploy it through the functions service
(the path `plat deploy` takes), or remove a branch's preview.

A delivery's state goes queued -> fetching -> building -> deploying -> done or
failed; its log holds git's and the build's lines. A failed build or start
leaves what served before serving (the deployer switches traffic only to a
version that got ready). Previews run with ``scale.min`` 0 and no cron schedule,
and expire ``preview_ttl`` after their last push. Checkouts live under
``<root>/<hook>/checkouts/<delivery>`` while a function's record names them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from plat.api import DeployEvent
from plat.daemon.functions import Functions, with_scale
from plat.daemon.hooks.audit import Auditor
from plat.daemon.hooks.fetch import Fetcher
from plat.daemon.hooks.previews import preview_urls
from plat.daemon.store import Store
from plat.daemon.store.hooks import DeliveryRecord, HookRecord
from plat.errors import BuildError, NotFoundError, PlatError
from plat.manifest import load_manifest
from plat.tenancy import DEFAULT_TENANT, split_key

log = logging.getLogger(__name__)

MAX_LOG = 256 * 1024  # of a delivery's log kept (its end)


class Runner:
    def __init__(
        self,
        store: Store,
        functions: Functions,
        fetcher: Fetcher,
        auditor: Auditor,
        gateway_url: Callable[[], str],
    ) -> None:
        self.store = store
        self.functions = functions
        self.fetcher = fetcher
        self.audit = auditor
        self.gateway_url = gateway_url
        self.root = fetcher.root
        self.busy: set[int] = set()  # deliveries at work: their checkouts stay

    def url_of(self, hook: HookRecord, target: str) -> str:
        """Where ``target`` (a key) answers: a preview's host URL, else its path URL."""
        plain = split_key(target)[0]
        if plain == hook.function:
            return f"{self.gateway_url()}/function/{target}"
        return preview_urls(self.gateway_url(), hook.function, plain, hook.tenant)[1]

    async def run(self, hook: HookRecord, record: DeliveryRecord) -> None:
        """Do ``record``'s work, saving its progress; never raises a PlatError."""
        record.started_at = time.time()
        self.busy.add(record.seq)
        lines: list[str] = []
        size = 0

        def line(text: str) -> None:
            nonlocal size
            lines.append(text)
            size += len(text) + 1
            while size > MAX_LOG and len(lines) > 1:
                size -= len(lines.pop(0)) + 1
            record.log = "\n".join(lines)

        assert record.target is not None
        target = record.target
        try:
            if record.action == "remove":
                await self._remove(hook, record, line)
            else:
                await self._deploy(hook, record, line)
        except PlatError as exc:
            if isinstance(exc, BuildError) and exc.log_tail and exc.log_tail not in record.log:
                line(exc.log_tail)
            line(f"error: {exc.message}")
            record.state, record.error = "failed", exc.message
            self.audit(
                f"function.{'rm' if record.action == 'remove' else 'deploy'}",
                split_key(target)[0],
                f"failed:{exc.code}",
                hook=hook.id,
                origin=record.origin,
                tenant=hook.tenant,
                commit=record.sha,
            )
        finally:
            # A daemon stopping cancels the work: the delivery stays open (its state
            # saved), and the next start runs it again.
            self.busy.discard(record.seq)
            record.finished_at = time.time()
            with contextlib.suppress(PlatError):
                await asyncio.shield(self.store.save_delivery(record))
            await self.prune_checkouts(hook.id)
        outcome = "ok" if record.state == "done" else f"failed:{(record.error or '')[:80]}"
        self.audit(
            "hook.delivery",
            split_key(target)[0],
            outcome,
            hook=hook.id,
            origin=record.origin,
            tenant=hook.tenant,
            delivery=record.delivery,
            event=record.event,
            branch=record.branch,
            commit=record.sha,
        )

    async def _deploy(
        self, hook: HookRecord, record: DeliveryRecord, line: Callable[[str], None]
    ) -> None:
        assert record.target is not None and record.sha is not None and record.branch is not None
        target = record.target
        preview = split_key(target)[0] != hook.function
        if preview:
            await self._check_preview(hook, target)
        record.state = "fetching"
        await self.store.save_delivery(record)
        dest = self.root / hook.id / "checkouts" / str(record.seq)
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.rmtree(dest, ignore_errors=True)
        line(f"fetching {record.sha} ({record.ref}) from {hook.repo}")
        # Only the admin acts for the default tenant: its hooks may use the host's keys.
        record.sha = await self.fetcher.checkout(
            hook.id,
            hook.repo,
            record.sha,
            record.ref,
            hook.path,
            dest,
            line,
            trusted=hook.tenant == DEFAULT_TENANT,
        )
        manifest = await asyncio.to_thread(load_manifest, dest)
        if manifest.name != hook.function:
            line(f"plat.yaml names {manifest.name!r}: deploying it as {split_key(target)[0]!r}")
        manifest = manifest.model_copy(update={"name": target})
        if preview:
            manifest = with_scale(manifest, {"min": 0}).model_copy(update={"schedule": []})
        else:
            stored = await self.store.get_function(target)
            if stored is not None and stored.scale_override:
                manifest = with_scale(manifest, stored.scale_override)
        record.state = "building"
        await self.store.save_delivery(record)

        def emit(event: DeployEvent) -> None:
            if event["type"] == "phase" and event["phase"] == "start":
                record.state = "deploying"
            elif event["type"] == "log":
                line(event["line"])
            elif event["type"] == "event":
                line(event["message"])
            elif event["type"] == "built":
                line(f"built version {event['version']}{' (cached)' if event['cached'] else ''}")

        await self.functions.deploy(manifest, dest, emit, force=False, dev=False)
        if preview:
            await self.store.put_preview(
                target, hook.id, record.branch, time.time() + hook.preview_ttl
            )
        record.preview_url = self.url_of(hook, target)
        record.state = "done"
        line(f"deployed {record.sha[:12]} of {record.branch}: {record.preview_url}")
        self.audit(
            "function.deploy",
            split_key(target)[0],
            "ok",
            hook=hook.id,
            origin=record.origin,
            tenant=hook.tenant,
            commit=record.sha,
            branch=record.branch,
            preview=preview,
        )

    async def _check_preview(self, hook: HookRecord, target: str) -> None:
        """A function of the preview's name that is no preview of this hook stays."""
        if await self.store.get_function(target) is None:
            return
        mine = {p.function for p in await self.store.list_previews(hook.id)}
        if target not in mine:
            raise PlatError(
                f"a function named {split_key(target)[0]!r} exists and is not a preview of "
                "this hook: it is left alone",
                hint="rename that function, or remove it with `plat rm`",
            )

    async def _remove(
        self, hook: HookRecord, record: DeliveryRecord, line: Callable[[str], None]
    ) -> None:
        assert record.target is not None
        removed = await self.remove_preview(hook, record.target, record.origin, "branch")
        line(
            f"removed the preview {split_key(record.target)[0]} of {record.branch}"
            if removed
            else f"no preview of {record.branch} to remove"
        )
        record.state = "done"

    async def remove_preview(self, hook: HookRecord, target: str, origin: str, why: str) -> bool:
        """Remove a preview function of ``hook`` and its record; False when it was gone."""
        mine = {p.function for p in await self.store.list_previews(hook.id)}
        removed = False
        if target in mine:
            try:
                await self.functions.remove(target)
                removed = True
            except NotFoundError:
                pass
            await self.store.delete_previews([target])
        if removed:
            self.audit(
                "function.rm",
                split_key(target)[0],
                "ok",
                hook=hook.id,
                origin=origin,
                tenant=hook.tenant,
                reason=why,
            )
        await self.prune_checkouts(hook.id)
        return removed

    async def prune_checkouts(self, hook: str) -> None:
        """Remove the hook's checkouts no function's record names (but those at work)."""
        folder = self.root / hook / "checkouts"
        if not folder.is_dir():
            return
        used = {Path(r.source_dir) for r in await self.store.list_functions()}
        busy = {str(seq) for seq in self.busy}
        for path in folder.iterdir():
            if path.name not in busy and path.resolve() not in used:
                await asyncio.to_thread(shutil.rmtree, path, True)
