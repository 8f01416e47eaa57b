"""The connection to the SQLite database: pragmas (WAL), migrations, lifecycle."""

from __future__ import annotations

from pathlib import Path

import aiosqlite

from plat.daemon.store.schema import MIGRATIONS
from plat.errors import DaemonError


class Database:
    """The connection the tables share; ``db`` raises DaemonError while it is closed."""

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

    async def commit(self) -> None:
        await self.db.commit()
