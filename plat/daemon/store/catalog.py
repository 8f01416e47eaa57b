"""What is deployed: functions, their versions (builds) and their instances."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiosqlite

from plat.daemon.store.database import Database


@dataclass(frozen=True)
class FunctionRecord:
    name: str
    manifest: dict[str, Any]
    source_dir: str
    version: str | None
    created_at: float
    updated_at: float
    scale_override: dict[str, int] | None = None


@dataclass(frozen=True)
class VersionRecord:
    function: str
    version: str
    image: str
    status: str
    builder: str | None
    build_seconds: float | None
    manifest: dict[str, Any]
    created_at: float
    mounts: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class InstanceRecord:
    id: str
    function: str
    version: str
    backend: str
    address: str
    state: str
    started_at: float
    ready_seconds: float | None


class Catalog(Database):
    """The functions, versions and instances tables."""

    async def upsert_function(
        self, name: str, manifest: dict[str, Any], source_dir: str, version: str
    ) -> None:
        now = time.time()
        await self.db.execute(
            """INSERT INTO functions(name, manifest, source_dir, version, created_at, updated_at)
               VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT(name) DO UPDATE SET manifest=excluded.manifest,
                 source_dir=excluded.source_dir, version=excluded.version,
                 updated_at=excluded.updated_at""",
            (name, json.dumps(manifest), source_dir, version, now, now),
        )
        await self.db.commit()

    async def get_function(self, name: str) -> FunctionRecord | None:
        async with self.db.execute("SELECT * FROM functions WHERE name=?", (name,)) as cur:
            row = await cur.fetchone()
        return _function(row) if row else None

    async def list_functions(self) -> list[FunctionRecord]:
        async with self.db.execute("SELECT * FROM functions ORDER BY name") as cur:
            rows = await cur.fetchall()
        return [_function(row) for row in rows]

    async def set_scale_override(
        self, name: str, override: dict[str, int] | None, manifest: dict[str, Any]
    ) -> None:
        """Persist `plat scale` settings (None clears them) and the effective manifest."""
        await self.db.execute(
            "UPDATE functions SET scale_override=?, manifest=?, updated_at=? WHERE name=?",
            (json.dumps(override) if override else None, json.dumps(manifest), time.time(), name),
        )
        await self.db.commit()

    async def delete_function(self, name: str) -> None:
        """Remove the function with its versions, instances, logs and invocations."""
        await self.db.execute("DELETE FROM instances WHERE function=?", (name,))
        await self.db.execute("DELETE FROM versions WHERE function=?", (name,))
        await self.db.execute("DELETE FROM functions WHERE name=?", (name,))
        await self.db.execute("DELETE FROM logs WHERE function=?", (name,))
        await self.db.execute("DELETE FROM invocations WHERE function=?", (name,))
        await self.db.commit()

    # versions

    async def record_version(
        self,
        function: str,
        version: str,
        image: str,
        *,
        status: str,
        builder: str | None,
        build_log: str,
        build_seconds: float | None,
        manifest: dict[str, Any],
        mounts: dict[str, str] | None = None,
    ) -> None:
        await self.db.execute(
            """INSERT INTO versions(function, version, image, status, builder, build_log,
                 build_seconds, manifest, created_at, mounts)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(function, version) DO UPDATE SET image=excluded.image,
                 status=excluded.status, builder=excluded.builder,
                 build_log=excluded.build_log, build_seconds=excluded.build_seconds,
                 manifest=excluded.manifest, created_at=excluded.created_at,
                 mounts=excluded.mounts""",
            (
                function,
                version,
                image,
                status,
                builder,
                build_log,
                build_seconds,
                json.dumps(manifest),
                time.time(),
                json.dumps(mounts or {}),
            ),
        )
        await self.db.commit()

    async def get_version(self, function: str, version: str) -> VersionRecord | None:
        async with self.db.execute(
            "SELECT * FROM versions WHERE function=? AND version=?", (function, version)
        ) as cur:
            row = await cur.fetchone()
        return _version(row) if row else None

    async def list_versions(self, function: str) -> list[VersionRecord]:
        async with self.db.execute(
            "SELECT * FROM versions WHERE function=? ORDER BY created_at DESC", (function,)
        ) as cur:
            rows = await cur.fetchall()
        return [_version(row) for row in rows]

    async def build_log(self, function: str, version: str) -> str | None:
        async with self.db.execute(
            "SELECT build_log FROM versions WHERE function=? AND version=?", (function, version)
        ) as cur:
            row = await cur.fetchone()
        return str(row[0]) if row else None

    # instances

    async def add_instance(self, record: InstanceRecord) -> None:
        await self.db.execute(
            """INSERT OR REPLACE INTO instances(id, function, version, backend, address, state,
                 started_at, ready_seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
            (
                record.id,
                record.function,
                record.version,
                record.backend,
                record.address,
                record.state,
                record.started_at,
                record.ready_seconds,
            ),
        )
        await self.db.commit()

    async def set_instance_state(
        self, instance_id: str, state: str, ready_seconds: float | None = None
    ) -> None:
        await self.db.execute(
            "UPDATE instances SET state=?, ready_seconds=COALESCE(?, ready_seconds) WHERE id=?",
            (state, ready_seconds, instance_id),
        )
        await self.db.commit()

    async def remove_instance(self, instance_id: str) -> None:
        await self.db.execute("DELETE FROM instances WHERE id=?", (instance_id,))
        await self.db.commit()

    async def list_instances(self, function: str | None = None) -> list[InstanceRecord]:
        query = "SELECT * FROM instances"
        args: tuple[str, ...] = ()
        if function is not None:
            query, args = query + " WHERE function=?", (function,)
        query += " ORDER BY started_at"
        async with self.db.execute(query, args) as cur:
            rows = await cur.fetchall()
        return [InstanceRecord(**dict(row)) for row in rows]


def _function(row: aiosqlite.Row) -> FunctionRecord:
    data = dict(row)
    data["manifest"] = json.loads(data["manifest"])
    override = data.get("scale_override")
    data["scale_override"] = json.loads(override) if override else None
    return FunctionRecord(**data)


def _version(row: aiosqlite.Row) -> VersionRecord:
    data = dict(row)
    data.pop("build_log", None)
    data["manifest"] = json.loads(data["manifest"])
    data["mounts"] = json.loads(data.get("mounts") or "{}")
    return VersionRecord(**data)
