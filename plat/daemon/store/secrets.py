"""The secrets table: each tenant's secrets, sealed (encrypted) before they get here."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import aiosqlite

from plat.daemon.store.database import Database


@dataclass(frozen=True)
class SecretRecord:
    """One row. ``sealed`` is empty in listings (they never read values)."""

    tenant: str
    name: str
    revision: int
    created_at: float
    updated_at: float
    sealed: bytes = field(default=b"", repr=False)


class SecretRows(Database):
    """Rows of ``secrets``: (tenant, name) -> sealed bytes and a revision."""

    async def put_secret(self, tenant: str, name: str, sealed: bytes) -> int:
        """Create the secret (revision 1) or replace its value (revision + 1), in
        one statement, so concurrent puts each get their own revision. Returns it."""
        now = time.time()
        # execute_fetchall: one call on the database thread, so no other coroutine's
        # commit finds this RETURNING statement in progress.
        rows = await self.db.execute_fetchall(
            """INSERT INTO secrets(tenant, name, sealed, revision, created_at, updated_at)
               VALUES (?, ?, ?, 1, ?, ?)
               ON CONFLICT(tenant, name) DO UPDATE SET sealed=excluded.sealed,
                 revision=secrets.revision + 1, updated_at=excluded.updated_at
               RETURNING revision""",
            (tenant, name, sealed, now, now),
        )
        await self.db.commit()
        [row] = rows
        return int(row[0])

    async def get_secret(self, tenant: str, name: str) -> SecretRecord | None:
        async with self.db.execute(
            "SELECT * FROM secrets WHERE tenant=? AND name=?", (tenant, name)
        ) as cur:
            row = await cur.fetchone()
        return _record(row, sealed=True) if row else None

    async def list_secrets(self, tenant: str) -> list[SecretRecord]:
        """The tenant's secrets by name, without their sealed values."""
        async with self.db.execute(
            """SELECT tenant, name, revision, created_at, updated_at FROM secrets
               WHERE tenant=? ORDER BY name""",
            (tenant,),
        ) as cur:
            rows = await cur.fetchall()
        return [_record(row, sealed=False) for row in rows]

    async def delete_secret(self, tenant: str, name: str) -> bool:
        """Whether there was such a secret."""
        async with self.db.execute(
            "DELETE FROM secrets WHERE tenant=? AND name=?", (tenant, name)
        ) as cur:
            deleted = cur.rowcount
        await self.db.commit()
        return deleted > 0

    async def delete_tenant_secrets(self, tenant: str) -> int:
        """Remove every secret of ``tenant`` (the tenant is removed); returns how many."""
        async with self.db.execute("DELETE FROM secrets WHERE tenant=?", (tenant,)) as cur:
            deleted = cur.rowcount
        await self.db.commit()
        return int(deleted)


def _record(row: aiosqlite.Row, *, sealed: bool) -> SecretRecord:
    return SecretRecord(
        tenant=row["tenant"],
        name=row["name"],
        revision=int(row["revision"]),
        created_at=float(row["created_at"]),
        updated_at=float(row["updated_at"]),
        sealed=bytes(row["sealed"]) if sealed else b"",
    )
