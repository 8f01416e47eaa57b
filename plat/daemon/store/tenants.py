"""The tenants table: names, token hashes and quotas."""

from __future__ import annotations

from plat.daemon.store.database import Database


class TenantRows(Database):
    """Rows of ``tenants``."""
