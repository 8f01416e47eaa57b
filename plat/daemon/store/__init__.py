"""The metadata store: SQLite through aiosqlite, WAL, versioned migrations.

The store is the only source of truth for functions, their versions (builds) and
instances, and keeps the logs and invocation records of each function.
Everything the daemon persists goes through this package: :mod:`.database`
(connection and migrations), :mod:`.schema` (the migrations), :mod:`.catalog`
(functions, versions, instances), :mod:`.history` (logs, invocations),
:mod:`.tenants` and :mod:`.secrets`.
"""

from __future__ import annotations

from plat.daemon.store.catalog import Catalog, FunctionRecord, InstanceRecord, VersionRecord
from plat.daemon.store.history import History, Invocation, LogLine
from plat.daemon.store.schema import MIGRATIONS
from plat.daemon.store.secrets import SecretRows
from plat.daemon.store.tenants import TenantRows

__all__ = [
    "MIGRATIONS",
    "FunctionRecord",
    "InstanceRecord",
    "Invocation",
    "LogLine",
    "Store",
    "VersionRecord",
]


class Store(Catalog, History, TenantRows, SecretRows):
    """Async access to the database. ``open()`` and ``close()`` are idempotent."""
