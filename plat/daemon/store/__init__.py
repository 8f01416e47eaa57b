"""The metadata store: SQLite through aiosqlite, WAL, versioned migrations.

The store is the only source of truth for functions, their versions (builds) and
instances, and keeps the logs and invocation records of each function.
Everything the daemon persists goes through this package: :mod:`.database`
(connection and migrations), :mod:`.schema` (the migrations), :mod:`.catalog`
(functions, versions, instances), :mod:`.history` (logs, invocations),
:mod:`.traces`, :mod:`.calls` (queued calls), :mod:`.tenants`, :mod:`.secrets`,
:mod:`.hooks` (git webhooks) and :mod:`.audit` (the audit log).
"""

from __future__ import annotations

from plat.daemon.store.audit import AuditRows
from plat.daemon.store.calls import CallRows
from plat.daemon.store.catalog import Catalog, FunctionRecord, InstanceRecord, VersionRecord
from plat.daemon.store.history import History, Invocation, LogLine
from plat.daemon.store.hooks import HookRows
from plat.daemon.store.schema import MIGRATIONS
from plat.daemon.store.secrets import SecretRows
from plat.daemon.store.tenants import TenantRows
from plat.daemon.store.traces import ORDERS, Order, SpanRecord, TraceRows

__all__ = [
    "MIGRATIONS",
    "ORDERS",
    "FunctionRecord",
    "InstanceRecord",
    "Invocation",
    "LogLine",
    "Order",
    "SpanRecord",
    "Store",
    "VersionRecord",
]


class Store(Catalog, History, TraceRows, CallRows, TenantRows, SecretRows, HookRows, AuditRows):
    """Async access to the database. ``open()`` and ``close()`` are idempotent."""
