"""The secrets service: each tenant's secrets, set, listed and removed; a
function's ``secrets:`` resolved to values; Vault secrets in use re-read on a TTL.

Values are sealed (:mod:`.sealing`) before they reach the store and unsealed only
to be handed to an instance as files. Nothing here logs, returns in a listing or
puts in an error a value or the Vault token: names, revisions and references only.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from plat.daemon.drivers.secretvalue import SecretValue
from plat.daemon.secrets.sealing import Sealer
from plat.daemon.secrets.vault import DEFAULT_TIMEOUT, VaultError, VaultReader, VaultUnreachable
from plat.daemon.store import Store
from plat.errors import DaemonError, NotFoundError, PlatError
from plat.manifest import Manifest, SecretRef, secret_name_problem
from plat.tenancy import DEFAULT_TENANT, tenant_of, valid_tenant

log = logging.getLogger(__name__)

MAX_VALUE = 1024 * 1024
DEFAULT_TTL = 60.0

# Told a function's key; may return an awaitable (a roll), which is awaited.
OnChange = Callable[[str], object]


class SecretTooLarge(PlatError):
    status = 413
    code = "too_large"


@dataclass
class _Tracked:
    """A function whose instances hold secrets: what it uses, the Vault values it
    was given, and whom to tell when one changes."""

    tenant: str
    refs: tuple[SecretRef, ...]
    on_change: OnChange
    values: dict[str, SecretValue] = field(default_factory=dict)

    @property
    def vault_refs(self) -> list[SecretRef]:
        return [ref for ref in self.refs if ref.vault is not None]


class SecretsService:
    """Secrets of every tenant over the store, a sealer and Vault.

    ``start()`` runs the Vault refresher (every ``ttl`` seconds); ``close()`` stops
    it. Both are idempotent; the rest works without ``start()``."""

    def __init__(
        self,
        store: Store,
        sealer: Sealer,
        env: Mapping[str, str],
        *,
        ttl: float = DEFAULT_TTL,
        vault_timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.store = store
        self.sealer = sealer
        self.vault = VaultReader(env, timeout=vault_timeout)
        self.ttl = ttl
        self._tracked: dict[str, _Tracked] = {}
        self._last: dict[str, SecretValue] = {}  # vault reference -> last value read
        self._vault_down = False
        self._ref_problems: dict[str, str] = {}  # vault reference -> warning given
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # the tenant's secrets

    async def set(self, tenant: str, name: str, value: bytes) -> int:
        """Store ``value`` as secret ``name`` of ``tenant``, sealed; returns its
        revision (1 for a new secret). Raises PlatError on a bad name or an empty
        value, SecretTooLarge (413) over MAX_VALUE."""
        _check(tenant, name)
        if len(value) > MAX_VALUE:
            raise SecretTooLarge(
                f"the value of secret {name!r} is {len(value)} bytes; "
                f"the limit is {MAX_VALUE // 1024} KiB",
                hint="keep large files out of secrets: store a key that unlocks them",
            )
        if not value:
            raise PlatError(
                f"the value of secret {name!r} is empty",
                hint=f"pipe it in: `printf %s VALUE | {_set_command(tenant, name)}`, or "
                "use --from-file",
            )
        sealed = self.sealer.seal(tenant, name, bytes(value))
        revision = await self.store.put_secret(tenant, name, sealed)
        log.info("secret %s of tenant %s set (revision %d)", name, tenant, revision)
        return revision

    async def remove(self, tenant: str, name: str) -> None:
        """Delete the secret; NotFoundError when there is none. Running instances
        keep their files; the next deploy of a function that lists it fails."""
        _check(tenant, name)
        if not await self.store.delete_secret(tenant, name):
            raise NotFoundError(f"no secret named {name!r}", hint=_ls_hint(tenant))
        log.info("secret %s of tenant %s removed", name, tenant)

    def users(self, tenant: str, name: str) -> list[str]:
        """Keys of the tracked functions that list plat secret ``name`` of ``tenant``
        (those a new value must roll)."""
        return sorted(
            key
            for key, tracked in self._tracked.items()
            if tracked.tenant == tenant
            and any(ref.name == name and ref.vault is None for ref in tracked.refs)
        )

    # a function's secrets

    async def resolve(self, tenant: str, refs: Sequence[SecretRef]) -> dict[str, SecretValue]:
        """The value of each of a function's ``secrets:``, by file name.

        Raises PlatError (400) naming every plat secret that is not set, the
        Vault errors (VaultUnreachable: 503) naming the secret, SecretKeyError when
        the key does not open a stored value."""
        _check_tenant(tenant)
        values: dict[str, SecretValue] = {}
        missing: list[str] = []
        for ref in refs:
            if ref.vault is not None:
                continue
            row = await self.store.get_secret(tenant, ref.name)
            if row is None:
                missing.append(ref.name)
                continue
            values[ref.name] = SecretValue(self.sealer.unseal(tenant, ref.name, row.sealed))
        if missing:
            names = ", ".join(missing)
            raise PlatError(
                f"secret{'s' if len(missing) > 1 else ''} {names} "
                f"{'are' if len(missing) > 1 else 'is'} not set"
                + ("" if tenant == DEFAULT_TENANT else f" for tenant {tenant}"),
                hint=f"run `{_set_command(tenant, missing[0])}` (the value is read from stdin)",
            )
        for ref in refs:
            if ref.vault is not None:
                values[ref.name] = await self._read_vault(ref)
        return {ref.name: values[ref.name] for ref in refs}

    async def for_manifest(self, manifest: Manifest) -> dict[str, SecretValue]:
        """``resolve`` for a stored manifest (its name is the function's key, which
        says the tenant): the deployer's ``resolve``."""
        return await self.resolve(tenant_of(manifest.name), manifest.secrets)

    async def _read_vault(self, ref: SecretRef) -> SecretValue:
        assert ref.vault is not None
        try:
            value = SecretValue(await self.vault.read(ref.vault))
        except VaultError as exc:
            raise type(exc)(f"secret {ref.name!r}: {exc.message}", hint=exc.hint) from None
        self._last[ref.vault] = value
        return value

    # Vault refresh

    def track(
        self,
        key: str,
        refs: Sequence[SecretRef],
        on_change: OnChange,
        *,
        values: Mapping[str, SecretValue] | None = None,
    ) -> None:
        """Watch function ``key``'s Vault secrets: ``on_change(key)`` is called
        when one of their values changes. ``values`` are the values its instances
        were given (default: the last ones read). Replaces an earlier tracking of
        ``key``. A function without secrets is simply not tracked."""
        if not refs:
            self.untrack(key)
            return
        tracked = _Tracked(tenant_of(key), tuple(refs), on_change)
        for ref in tracked.vault_refs:
            assert ref.vault is not None
            given = values.get(ref.name) if values is not None else None
            known = given if given is not None else self._last.get(ref.vault)
            if known is not None:
                tracked.values[ref.name] = known
        self._tracked[key] = tracked

    def untrack(self, key: str) -> None:
        """Stop watching ``key`` (removed); idempotent."""
        self._tracked.pop(key, None)

    async def start(self) -> None:
        if self._closed:
            raise DaemonError("the secrets service is closed")
        if self._task is None:
            self._task = asyncio.create_task(self._refresher(), name="secrets-refresh")

    async def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _refresher(self) -> None:
        while True:
            await asyncio.sleep(self.ttl)
            try:
                await self.refresh()
            except Exception:
                log.exception("refreshing Vault secrets failed")

    async def refresh(self) -> list[str]:
        """One round: read every tracked Vault reference once; for each function
        whose value changed, await ``on_change(key)``. Returns those keys.

        When Vault does not answer, the last values stay (instances keep theirs)
        and one warning is logged until it answers again."""
        refs = sorted(
            {ref.vault for t in self._tracked.values() for ref in t.vault_refs if ref.vault}
        )
        fresh: dict[str, SecretValue] = {}
        for vault_ref in refs:
            try:
                fresh[vault_ref] = SecretValue(await self.vault.read(vault_ref))
            except VaultUnreachable as exc:
                if not self._vault_down:
                    log.warning("Vault secrets are not refreshed (last values kept): %s", exc)
                self._vault_down = True
                break  # the rest would wait for the same timeout
            except VaultError as exc:
                if self._ref_problems.get(vault_ref) != exc.message:
                    log.warning(
                        "Vault secret %s is not refreshed (last value kept): %s", vault_ref, exc
                    )
                self._ref_problems[vault_ref] = exc.message
            else:
                self._ref_problems.pop(vault_ref, None)
        if fresh and self._vault_down:
            self._vault_down = False
            log.info("Vault at %s answers again; secrets are refreshed", self.vault.where)
        self._last.update(fresh)
        changed = []
        for key, tracked in self._tracked.items():
            differs = False
            for ref in tracked.vault_refs:
                assert ref.vault is not None
                new = fresh.get(ref.vault)
                if new is not None and tracked.values.get(ref.name) != new:
                    differs = differs or ref.name in tracked.values
                    tracked.values[ref.name] = new
            if differs:
                changed.append((key, tracked.on_change))
        if changed:
            log.info("Vault secrets changed for %s", ", ".join(key for key, _ in changed))
            await asyncio.gather(*(self._notify(key, call) for key, call in changed))
        return [key for key, _ in changed]

    @staticmethod
    async def _notify(key: str, on_change: OnChange) -> None:
        try:
            result = on_change(key)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("rolling %s after its Vault secret changed failed", key)

    # Last: below it, `list` in an annotation would name this method.
    async def list(self, tenant: str) -> list[dict[str, Any]]:
        """The tenant's secrets by name: {name, revision, created_at, updated_at},
        never values."""
        _check_tenant(tenant)
        return [
            {
                "name": row.name,
                "revision": row.revision,
                "created_at": row.created_at,
                "updated_at": row.updated_at,
            }
            for row in await self.store.list_secrets(tenant)
        ]


def _check_tenant(tenant: str) -> None:
    if not valid_tenant(tenant):
        raise PlatError(f"{tenant[:64]!r} is not a valid tenant name")


def _check(tenant: str, name: str) -> None:
    _check_tenant(tenant)
    problem = secret_name_problem(name)
    if problem:
        raise PlatError(problem)


def _set_command(tenant: str, name: str) -> str:
    where = "" if tenant == DEFAULT_TENANT else f"--tenant {tenant} "
    return f"plat {where}secret set {name}"


def _ls_hint(tenant: str) -> str:
    where = "" if tenant == DEFAULT_TENANT else f"--tenant {tenant} "
    return f"`plat {where}secret ls` lists secrets"
