"""The hooks' side of the audit log: one optional callback, never in the way.

The daemon hands the service the audit log's ``record`` (or nothing); it is
called with keywords only: ``action``, ``target``, ``outcome``, ``actor``
(``hook:<id>``), ``origin`` (the sender's address), ``tenant`` and ``params``
(never a secret). A failing audit log is logged, and the delivery goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

AuditCallback = Callable[..., None]


class Auditor:
    def __init__(self, callback: AuditCallback | None) -> None:
        self.callback = callback

    def __call__(
        self,
        action: str,
        target: str,
        outcome: str,
        *,
        hook: str,
        origin: str,
        tenant: str,
        **params: Any,
    ) -> None:
        if self.callback is None:
            return
        try:
            self.callback(
                action=action,
                target=target,
                outcome=outcome,
                actor=f"hook:{hook}",
                origin=origin,
                tenant=tenant,
                params={k: v for k, v in params.items() if v is not None},
            )
        except Exception:
            log.exception("the audit log refused a record of %s on %s", action, target)
