"""What a control API handler adds to its request's audit record.

The control API's audit middleware (plat.daemon.control.audit) records every
change from the route, the caller and the answer. Some things only the handler
knows: which function a deploy named (it is in the uploaded manifest), and how a
streamed deploy ended (its answer is a 200 whatever happens; an error is its last
event), even when its client left and the handler was cancelled (the deploy goes
on: ``pending``). The handler writes them on the request's note; the middleware
reads it once the handler is done.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class AuditNote:
    target: str | None = None  # what the action was on, when the route does not say
    outcome: str | None = None  # how it ended, when the status does not say
    params: dict[str, Any] = field(default_factory=dict)  # never secret values
    # Work that goes on after its client left (a deploy): its end is awaited to be recorded.
    pending: asyncio.Future[Any] | None = None


NOTE = web.RequestKey("audit_note", AuditNote)


def audit_note(request: web.Request) -> AuditNote:
    """The request's note (a fresh one nobody reads when no audit middleware runs)."""
    note = request.get(NOTE)
    if note is None:
        note = request[NOTE] = AuditNote()
    return note
