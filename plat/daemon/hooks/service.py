"""The hooks of every tenant: add, list, remove, their deliveries; and the
background work (the lanes that run deliveries, the reaper of expired previews,
the deliveries a stopped daemon left open).

A hook belongs to a tenant and names one of its functions (which need not be
deployed yet: the first push deploys it). Its secret is made here, shown once,
and kept sealed (plat.daemon.secrets.sealing), bound to the tenant and the hook.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from plat.api import DeliveryDetail, DeliveryView, HookCreated, HookView
from plat.daemon.functions import Functions
from plat.daemon.hooks.audit import AuditCallback, Auditor
from plat.daemon.hooks.fetch import Fetcher, check_path, check_repo, is_local
from plat.daemon.hooks.intake import Intake, Job, secret_name
from plat.daemon.hooks.lanes import Lanes
from plat.daemon.hooks.payloads import PayloadError, check_branch
from plat.daemon.hooks.previews import MAX_PREVIEWED_NAME
from plat.daemon.hooks.receiver import receiver_routes
from plat.daemon.hooks.runner import Runner
from plat.daemon.secrets.sealing import Sealer
from plat.daemon.store import Store
from plat.daemon.store.hooks import DeliveryRecord, HookRecord
from plat.daemon.tasks import TaskGroup, cancel_and_wait
from plat.errors import ConflictError, NotFoundError, PlatError
from plat.manifest import NAME_RE
from plat.tenancy import split_key

log = logging.getLogger(__name__)

DEFAULT_TTL = 72 * 3600.0
MAX_TTL = 365 * 24 * 3600.0
REAP_EVERY = 60.0
STRANGER_SCHEMES = ("https://", "http://", "git://")


class HookService:
    def __init__(
        self,
        store: Store,
        functions: Functions,
        sealer: Sealer,
        root: Path,
        env: dict[str, str],
        *,
        gateway_url: Callable[[], str],
        audit: AuditCallback | None = None,
        reap_every: float = REAP_EVERY,
    ) -> None:
        """``root``: where hooks keep their git caches and checkouts ($PLAT_HOME/hooks);
        ``audit``: the audit log's ``record`` (keywords only), or None."""
        self.store = store
        self.sealer = sealer
        self.gateway_url = gateway_url
        self.tasks = TaskGroup(log)
        self.fetcher = Fetcher(root, env)
        auditor = Auditor(audit)
        self.runner = Runner(store, functions, self.fetcher, auditor, gateway_url)
        self.lanes: Lanes[Job] = Lanes(self.tasks, self._run)
        self.intake = Intake(store, sealer, self.lanes, self.runner, auditor)
        self.routes = receiver_routes(self.intake)
        self.reap_every = reap_every
        self._reaper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Run the deliveries a stopped daemon left open, and start the reaper."""
        if self._reaper is not None:
            return
        hooks = {h.id: h for h in await self.store.list_hooks()}
        for record in await self.store.open_deliveries():
            hook = hooks.get(record.hook)
            if hook is None:
                continue
            record.state = "queued"
            old = self.lanes.put((hook.id, record.branch), (hook, record))
            if old is not None:
                await self.intake.supersede(old[1], record)
        self._reaper = asyncio.create_task(self._reap_loop(), name="hook-reaper")

    async def close(self) -> None:
        if self._reaper is not None:
            await cancel_and_wait(self._reaper)
            self._reaper = None
        await self.tasks.close()

    async def _run(self, job: Job) -> None:
        hook, record = job
        if await self.store.get_hook(hook.id) is None:  # removed while this waited
            return
        await self.runner.run(hook, record)

    # hooks

    async def add(
        self,
        tenant: str,
        function: str,
        *,
        repo: str,
        branch: str = "main",
        path: str = "",
        previews: bool = True,
        preview_ttl: float = DEFAULT_TTL,
        local_repos: bool = True,
    ) -> HookCreated:
        """A new hook with a new secret (in the answer, and nowhere else in clear).
        ``local_repos``: whether ``repo`` may name the daemon's own files (the admin)."""
        if not NAME_RE.fullmatch(function):
            raise PlatError(f"{function[:80]!r} is not a function name")
        if previews and len(function) > MAX_PREVIEWED_NAME:
            raise PlatError(
                f"previews are named <function>--<branch>: {function!r} leaves no room "
                f"(at most {MAX_PREVIEWED_NAME} characters)",
                hint="add the hook with --no-previews",
            )
        repo = check_repo(repo)
        if not local_repos and (is_local(repo) or not repo.startswith(STRANGER_SCHEMES)):
            raise PlatError(
                "only the admin may hook up a repository on the daemon's host or over ssh "
                "(which would use the daemon's keys)",
                hint="give an https://, http:// or git:// URL",
            )
        try:
            branch = check_branch(branch)
        except PayloadError as exc:
            raise PlatError(f"--branch: {exc.message}") from None
        if not 60 <= preview_ttl <= MAX_TTL:
            raise PlatError("--preview-ttl must be between 1m and 8760h (a year)")
        hook_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        record = HookRecord(
            id=hook_id,
            tenant=tenant,
            function=function,
            repo=repo,
            branch=branch,
            path=check_path(path),
            previews=previews,
            preview_ttl=preview_ttl,
            created_at=time.time(),
            secret=self.sealer.seal(tenant, secret_name(hook_id), secret.encode()),
        )
        if not await self.store.create_hook(record):
            raise ConflictError(
                f"{function!r} has a hook already",
                hint=f"`plat hook rm {function}` first, or `plat hook ls`",
            )
        return {**self._view(record, None), "secret": secret}

    async def hooks(self, tenant: str | None) -> list[HookView]:
        states = await self.store.last_states()
        return [self._view(h, states.get(h.id)) for h in await self.store.list_hooks(tenant)]

    async def find(self, tenant: str, key: str) -> HookRecord:
        """The tenant's hook with id or function name ``key``; NotFoundError."""
        for hook in await self.store.list_hooks(tenant):
            if key in (hook.id, hook.function):
                return hook
        raise NotFoundError(f"no hook {key[:80]!r}", hint="`plat hook ls` lists them")

    async def remove(self, tenant: str, key: str) -> tuple[HookRecord, list[str]]:
        """Remove a hook and the previews it made (its production function stays);
        returns it and the previews removed."""
        hook = await self.find(tenant, key)
        await self.store.delete_hook(hook.id)
        removed = []
        for preview in await self.store.list_previews(hook.id):
            if await self.runner.remove_preview(hook, preview.function, "admin", "hook removed"):
                removed.append(split_key(preview.function)[0])
        self.fetcher.forget(hook.id)
        return hook, removed

    def _view(self, hook: HookRecord, last_state: str | None) -> HookView:
        return {
            "id": hook.id,
            "function": hook.function,
            "tenant": hook.tenant,
            "repo": hook.repo,
            "branch": hook.branch,
            "path": hook.path,
            "previews": hook.previews,
            "preview_ttl": hook.preview_ttl,
            "url": f"{self.gateway_url()}/hooks/git/{hook.id}",
            "created_at": hook.created_at,
            "last_state": last_state,
        }

    # deliveries

    def _live(self) -> dict[int, DeliveryRecord]:
        """Deliveries at work or waiting, as they are now (the store has them as they
        were at their last step)."""
        return {record.seq: record for _, record in self.lanes.running() + self.lanes.waiting()}

    async def deliveries(self, tenant: str, key: str, limit: int = 50) -> list[DeliveryView]:
        hook = await self.find(tenant, key)
        live = self._live()
        return [
            delivery_view(live.get(r.seq, r))
            for r in await self.store.list_deliveries(hook.id, limit)
        ]

    async def delivery(self, tenant: str, key: str, delivery: str) -> DeliveryDetail:
        hook = await self.find(tenant, key)
        record = await self.store.get_delivery(hook.id, delivery[:128])
        if record is None:
            raise NotFoundError(
                f"no delivery {delivery[:80]!r} of {hook.function}",
                hint=f"`plat hook deliveries {hook.function}` lists them",
            )
        record = self._live().get(record.seq, record)
        return {**delivery_view(record), "log": record.log}

    # previews

    async def _reap_loop(self) -> None:
        while True:
            try:
                await self.reap()
            except PlatError as exc:
                log.warning("reaping expired previews failed: %s", exc.message)
            await asyncio.sleep(self.reap_every)

    async def reap(self, now: float | None = None) -> list[str]:
        """Remove previews past their TTL (but those a delivery is working on);
        returns their keys."""
        hooks = {h.id: h for h in await self.store.list_hooks()}
        removed = []
        for preview in await self.store.expired_previews(time.time() if now is None else now):
            hook = hooks.get(preview.hook)
            if hook is None:  # its hook was removed while it was being deployed
                with contextlib.suppress(NotFoundError):
                    await self.runner.functions.remove(preview.function)
                await self.store.delete_previews([preview.function])
                removed.append(preview.function)
                continue
            if self.lanes.busy((hook.id, preview.branch)):
                continue
            await self.runner.remove_preview(hook, preview.function, "reaper", "expired")
            removed.append(preview.function)
        return removed


def delivery_view(record: DeliveryRecord) -> DeliveryView:
    ended = record.finished_at is not None and record.started_at is not None
    return {
        "seq": record.seq,
        "id": record.delivery,
        "provider": record.provider,
        "event": record.event,
        "action": record.action,
        "branch": record.branch,
        "commit": record.sha,
        "target": split_key(record.target)[0] if record.target else None,
        "state": record.state,
        "url": record.preview_url,
        "received_at": record.received_at,
        "duration": (record.finished_at or 0) - (record.started_at or 0) if ended else None,
        "error": record.error,
    }
