"""The tenants table: names, token hashes and quotas."""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiosqlite

from plat.daemon.store.database import Database


@dataclass(frozen=True)
class TenantRecord:
    name: str
    token_hash: str
    max_instances: int | None
    max_memory: int | None
    created_at: float
    token_at: float


def _tenant(row: aiosqlite.Row) -> TenantRecord:
    return TenantRecord(
        row["name"],
        row["token_hash"],
        row["max_instances"],
        row["max_memory"],
        row["created_at"],
        row["token_at"],
    )


class TenantRows(Database):
    """Rows of ``tenants``. The built-in tenant ``default`` has no row."""

    async def create_tenant(
        self, name: str, token_hash: str, max_instances: int | None, max_memory: int | None
    ) -> TenantRecord | None:
        """The new tenant; None when one of that name exists."""
        now = time.time()
        cur = await self.db.execute(
            """INSERT INTO tenants(name, token_hash, max_instances, max_memory, created_at,
                 token_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO NOTHING""",
            (name, token_hash, max_instances, max_memory, now, now),
        )
        await self.db.commit()
        if cur.rowcount == 0:
            return None
        return TenantRecord(name, token_hash, max_instances, max_memory, now, now)

    async def list_tenants(self) -> list[TenantRecord]:
        async with self.db.execute("SELECT * FROM tenants ORDER BY name") as cur:
            rows = await cur.fetchall()
        return [_tenant(row) for row in rows]

    async def set_token_hash(self, name: str, token_hash: str) -> bool:
        """Replace a tenant's token hash; False when there is no such tenant."""
        cur = await self.db.execute(
            "UPDATE tenants SET token_hash=?, token_at=? WHERE name=?",
            (token_hash, time.time(), name),
        )
        await self.db.commit()
        return cur.rowcount > 0

    async def delete_tenant(self, name: str) -> bool:
        """Remove the tenant's row and its secrets; False when there was none."""
        await self.db.execute("DELETE FROM secrets WHERE tenant=?", (name,))
        cur = await self.db.execute("DELETE FROM tenants WHERE name=?", (name,))
        await self.db.commit()
        return cur.rowcount > 0
