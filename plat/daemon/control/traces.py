"""Control API routes of traces: ``GET /v1/traces`` (sampled calls, recent, slowest
or failed) and ``GET /v1/traces/{trace_id}`` (a trace's spans and log lines). A
caller sees the calls, spans and lines of the functions in its scope only: a
trace that crosses tenants shows each tenant its own part."""

from __future__ import annotations

import re
import time

from aiohttp import web

from plat.daemon.control.scope import scope_of
from plat.daemon.functions import Functions
from plat.daemon.journal import Journal
from plat.daemon.store import ORDERS, Order, Store
from plat.daemon.tracing.spans import call_spans, function_span
from plat.errors import NotFoundError, PlatError, no_function
from plat.tenancy import split_key, tenant_of
from plat.units import parse_duration

TRACE_ID = re.compile(r"[0-9a-f]{32}")
DEFAULT_LIMIT = 20
MAX_LIMIT = 1000
MAX_LOG_LINES = 1000
# A trace is read up to these bounds (a caller may reuse one trace id for ever).
MAX_CALLS = 1000
MAX_SPANS = 10_000


def _shown(raw: str) -> str:
    """A value the caller gave, as an error message quotes it: shortened (an 8 KiB
    path is not sent back whole)."""
    return repr(raw) if len(raw) <= 40 else f"{raw[:40]!r}... ({len(raw)} characters)"


def _limit(raw: str | None) -> int:
    if not raw:
        return DEFAULT_LIMIT
    # int() refuses more than 4300 digits with a ValueError: the length is checked first.
    if not (len(raw) <= 6 and raw.isascii() and raw.isdecimal()) or not 1 <= int(raw) <= MAX_LIMIT:
        raise PlatError(f"bad limit {_shown(raw)}: give a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


def _order(raw: str | None) -> Order:
    for order in ORDERS:
        if raw in (None, "", order):
            return order
    raise PlatError(f"bad order {_shown(raw or '')}: give one of {', '.join(ORDERS)}")


def _since(raw: str | None) -> float:
    try:
        return time.time() - parse_duration(raw or "1h")
    except ValueError:
        raise PlatError(
            f"bad since {_shown(raw or '')}: give a duration greater than zero, e.g. 30s, 15m or 1h"
        ) from None


def trace_routes(functions: Functions, store: Store, journal: Journal) -> list[web.RouteDef]:
    async def list_traces(request: web.Request) -> web.Response:
        scope = scope_of(request)
        q = request.query
        order, limit, since = _order(q.get("order")), _limit(q.get("limit")), _since(q.get("since"))
        named = q.get("function")
        # First: a tenant's functions are those with records, and the records of its
        # first calls may still be in the journal.
        await journal.flush()
        keys: list[str] | None = None
        if named:
            keys = [scope.key(named)]
            try:
                await functions.record(keys[0])
            except NotFoundError:
                raise no_function(named) from None
        elif not scope.every_tenant:
            keys = [k for k in await store.logged_functions() if scope.sees(tenant_of(k))]
        calls = await store.traced_calls(since=since, functions=keys, order=order, limit=limit)
        rows = []
        for call in calls:
            name, tenant = split_key(call.function)
            rows.append(
                {
                    "trace_id": call.trace_id,
                    "function": name,
                    "tenant": tenant,
                    "version": call.version,
                    "ts": call.ts - call.duration,
                    "duration": call.duration,
                    "status": call.status,
                    "cold": call.cold,
                    "call_id": call.call_id,
                }
            )
        return web.json_response({"traces": rows})

    async def show_trace(request: web.Request) -> web.Response:
        scope = scope_of(request)
        trace_id = request.match_info["trace_id"].lower()
        if not TRACE_ID.fullmatch(trace_id) or not trace_id.strip("0"):
            raise PlatError(
                f"bad trace id {_shown(request.match_info['trace_id'])}: a trace id is 32 "
                "hex digits, not all zero"
            )
        await journal.flush()
        spans = [
            span
            for call in await store.trace_calls(trace_id, MAX_CALLS)
            if scope.sees(tenant_of(call.function))
            for span in call_spans(call)
        ]
        spans += [
            function_span(record)
            for record in await store.trace_spans(trace_id, MAX_SPANS)
            if scope.sees(tenant_of(record.function))
        ]
        if not spans:
            raise NotFoundError(
                f"no trace {trace_id} is kept",
                hint="`plat traces` lists recent ones; traces are kept as long as the "
                "invocation records",
            )
        spans.sort(key=lambda span: span.start)
        logs = [
            {**line.to_json(), "function": split_key(line.function)[0]}
            for line in await store.trace_logs(trace_id, MAX_LOG_LINES)
            if scope.sees(tenant_of(line.function))
        ]
        return web.json_response(
            {"trace_id": trace_id, "spans": [span.to_json() for span in spans], "logs": logs}
        )

    return [web.get("/v1/traces", list_traces), web.get("/v1/traces/{trace_id}", show_trace)]
