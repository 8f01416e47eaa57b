"""The control API and the audit log: the middleware that records every change made
through either door, and the routes that list, verify and export the records.

The middleware is the outermost one, so it sees the answer the caller got (a
PlatError already turned into its status and code) and the scope the inner one
set (who called). A request that changes something (POST, PUT, PATCH, DELETE)
is recorded once its handler is done; a credential the gateway's door refused
(a 401 with an Authorization header) is recorded on any method, through the
audit log's limit per origin. Bodies are read only for the keys the action
table lists (plat.daemon.audit.actions); answers never.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from plat.daemon.audit.actions import MUTATING, Action, action_of, params_of, target_of
from plat.daemon.audit.chain import timestamp
from plat.daemon.audit.log import AuditLog
from plat.daemon.audit.note import NOTE, AuditNote
from plat.daemon.control.errors import Handler
from plat.daemon.control.scope import SCOPE, Door, Scope, scope_of
from plat.daemon.control.stream import Stream
from plat.daemon.store.audit import AuditFilter
from plat.errors import PlatError
from plat.units import parse_duration

log = logging.getLogger(__name__)

PEER_HEADER = "X-Plat-Peer"  # the client's address, as the gateway passes it on
MAX_LIMIT = 10_000
BODY_READ = 64 * 1024  # a body larger than this is not looked at for parameters
_UCRED = struct.Struct("3i")  # pid, uid, gid


def origin_of(request: web.Request, door: Door) -> str:
    """Where a request came from: the socket peer's uid, or the client's address."""
    if door == "socket":
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if sock is not None and hasattr(socket, "SO_PEERCRED"):
            try:
                raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
                return f"uid:{_UCRED.unpack(raw)[1]}"
            except OSError:
                pass
        return "socket"
    return request.headers.get(PEER_HEADER) or request.remote or "unknown"


def actor_of(scope: Scope) -> str:
    return "admin" if scope.principal.admin else f"tenant:{scope.principal.tenant}"


def outcome_of(response: web.StreamResponse | None, note: AuditNote) -> str:
    """``ok``, or the error's code (its HTTP status when the answer names none);
    ``cancelled`` for a request whose handler was cancelled with nothing to finish."""
    if note.outcome:
        return note.outcome
    if response is None:
        return "ok" if note.pending is not None and note.pending.done() else "cancelled"
    if response.status < 400:
        return "ok"
    body = getattr(response, "body", None)
    if isinstance(body, bytes) and len(body) <= BODY_READ:
        try:
            code = json.loads(body).get("error")
        except (ValueError, AttributeError):
            code = None
        if isinstance(code, str) and code:
            return code
    return str(response.status)


async def _body(request: web.Request, action: Action) -> dict[str, Any] | None:
    """The JSON body, for an action that lists keys of it (the handler read it
    already: aiohttp keeps it); None for any other."""
    if not (action.body or action.body_target):
        return None
    if not request.body_exists or (request.content_length or 0) > BODY_READ:
        return None
    try:
        data = json.loads(await request.read())
    except (ValueError, RecursionError, OSError, web.HTTPException):
        return None
    return data if isinstance(data, dict) else None


def audit_middleware(audit: AuditLog, door: Door) -> Middleware:
    """Records each change made through ``door`` (see the module's docstring)."""

    async def record(request: web.Request, response: web.StreamResponse | None) -> None:
        scope: Scope | None = request.get(SCOPE)
        if scope is None:
            if response is not None and response.status == 401:
                header = request.headers.get("Authorization")
                if header:
                    audit.auth_failed(
                        origin=origin_of(request, door),
                        target=request.path,
                        params={"method": request.method, "scheme": header.split(" ")[0]},
                    )
            return
        if request.method not in MUTATING or request.match_info.route.resource is None:
            return
        note = request.get(NOTE) or AuditNote()
        action = action_of(request.method, request.match_info.route.resource.canonical)
        body = await _body(request, action)
        target = note.target or target_of(action, request.match_info, body) or ""
        audit.record(
            action=action.name,
            target=target,
            outcome=outcome_of(response, note),
            actor=actor_of(scope),
            origin=origin_of(request, door),
            tenant=target if action.of_tenant and target else scope.tenant,
            params={**params_of(action, request.query, body), **note.params},
        )

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in MUTATING:
            request[NOTE] = AuditNote()
        try:
            response = await handler(request)
        except asyncio.CancelledError:
            # The client left. What its request started may go on: record its end.
            note = request.get(NOTE)
            if note is not None and note.pending is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait({note.pending})
            await asyncio.shield(_safely(record(request, None)))
            raise
        await _safely(record(request, response))
        return response

    return middleware


async def _safely(recording: Any) -> None:
    """Recording never fails a request."""
    try:
        await recording
    except Exception:
        log.exception("could not record a control action in the audit log")


def _since(raw: str | None) -> str | None:
    """A record time from ``1h`` or ``7d`` (that long ago) or an ISO 8601 time."""
    if not raw:
        return None
    try:
        days = raw.strip().endswith("d")
        seconds = parse_duration(raw.strip()[:-1]) * 86400 if days else parse_duration(raw)
        return timestamp(max(0.0, datetime.now(UTC).timestamp() - seconds))
    except (ValueError, OverflowError):
        pass
    try:
        moment = datetime.fromisoformat(raw)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return timestamp(moment.timestamp())
    except (ValueError, OverflowError, OSError):
        raise PlatError(
            f"bad since {raw[:64]!r}: give a duration (30m, 2h, 7d) or an ISO 8601 time "
            "(2026-11-30T12:00:00Z)"
        ) from None


def _limit(raw: str | None) -> int:
    try:
        limit = int(raw) if raw else 100
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise PlatError(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return limit


def _filter(request: web.Request) -> AuditFilter:
    scope, q = scope_of(request), request.query
    return AuditFilter(
        tenant=None if scope.every_tenant else scope.tenant,
        since=_since(q.get("since")),
        actor=q.get("actor") or None,
        action=q.get("action") or None,
    )


def audit_routes(audit: AuditLog) -> list[web.RouteDef]:
    async def list_records(request: web.Request) -> web.Response:
        where, limit = _filter(request), _limit(request.query.get("limit"))
        return web.json_response({"records": await audit.query(where, limit)})

    async def verify(request: web.Request) -> web.Response:
        scope_of(request).require_admin("verifying the audit log")
        return web.json_response((await audit.verify()).to_json())

    async def export(request: web.Request) -> web.StreamResponse:
        where = _filter(request)
        stream = Stream("audit export")
        await stream.start(request)
        async for record in audit.export(where):
            await stream.send(record)
            if stream.gone:
                break
        await stream.end()
        return stream.response

    return [
        web.get("/v1/audit", list_records),
        web.get("/v1/audit/verify", verify),
        web.get("/v1/audit/export", export),
    ]
