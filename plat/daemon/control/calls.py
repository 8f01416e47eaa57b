"""Control API routes of queued calls (``POST /async-function/...`` and cron ticks):
``GET /v1/calls`` (a function's calls, or every call in scope, newest first),
``GET /v1/calls/{id}`` (one call, its attempts and the answer kept) and
``POST /v1/calls/{id}/retry`` (a dead or failed call queued again).

A caller sees the calls of its scope's functions only; another tenant's call is a
404, as if it did not exist. The queue's service is created after these routes
(it needs the gateway's server), so they reach it through a getter.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from plat.api import AttemptView, CallDetail, CallList, CallResponse, CallSummary
from plat.daemon.control.scope import Scope, scope_of
from plat.daemon.functions import Functions
from plat.daemon.store import Store
from plat.daemon.store.calls import CALL_STATES, Attempt, QueuedCall
from plat.daemon.tracing.context import parse_traceparent
from plat.errors import NotFoundError, PlatError, no_function
from plat.tenancy import split_key, tenant_of

if TYPE_CHECKING:  # the service imports the gateway, which imports this package
    from plat.daemon.asyncq.service import CallService

# What the gateway accepts as an X-Call-Id (plat.daemon.http.relay.CALL_ID_RE).
CALL_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
SHOWN_BODY = 64 * 1024  # an answer's body shown whole up to this (the store keeps no more)
RETRYABLE = ("dead", "failed")

CallServiceGetter = Callable[[], "CallService | None"]


class NotRetryable(PlatError):
    status = 409
    code = "call_not_retryable"


class CallsUnavailable(PlatError):
    status = 503
    code = "calls_unavailable"


def _shown(raw: str) -> str:
    """A value the caller gave, quoted shortened in an error message."""
    return repr(raw) if len(raw) <= 40 else f"{raw[:40]!r}... ({len(raw)} characters)"


def parse_limit(raw: str | None) -> int:
    if not raw:
        return DEFAULT_LIMIT
    # int() refuses more than 4300 digits with a ValueError: the length is checked first.
    if not (len(raw) <= 6 and raw.isascii() and raw.isdecimal()) or not 1 <= int(raw) <= MAX_LIMIT:
        raise PlatError(f"bad limit {_shown(raw)}: give a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


def parse_state(raw: str | None) -> str | None:
    if not raw:
        return None
    if raw not in CALL_STATES:
        raise PlatError(f"bad state {_shown(raw)}: give one of {', '.join(CALL_STATES)}")
    return raw


def parse_call_id(raw: str) -> str:
    if not CALL_ID.fullmatch(raw):
        raise PlatError(
            f"bad call id {_shown(raw)}: a call id is 1 to 128 letters, digits, '.', '_' or '-'",
            hint="`plat calls NAME` lists a function's calls",
        )
    return raw


def no_call(call_id: str) -> NotFoundError:
    return NotFoundError(
        f"no call {call_id} is kept",
        hint="`plat calls NAME` lists a function's calls; finished calls are kept 7 days "
        "(10,000 a function at most)",
    )


def summary(call: QueuedCall) -> CallSummary:
    name, tenant = split_key(call.function)
    return {
        "id": call.id,
        "function": name,
        "tenant": tenant,
        "state": call.state,
        "trigger": call.trigger,
        "attempts": call.attempts,
        "status": call.status,
        "created_at": call.created_at,
        "finished_at": call.finished_at,
        "duration": call.duration,
        "callback_state": call.callback_state,
        "error": call.error,
    }


def response_of(call: QueuedCall) -> CallResponse | None:
    """The answer that ended the call: its body as text when it is UTF-8 (and no
    longer than SHOWN_BODY), else base64. None while no answer ended it."""
    if call.status is None or call.response_body is None:
        return None
    body = call.response_body
    out: CallResponse = {"status": call.status, "headers": call.response_headers, "body": ""}
    if len(body) <= SHOWN_BODY:
        try:
            out["body"] = body.decode("utf-8")
            return out
        except UnicodeDecodeError:
            pass
    out["body"] = base64.b64encode(body).decode("ascii")
    out["encoding"] = "base64"
    return out


def attempt_view(attempt: Attempt) -> AttemptView:
    return {
        "attempt": attempt.attempt,
        "started_at": attempt.started_at,
        "duration": attempt.duration,
        "status": attempt.status,
        "error": attempt.error,
    }


def detail(call: QueuedCall, attempts: list[Attempt]) -> CallDetail:
    return {
        **summary(call),
        "method": call.method,
        "target": call.target,
        "callback_url": call.callback_url,
        "callback_attempts": call.callback_attempts,
        "callback_status": call.callback_status,
        "attempts_detail": [attempt_view(a) for a in attempts],
        "response": response_of(call),
        "trace_id": trace_of(call),
    }


def trace_of(call: QueuedCall) -> str | None:
    """The trace its attempts share (their traceparent's), if it has one."""
    for name, value in call.headers:
        if name.lower() == "traceparent":
            parent = parse_traceparent(value.encode("latin-1", "replace"))
            return f"{parent.trace_id:032x}" if parent is not None else None
    return None


def call_routes(
    functions: Functions, store: Store, service: CallServiceGetter | None
) -> list[web.RouteDef]:
    # Retries are rare: one at a time, so two concurrent retries of one call cannot
    # both see it dead and queue it twice.
    retrying = asyncio.Lock()

    async def keys_of(scope: Scope, named: str | None) -> list[str] | None:
        """The function keys listed: the named one, or every one in scope (None: all)."""
        if named:
            key = scope.key(named)
            if key not in functions.controller.functions and key not in set(
                await store.called_functions()
            ):
                raise no_function(named)
            return [key]
        if scope.every_tenant:
            return None
        return [k for k in await store.called_functions() if scope.sees(tenant_of(k))]

    async def find(request: web.Request) -> QueuedCall:
        call_id = parse_call_id(request.match_info["call_id"])
        call = await store.get_call(call_id)
        if call is None or not scope_of(request).sees(tenant_of(call.function)):
            raise no_call(call_id)
        return call

    async def list_calls(request: web.Request) -> web.Response:
        q = request.query
        state, limit = parse_state(q.get("state")), parse_limit(q.get("limit"))
        keys = await keys_of(scope_of(request), q.get("function"))
        calls = [] if keys == [] else await store.list_calls(keys, state, limit)
        body: CallList = {"calls": [summary(call) for call in calls]}
        return web.json_response(body)

    async def show_call(request: web.Request) -> web.Response:
        call = await find(request)
        return web.json_response(detail(call, await store.attempts_of(call.id)))

    async def retry_call(request: web.Request) -> web.Response:
        calls = service() if service is not None else None
        if calls is None:
            raise CallsUnavailable("queued calls are not running in this daemon yet")
        async with retrying:
            call = await find(request)
            name = split_key(call.function)[0]
            if call.state not in RETRYABLE:
                raise NotRetryable(
                    f"call {call.id} is {call.state}: only a dead or failed call can be retried",
                    hint="queue a new call with POST /async-function/" + name,
                )
            if call.function not in functions.controller.functions:
                raise NotRetryable(
                    f"call {call.id} is of {name}, which is no longer deployed",
                    hint="deploy it again first",
                )
            call = await calls.retry(call)
        return web.json_response(detail(call, await store.attempts_of(call.id)))

    return [
        web.get("/v1/calls", list_calls),
        web.get("/v1/calls/{call_id}", show_call),
        web.post("/v1/calls/{call_id}/retry", retry_call),
    ]
