"""Control API routes of functions' SLOs: ``GET /v1/slo`` (SLIs, error budget and
burn rates from the invocation records) and ``GET /v1/slo/rules`` (Prometheus
rules). Both cover the functions with an ``slo:`` in the caller's scope, or the
one named by ``?function=NAME``; a tenant never sees another tenant's."""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web
from pydantic import ValidationError

from plat.daemon.control.scope import scope_of
from plat.daemon.functions import Functions
from plat.daemon.journal import Journal
from plat.daemon.slo.rules import slo_rules
from plat.daemon.slo.sli import slo_report
from plat.daemon.store import FunctionRecord, Store
from plat.errors import NotFoundError, no_function
from plat.slo import BUDGET_WINDOW, EXAMPLE, RulesAnswer, Slo, SloAnswer
from plat.tenancy import tenant_of

log = logging.getLogger(__name__)


class NoSlo(NotFoundError):
    code = "no_slo"


def slo_of(record: FunctionRecord) -> Slo | None:
    """The SLO of a stored function; None without one (or with one this daemon
    cannot read, which is logged)."""
    data = record.manifest.get("slo")
    if data is None:
        return None
    try:
        return Slo.model_validate(data)
    except ValidationError as exc:
        log.warning("the stored slo of %s is not valid, ignored: %s", record.name, exc)
        return None


def slo_routes(functions: Functions, store: Store, journal: Journal) -> list[web.RouteDef]:
    async def in_scope(request: web.Request) -> list[tuple[str, Slo]]:
        """(key, SLO) of the functions asked for, sorted by key."""
        scope = scope_of(request)
        named = request.query.get("function")
        if named:
            key = scope.key(named)
            try:
                record = await functions.record(key)
            except NotFoundError:
                raise no_function(named) from None  # as the caller named it, not its key
            slo = slo_of(record)
            if slo is None:
                raise NoSlo(
                    f"function {named!r} has no SLO",
                    hint=f"add one to its plat.yaml and deploy it again, {EXAMPLE}",
                )
            return [(key, slo)]
        found = []
        for record in await store.list_functions():
            if scope.sees(tenant_of(record.name)) and (slo := slo_of(record)) is not None:
                found.append((record.name, slo))
        return sorted(found, key=lambda item: item[0])

    async def report(request: web.Request) -> web.Response:
        slos = await in_scope(request)
        await journal.flush()
        retention = journal.retention
        answer: SloAnswer = {
            "functions": [],
            "invocation_records": retention.invocations,
            "invocation_age": retention.invocation_age,
        }
        for key, slo in slos:
            now = time.time()
            records = await store.query_invocations(now - BUDGET_WINDOW.seconds, key)
            # Up to invocation_records rows per function: counted off the loop, which
            # the gateway shares.
            answer["functions"].append(
                await asyncio.to_thread(slo_report, key, slo, records, now=now, retention=retention)
            )
        return web.json_response(answer)

    async def rules(request: web.Request) -> web.Response:
        generated = slo_rules(await in_scope(request))
        text = generated.to_yaml()
        if request.query.get("format") == "json":
            answer: RulesAnswer = {
                "yaml": text,
                "functions": len(generated.groups),
                "rules": generated.count,
                "notes": generated.notes,
            }
            return web.json_response(answer)
        return web.Response(text=text, content_type="application/yaml")

    return [web.get("/v1/slo", report), web.get("/v1/slo/rules", rules)]
