"""The control API: one set of routes behind two doors.

The unix socket serves ``/v1/...`` to the local user, the admin; the gateway
port serves the same routes under ``/api/v1/...`` to callers with a token (see
:mod:`.scope`). Each group of routes is given what it uses (the functions
service, the store, the journal, the tenants, the secrets), never the daemon.
Errors become JSON bodies with the PlatError's status; nothing a request does
can crash the daemon.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from plat.api import Status
from plat.daemon.audit import AuditLog
from plat.daemon.control.audit import audit_middleware, audit_routes
from plat.daemon.control.calls import CallServiceGetter, call_routes
from plat.daemon.control.errors import PROTOCOL_LOG, error_middleware
from plat.daemon.control.functions import function_routes
from plat.daemon.control.hooks import hook_routes
from plat.daemon.control.observe import observe_routes, percentile, summarize
from plat.daemon.control.push import push_routes
from plat.daemon.control.scope import http_scope, scope_of, socket_scope
from plat.daemon.control.secrets import SecretsStore, secret_routes
from plat.daemon.control.slo import slo_routes
from plat.daemon.control.tenants import OnRemoved, tenant_routes
from plat.daemon.control.traces import trace_routes
from plat.daemon.drivers.container.pushes import PushRecords
from plat.daemon.functions import Functions
from plat.daemon.hooks.service import HookService
from plat.daemon.journal import Journal
from plat.daemon.store import Store
from plat.daemon.tasks import TaskGroup
from plat.daemon.tenants import Tenants

__all__ = [
    "API_PREFIX",
    "Services",
    "api_app",
    "control_routes",
    "control_runner",
    "percentile",
    "summarize",
]

API_PREFIX = "/api"


@dataclass
class Services:
    """What the control API's routes stand on."""

    functions: Functions
    store: Store
    journal: Journal
    tasks: TaskGroup
    tenants: Tenants
    uploads: Path
    secrets: SecretsStore | None = None
    on_tenant_removed: OnRemoved | None = None
    tenant_warning: str | None = None
    # The queued-calls service is created after the routes (it needs the gateway's server).
    calls: CallServiceGetter | None = None
    hooks: HookService | None = None
    audit: AuditLog | None = None


def daemon_routes(status: Callable[[], Status], shutdown: Callable[[], None]) -> list[web.RouteDef]:
    async def get_status(request: web.Request) -> web.Response:
        return web.json_response(status())

    async def post_shutdown(request: web.Request) -> web.Response:
        scope_of(request).require_admin("stopping the daemon")
        shutdown()
        return web.json_response({"stopping": True})

    return [web.get("/v1/status", get_status), web.post("/v1/shutdown", post_shutdown)]


def control_routes(
    services: Services, *, status: Callable[[], Status], shutdown: Callable[[], None]
) -> list[web.RouteDef]:
    functions = services.functions
    routes = [
        *daemon_routes(status, shutdown),
        *function_routes(functions, services.tasks, services.uploads),
        *observe_routes(functions, services.store, services.journal),
        *slo_routes(functions, services.store, services.journal),
        *trace_routes(functions, services.store, services.journal),
        *call_routes(functions, services.store, services.calls),
        # What was pushed where: a file in the daemon's home (beside uploads/).
        *push_routes(
            functions, services.tasks, PushRecords(services.uploads.parent / "pushes.json")
        ),
        *tenant_routes(
            services.tenants, functions, services.on_tenant_removed, services.tenant_warning
        ),
    ]
    if services.secrets is not None:
        routes += secret_routes(services.secrets, functions, functions.deployer)
    if services.hooks is not None:
        routes += hook_routes(services.hooks)
    if services.audit is not None:
        routes += audit_routes(services.audit)
    return routes


def control_runner(
    routes: list[web.RouteDef], tenants: Tenants, audit: AuditLog | None = None
) -> web.AppRunner:
    """The control API's aiohttp runner, for the unix socket (the caller is the admin);
    ``audit``: where each change is recorded."""
    recording = [] if audit is None else [audit_middleware(audit, "socket")]
    app = web.Application(middlewares=[*recording, error_middleware, socket_scope(tenants)])
    app.add_routes(routes)
    return web.AppRunner(app, access_log=None, handle_signals=False, logger=PROTOCOL_LOG)


def api_app(
    routes: list[web.RouteDef], tenants: Tenants, admin_basic: str, audit: AuditLog | None = None
) -> web.Application:
    """The same routes for the gateway port, mounted at API_PREFIX: callers show a token."""
    recording = [] if audit is None else [audit_middleware(audit, "http")]
    scope = http_scope(tenants, admin_basic)
    app = web.Application(middlewares=[*recording, error_middleware, scope])
    app.add_routes(routes)
    return app
