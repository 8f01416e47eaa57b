"""The metadata store: SQLite through aiosqlite, WAL, versioned migrations.

The store is the only source of truth for functions, their versions (builds) and
instances. Everything the daemon persists goes through this module.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite

from plat.errors import DaemonError

# Each entry upgrades the schema by one version. Never edit a shipped entry; append.
MIGRATIONS: Sequence[str] = (
    """
    CREATE TABLE functions (
        name        TEXT PRIMARY KEY,
        manifest    TEXT NOT NULL,
        source_dir  TEXT NOT NULL,
        version     TEXT,
        created_at  REAL NOT NULL,
        updated_at  REAL NOT NULL
    );
    CREATE TABLE versions (
        function    TEXT NOT NULL,
        version     TEXT NOT NULL,
        image       TEXT NOT NULL,
        status      TEXT NOT NULL,
        builder     TEXT,
        build_log   TEXT NOT NULL DEFAULT '',
        build_seconds REAL,
        manifest    TEXT NOT NULL,
        created_at  REAL NOT NULL,
        PRIMARY KEY (function, version)
    );
    CREATE TABLE instances (
        id          TEXT PRIMARY KEY,
        function    TEXT NOT NULL,
        version     TEXT NOT NULL,
        backend     TEXT NOT NULL,
        address     TEXT NOT NULL,
        state       TEXT NOT NULL,
        started_at  REAL NOT NULL,
        ready_seconds REAL
    );
    CREATE INDEX instances_by_function ON instances(function);
    """,
    """
    CREATE TABLE logs (
        id          INTEGER PRIMARY KEY,
        ts          REAL NOT NULL,
        function    TEXT NOT NULL,
        version     TEXT NOT NULL,
        instance    TEXT NOT NULL,
        stream      TEXT NOT NULL,
        call_id     TEXT,
        line        TEXT NOT NULL
    );
    CREATE INDEX logs_by_function ON logs(function, id);
    CREATE TABLE invocations (
        id          INTEGER PRIMARY KEY,
        ts          REAL NOT NULL,
        function    TEXT NOT NULL,
        version     TEXT NOT NULL,
        status      INTEGER NOT NULL,
        duration    REAL NOT NULL,
        bytes_in    INTEGER NOT NULL,
        bytes_out   INTEGER NOT NULL,
        cold        INTEGER NOT NULL,
        call_id     TEXT NOT NULL
    );
    CREATE INDEX invocations_by_function ON invocations(function, ts);
    """,
    """
    ALTER TABLE versions ADD COLUMN mounts TEXT NOT NULL DEFAULT '{}';
    """,
    """
    ALTER TABLE functions ADD COLUMN scale_override TEXT;
    """,
)


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


@dataclass(frozen=True)
class LogLine:
    """One line an instance wrote. ``id`` orders lines across the whole store."""

    id: int
    ts: float
    function: str
    version: str
    instance: str
    stream: str  # stdout | stderr | plat
    call_id: str | None
    line: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Invocation:
    """The access record of one call through the gateway."""

    ts: float
    function: str
    version: str
    status: int
    duration: float
    bytes_in: int
    bytes_out: int
    cold: bool
    call_id: str


class Store:
    """Async access to the database. ``open()`` and ``close()`` are idempotent."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None

    async def open(self) -> None:
        if self._db is not None:
            return
        self._db = await aiosqlite.connect(self.path)
        try:
            self._db.row_factory = aiosqlite.Row
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute("PRAGMA synchronous=NORMAL")
            await self._db.execute("PRAGMA foreign_keys=ON")
            await self._db.execute("PRAGMA busy_timeout=5000")
            await self.migrate()
        except BaseException:
            await self.close()
            raise
        self.path.chmod(0o600)

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise DaemonError("the store is closed")
        return self._db

    async def schema_version(self) -> int:
        async with self.db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def migrate(self) -> int:
        """Apply pending migrations in order; returns the resulting schema version."""
        current = await self.schema_version()
        if current > len(MIGRATIONS):
            raise DaemonError(
                f"the database {self.path} has schema version {current}, newer than this plat "
                f"({len(MIGRATIONS)})",
                hint="upgrade plat, or point PLAT_HOME elsewhere",
            )
        for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
            await self.db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={number};\nCOMMIT;")
        return len(MIGRATIONS)

    async def ping(self) -> None:
        async with self.db.execute("SELECT 1") as cur:
            await cur.fetchone()

    # functions

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

    # logs and invocation records (written in batches by plat.daemon.journal)

    async def insert_logs(self, rows: Sequence[LogLine]) -> None:
        await self.db.executemany(
            "INSERT INTO logs(id, ts, function, version, instance, stream, call_id, line) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            # Plain tuples: dataclasses.astuple deep-copies every field (hot path).
            [
                (r.id, r.ts, r.function, r.version, r.instance, r.stream, r.call_id, r.line)
                for r in rows
            ],
        )

    async def insert_invocations(self, rows: Sequence[Invocation]) -> None:
        await self.db.executemany(
            "INSERT INTO invocations(ts, function, version, status, duration, bytes_in, "
            "bytes_out, cold, call_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r.ts,
                    r.function,
                    r.version,
                    r.status,
                    r.duration,
                    r.bytes_in,
                    r.bytes_out,
                    r.cold,
                    r.call_id,
                )
                for r in rows
            ],
        )

    async def commit(self) -> None:
        await self.db.commit()

    async def max_log_id(self) -> int:
        async with self.db.execute("SELECT COALESCE(MAX(id), 0) FROM logs") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def last_log_ts(self, instance: str) -> float | None:
        async with self.db.execute("SELECT MAX(ts) FROM logs WHERE instance=?", (instance,)) as cur:
            row = await cur.fetchone()
        return float(row[0]) if row and row[0] is not None else None

    async def query_logs(
        self,
        function: str,
        *,
        since: float | None = None,
        tail: int | None = None,
        instance: str | None = None,
        after_id: int = 0,
    ) -> list[LogLine]:
        """Lines of ``function`` in order; ``tail`` keeps the last N of what matches."""
        where = ["function=?", "id>?"]
        args: list[Any] = [function, after_id]
        if since is not None:
            where.append("ts>=?")
            args.append(since)
        if instance is not None:
            where.append("instance LIKE ?")
            args.append(instance + "%")
        query = f"SELECT * FROM logs WHERE {' AND '.join(where)} ORDER BY id"
        if tail is not None:
            query = f"SELECT * FROM ({query} DESC LIMIT ?) ORDER BY id"
            args.append(tail)
        async with self.db.execute(query, args) as cur:
            rows = await cur.fetchall()
        return [LogLine(**dict(row)) for row in rows]

    async def trim_logs(self, function: str, keep: int, older_than: float) -> int:
        """Delete all but the newest ``keep`` lines and lines older than ``older_than``."""
        cur = await self.db.execute(
            """DELETE FROM logs WHERE function=? AND (ts < ? OR id <= COALESCE(
                 (SELECT id FROM logs WHERE function=? ORDER BY id DESC LIMIT 1 OFFSET ?), 0))""",
            (function, older_than, function, keep),
        )
        await self.db.commit()
        return cur.rowcount

    async def trim_invocations(self, function: str, keep: int, older_than: float) -> int:
        cur = await self.db.execute(
            """DELETE FROM invocations WHERE function=? AND (ts < ? OR id <= COALESCE(
                 (SELECT id FROM invocations WHERE function=? ORDER BY id DESC LIMIT 1 OFFSET ?),
                 0))""",
            (function, older_than, function, keep),
        )
        await self.db.commit()
        return cur.rowcount

    async def logged_functions(self) -> list[str]:
        async with self.db.execute(
            "SELECT DISTINCT function FROM logs UNION SELECT DISTINCT function FROM invocations"
        ) as cur:
            rows = await cur.fetchall()
        return [str(row[0]) for row in rows]

    async def query_invocations(
        self, since: float, function: str | None = None
    ) -> list[Invocation]:
        query = "SELECT * FROM invocations WHERE ts>=?"
        args: list[Any] = [since]
        if function is not None:
            query += " AND function=?"
            args.append(function)
        async with self.db.execute(query + " ORDER BY id", args) as cur:
            rows = await cur.fetchall()
        out = []
        for row in rows:
            data = dict(row)
            data.pop("id")
            data["cold"] = bool(data["cold"])
            out.append(Invocation(**data))
        return out


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
