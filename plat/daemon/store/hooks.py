"""Git webhooks: the hooks, every delivery they received, and the previews they made.

A hook's secret is sealed (plat.daemon.secrets.sealing) before it gets here: the
daemon must compute HMACs with it, so it cannot be a hash. A delivery that ran
(or was ignored) is *counted*: its provider's delivery id and the digest of its
body are unique per hook among counted deliveries, so a replay, with the same id
or the same signed body under a new id, is a duplicate; the rows are kept (their
logs trimmed) so that stays true. Duplicates and rejected deliveries are rows
too, not counted, and only the newest few are kept.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import aiosqlite

from plat.daemon.store.database import Database

# States a delivery may be in; the first four are a delivery at work.
OPEN_STATES = ("queued", "fetching", "building", "deploying")
FINAL_STATES = ("done", "failed", "ignored", "duplicate", "rejected")
KEPT_LOGS = 100  # counted deliveries per hook whose log is kept
KEPT_UNCOUNTED = 50  # duplicate and rejected rows kept per hook


@dataclass(frozen=True)
class HookRecord:
    id: str
    tenant: str
    function: str  # the plain name
    repo: str
    branch: str
    path: str
    previews: bool
    preview_ttl: float
    created_at: float
    secret: bytes = field(default=b"", repr=False)  # sealed


@dataclass
class DeliveryRecord:
    hook: str
    delivery: str
    body_sha: str
    provider: str
    event: str
    origin: str
    action: str = ""
    state: str = "queued"
    branch: str | None = None
    sha: str | None = None
    ref: str | None = None
    target: str | None = None
    preview_url: str | None = None
    error: str | None = None
    log: str = ""
    received_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    seq: int = 0


@dataclass(frozen=True)
class PreviewRecord:
    function: str  # the preview's key
    hook: str
    branch: str
    expires_at: float
    updated_at: float


class HookRows(Database):
    """Rows of ``hooks``, ``hook_deliveries`` and ``hook_previews``."""

    async def create_hook(self, hook: HookRecord) -> bool:
        """False when the tenant's function has a hook already."""
        cur = await self.db.execute(
            """INSERT INTO hooks(id, tenant, function, repo, branch, path, previews,
                     preview_ttl, secret, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT DO NOTHING""",
            (
                hook.id,
                hook.tenant,
                hook.function,
                hook.repo,
                hook.branch,
                hook.path,
                int(hook.previews),
                hook.preview_ttl,
                hook.secret,
                hook.created_at,
            ),
        )
        await self.db.commit()
        return cur.rowcount > 0

    async def get_hook(self, hook_id: str) -> HookRecord | None:
        async with self.db.execute("SELECT * FROM hooks WHERE id=?", (hook_id,)) as cur:
            row = await cur.fetchone()
        return _hook(row) if row else None

    async def list_hooks(self, tenant: str | None = None) -> list[HookRecord]:
        """The hooks of ``tenant`` (None: of every tenant)."""
        query = "SELECT * FROM hooks" + (" WHERE tenant=?" if tenant is not None else "")
        async with self.db.execute(query + " ORDER BY tenant, function", _args(tenant)) as cur:
            rows = await cur.fetchall()
        return [_hook(row) for row in rows]

    async def delete_hook(self, hook_id: str) -> bool:
        """Remove the hook and its deliveries (its previews' rows stay for the caller)."""
        await self.db.execute("DELETE FROM hook_deliveries WHERE hook=?", (hook_id,))
        cur = await self.db.execute("DELETE FROM hooks WHERE id=?", (hook_id,))
        await self.db.commit()
        return cur.rowcount > 0

    # deliveries

    async def add_delivery(self, record: DeliveryRecord, *, counted: bool) -> int | None:
        """Insert ``record``; its seq, or None when ``counted`` and the hook has counted
        a delivery with that id or body already (a duplicate)."""
        rows = await self.db.execute_fetchall(
            """INSERT INTO hook_deliveries(hook, delivery, body_sha, counted, provider, event,
                     action, branch, sha, ref, target, state, preview_url, error, log, origin,
                     received_at, started_at, finished_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT DO NOTHING RETURNING seq""",
            (
                record.hook,
                record.delivery,
                record.body_sha,
                1 if counted else None,
                record.provider,
                record.event,
                record.action,
                record.branch,
                record.sha,
                record.ref,
                record.target,
                record.state,
                record.preview_url,
                record.error,
                record.log,
                record.origin,
                record.received_at,
                record.started_at,
                record.finished_at,
            ),
        )
        if not rows:
            await self.db.commit()
            return None
        await self._trim(record.hook, counted)
        await self.db.commit()
        [row] = rows
        record.seq = int(row[0])
        return record.seq

    async def _trim(self, hook: str, counted: bool) -> None:
        if counted:
            await self.db.execute(
                """UPDATE hook_deliveries SET log='' WHERE hook=? AND counted=1 AND log != ''
                   AND seq < (SELECT seq FROM hook_deliveries WHERE hook=? AND counted=1
                              ORDER BY seq DESC LIMIT 1 OFFSET ?)""",
                (hook, hook, KEPT_LOGS - 1),
            )
        else:
            await self.db.execute(
                """DELETE FROM hook_deliveries WHERE hook=? AND counted IS NULL
                   AND seq < (SELECT seq FROM hook_deliveries WHERE hook=? AND counted IS NULL
                              ORDER BY seq DESC LIMIT 1 OFFSET ?)""",
                (hook, hook, KEPT_UNCOUNTED - 1),
            )

    async def save_delivery(self, record: DeliveryRecord) -> None:
        """Write a counted delivery's progress: state, commit, target, URL, error, log."""
        await self.db.execute(
            """UPDATE hook_deliveries SET state=?, sha=?, target=?, preview_url=?, error=?,
                 log=?, started_at=?, finished_at=? WHERE seq=?""",
            (
                record.state,
                record.sha,
                record.target,
                record.preview_url,
                record.error,
                record.log,
                record.started_at,
                record.finished_at,
                record.seq,
            ),
        )
        await self.db.commit()

    async def list_deliveries(self, hook: str, limit: int = 50) -> list[DeliveryRecord]:
        """The newest deliveries first, without their logs."""
        async with self.db.execute(
            "SELECT * FROM hook_deliveries WHERE hook=? ORDER BY seq DESC LIMIT ?", (hook, limit)
        ) as cur:
            rows = await cur.fetchall()
        return [_delivery(row, log=False) for row in rows]

    async def get_delivery(self, hook: str, key: str) -> DeliveryRecord | None:
        """A delivery of ``hook`` by its seq or its provider's id (the newest such)."""
        seq = int(key) if key.isdigit() and len(key) < 19 else -1
        async with self.db.execute(
            """SELECT * FROM hook_deliveries WHERE hook=? AND (seq=? OR delivery=?)
               ORDER BY seq=? DESC, seq DESC LIMIT 1""",
            (hook, seq, key, seq),
        ) as cur:
            row = await cur.fetchone()
        return _delivery(row, log=True) if row else None

    async def last_states(self) -> dict[str, str]:
        """{hook id: the state of its newest counted delivery}."""
        async with self.db.execute(
            """SELECT hook, state FROM hook_deliveries WHERE seq IN
                 (SELECT max(seq) FROM hook_deliveries WHERE counted=1 GROUP BY hook)"""
        ) as cur:
            rows = await cur.fetchall()
        return {row["hook"]: row["state"] for row in rows}

    async def open_deliveries(self) -> list[DeliveryRecord]:
        """Deliveries still at work (a daemon stopped under them), oldest first."""
        marks = ", ".join("?" for _ in OPEN_STATES)
        async with self.db.execute(
            f"SELECT * FROM hook_deliveries WHERE state IN ({marks}) ORDER BY seq", OPEN_STATES
        ) as cur:
            rows = await cur.fetchall()
        return [_delivery(row, log=True) for row in rows]

    # previews

    async def put_preview(self, function: str, hook: str, branch: str, expires_at: float) -> None:
        await self.db.execute(
            """INSERT INTO hook_previews(function, hook, branch, expires_at, updated_at)
               VALUES (?, ?, ?, ?, ?) ON CONFLICT(function) DO UPDATE SET hook=excluded.hook,
                 branch=excluded.branch, expires_at=excluded.expires_at,
                 updated_at=excluded.updated_at""",
            (function, hook, branch, expires_at, time.time()),
        )
        await self.db.commit()

    async def list_previews(self, hook: str | None = None) -> list[PreviewRecord]:
        query = "SELECT * FROM hook_previews" + (" WHERE hook=?" if hook is not None else "")
        async with self.db.execute(query + " ORDER BY function", _args(hook)) as cur:
            rows = await cur.fetchall()
        return [_preview(row) for row in rows]

    async def expired_previews(self, now: float) -> list[PreviewRecord]:
        async with self.db.execute(
            "SELECT * FROM hook_previews WHERE expires_at <= ? ORDER BY expires_at", (now,)
        ) as cur:
            rows = await cur.fetchall()
        return [_preview(row) for row in rows]

    async def delete_previews(self, functions: Iterable[str]) -> None:
        await self.db.executemany(
            "DELETE FROM hook_previews WHERE function=?", [(f,) for f in functions]
        )
        await self.db.commit()


def _args(value: str | None) -> tuple[str, ...]:
    return () if value is None else (value,)


def _hook(row: aiosqlite.Row) -> HookRecord:
    return HookRecord(
        id=row["id"],
        tenant=row["tenant"],
        function=row["function"],
        repo=row["repo"],
        branch=row["branch"],
        path=row["path"],
        previews=bool(row["previews"]),
        preview_ttl=float(row["preview_ttl"]),
        created_at=float(row["created_at"]),
        secret=bytes(row["secret"]),
    )


def _delivery(row: aiosqlite.Row, *, log: bool) -> DeliveryRecord:
    return DeliveryRecord(
        hook=row["hook"],
        delivery=row["delivery"],
        body_sha=row["body_sha"],
        provider=row["provider"],
        event=row["event"],
        origin=row["origin"],
        action=row["action"],
        state=row["state"],
        branch=row["branch"],
        sha=row["sha"],
        ref=row["ref"],
        target=row["target"],
        preview_url=row["preview_url"],
        error=row["error"],
        log=row["log"] if log else "",
        received_at=float(row["received_at"]),
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        seq=int(row["seq"]),
    )


def _preview(row: aiosqlite.Row) -> PreviewRecord:
    return PreviewRecord(
        function=row["function"],
        hook=row["hook"],
        branch=row["branch"],
        expires_at=float(row["expires_at"]),
        updated_at=float(row["updated_at"]),
    )
