"""The tamper-evident audit log: who changed what, from where, and how it ended.

:mod:`.chain` (a record, its canonical form and hash), :mod:`.verify` (checking
the chain), :mod:`.limit` (failed authentications per origin), :mod:`.actions`
(which control action a request is), :mod:`.note` (what a handler adds), and
:mod:`.log` (the queue and its one writer, retention). See docs/audit.md.
"""

from __future__ import annotations

from plat.daemon.audit.log import AuditLog, AuditRetention

__all__ = ["AuditLog", "AuditRetention"]
