"""Control API routes that look back: a function's logs (history, then live) and
invocation statistics."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from aiohttp import web

from plat.daemon.control.scope import scope_of
from plat.daemon.functions import Functions
from plat.daemon.journal import Journal
from plat.daemon.store import Invocation, Store
from plat.errors import PlatError
from plat.tenancy import split_key, tenant_of
from plat.units import parse_duration

MAX_TAIL = 10**9  # more log lines than any retention keeps


def _since(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return time.time() - parse_duration(value)
    except ValueError as exc:
        raise PlatError(f"bad --since {value!r}: {exc}") from None


def percentile(sorted_values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) by nearest rank, None for no values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(records: list[Invocation]) -> dict[str, Any]:
    durations = sorted(r.duration for r in records)
    errors = sum(1 for r in records if r.status >= 500)
    client_errors = sum(1 for r in records if 400 <= r.status < 500)
    return {
        "invocations": len(records),
        "errors": errors,
        "client_errors": client_errors,
        "error_rate": errors / len(records) if records else 0.0,
        "p50": percentile(durations, 0.50),
        "p95": percentile(durations, 0.95),
        "p99": percentile(durations, 0.99),
        "cold_starts": sum(1 for r in records if r.cold),
        "bytes_in": sum(r.bytes_in for r in records),
        "bytes_out": sum(r.bytes_out for r in records),
    }


def observe_routes(functions: Functions, store: Store, journal: Journal) -> list[web.RouteDef]:
    async def logs(request: web.Request) -> web.StreamResponse:
        """History, then (with follow=1) live lines, as NDJSON; no line twice, none skipped."""
        name = scope_of(request).key(request.match_info["name"])
        await functions.record(name)
        q = request.query
        since = _since(q.get("since"))
        raw_tail = q.get("tail", "")
        # isdigit() takes "²", which int() refuses; SQLite takes at most 2**63 - 1.
        tail = min(int(raw_tail), MAX_TAIL) if raw_tail.isascii() and raw_tail.isdecimal() else None
        instance = q.get("instance") or None
        follow = q.get("follow") == "1"
        sub = journal.subscribe(name) if follow else None
        try:
            await journal.flush()
            history = await store.query_logs(name, since=since, tail=tail, instance=instance)
            response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
            await response.prepare(request)
            last = 0
            for line in history:
                await response.write((json.dumps(line.to_json()) + "\n").encode())
                last = line.id
            if sub is not None:
                async for line in sub:
                    if line.id <= last or (instance and not line.instance.startswith(instance)):
                        continue
                    await response.write((json.dumps(line.to_json()) + "\n").encode())
            await response.write_eof()
            return response
        finally:
            if sub is not None:
                sub.close()

    async def stats(request: web.Request) -> web.Response:
        scope = scope_of(request)
        window = request.query.get("since") or "1h"
        since = _since(window)
        assert since is not None
        named = request.query.get("function") or None
        function = scope.key(named) if named else None
        if function:
            await functions.record(function)
        await journal.flush()
        records = await store.query_invocations(since, function)
        by_function: dict[str, list[Invocation]] = {}
        for record in records:
            if scope.sees(tenant_of(record.function)):
                by_function.setdefault(record.function, []).append(record)
        if function:
            by_function.setdefault(function, [])
        rows = []
        for key, recs in sorted(by_function.items()):
            name, tenant = split_key(key)
            rows.append({"function": name, "tenant": tenant, **summarize(recs)})
        return web.json_response({"since": window, "functions": rows})

    return [
        web.get("/v1/functions/{name}/logs", logs),
        web.get("/v1/stats", stats),
    ]
