"""The secrets table: each tenant's secrets, sealed (encrypted) before they get here."""

from __future__ import annotations

from plat.daemon.store.database import Database


class SecretRows(Database):
    """Rows of ``secrets``: (tenant, name) -> sealed bytes and a revision."""
