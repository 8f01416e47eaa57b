"""A client of a running daemon, started on demand: what every command that talks to
the daemon begins with."""

from __future__ import annotations

import os
from collections.abc import Mapping

from plat.client import DaemonClient
from plat.console import err
from plat.errors import PlatError
from plat.paths import Home


def connect(
    home: Home | None = None,
    env: Mapping[str, str] | None = None,
    backend: str | None = None,
) -> DaemonClient:
    """A client of a running daemon, starting the daemon first when none answers.

    ``backend`` (container | process) starts the daemon with that backend (and
    remembers it for this home), and raises PlatError when a running daemon uses
    another one. Without it, a start uses the backend remembered for this home.
    Many processes may call this at once: one daemon starts and all use it.
    """
    from plat.daemon.lifecycle import start_detached

    env = dict(os.environ if env is None else env)
    home = home or Home.from_env(env)
    client = DaemonClient(home)
    if not client.ping():
        with err.status("starting the plat daemon...", spinner="dots"):
            started = start_detached(home, env, backend=backend)
        status = client.request("GET", "/v1/status")
        if started.started:
            err.print(
                f"[dim]started the plat daemon (pid {started.pid}), "
                f"gateway {status['gateway_url']}[/dim]"
            )
            if status.get("backend_warning"):
                err.print(f"[yellow]warning:[/yellow] {status['backend_warning']}")
    if backend is not None:
        running = client.request("GET", "/v1/status")["backend"]
        if running != backend:
            raise PlatError(
                f"the running daemon uses the {running} backend, not {backend}",
                hint=f"`plat daemon stop`, then `plat daemon start --backend {backend}`",
            )
    return client
