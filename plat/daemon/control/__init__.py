"""The control API on the daemon's unix socket: what the CLI talks to.

Each group of routes is given what it uses (the functions service, the store, the
journal), never the daemon. Errors become JSON bodies with the PlatError's status;
nothing a request does can crash the daemon.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from plat.api import Status
from plat.daemon.control.errors import PROTOCOL_LOG, error_middleware
from plat.daemon.control.functions import function_routes
from plat.daemon.control.observe import observe_routes, percentile, summarize
from plat.daemon.functions import Functions
from plat.daemon.journal import Journal
from plat.daemon.store import Store
from plat.daemon.tasks import TaskGroup

__all__ = ["control_routes", "control_runner", "percentile", "summarize"]


def daemon_routes(status: Callable[[], Status], shutdown: Callable[[], None]) -> list[web.RouteDef]:
    async def get_status(request: web.Request) -> web.Response:
        return web.json_response(status())

    async def post_shutdown(request: web.Request) -> web.Response:
        shutdown()
        return web.json_response({"stopping": True})

    return [web.get("/v1/status", get_status), web.post("/v1/shutdown", post_shutdown)]


def control_routes(
    functions: Functions,
    store: Store,
    journal: Journal,
    tasks: TaskGroup,
    *,
    status: Callable[[], Status],
    shutdown: Callable[[], None],
) -> list[web.RouteDef]:
    return [
        *daemon_routes(status, shutdown),
        *function_routes(functions, tasks),
        *observe_routes(functions, store, journal),
    ]


def control_runner(routes: list[web.RouteDef]) -> web.AppRunner:
    """The control API's aiohttp runner, for the unix socket."""
    app = web.Application(middlewares=[error_middleware])
    app.add_routes(routes)
    return web.AppRunner(app, access_log=None, handle_signals=False, logger=PROTOCOL_LOG)
