"""The metadata store: SQLite through aiosqlite, WAL, versioned migrations.

The store is the only source of truth for functions, their versions (builds) and
instances, and keeps the logs and invocation records of each function.
Everything the daemon persists goes through this package: :mod:`.database`
(connection and migrations), :mod:`.schema` (the migrations), :mod:`.catalog`
(functions, versions, instances) and :mod:`.history` (logs, invocations).
"""

from __future__ import annotations

from plat.daemon.store.catalog import Catalog, FunctionRecord, InstanceRecord, VersionRecord
from plat.daemon.store.history import History, Invocation, LogLine
from plat.daemon.store.schema import MIGRATIONS

__all__ = [
    "MIGRATIONS",
    "FunctionRecord",
    "InstanceRecord",
    "Invocation",
    "LogLine",
    "Store",
    "VersionRecord",
]


class Store(Catalog, History):
    """Async access to the database. ``open()`` and ``close()`` are idempotent."""
