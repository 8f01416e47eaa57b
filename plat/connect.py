"""Which daemon a command talks to, and as whom: what every command that talks to the
daemon begins with.

Without ``PLAT_URL`` it is the local daemon (started on demand) through its unix
socket, as the admin. With ``PLAT_URL`` (and ``PLAT_TOKEN``) it is the daemon
serving that URL, as the token's owner: nothing is started and no local home is
needed. ``PLAT_TENANT`` picks the tenant acted for either way. The global options
``--url``, ``--token`` and ``--tenant`` set the same variables (plat/cli.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from plat.client import DaemonClient, Endpoint
from plat.console import err
from plat.errors import PlatError
from plat.paths import Home

URL_VAR = "PLAT_URL"
TOKEN_VAR = "PLAT_TOKEN"
TENANT_VAR = "PLAT_TENANT"
# Who the CLI is, not how the daemon runs: never handed to a daemon it starts.
TARGET_VARS = (URL_VAR, TOKEN_VAR, TENANT_VAR)


@dataclass(frozen=True)
class Target:
    """The daemon and identity a command uses, read from the environment."""

    url: str | None
    token: str | None
    tenant: str | None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Target:
        """Raises PlatError when PLAT_URL is set without PLAT_TOKEN, or the token
        holds what no token holds (spaces, control characters)."""
        url = env.get(URL_VAR, "").strip() or None
        token = env.get(TOKEN_VAR, "").strip() or None
        tenant = env.get(TENANT_VAR, "").strip() or None
        if url is not None and token is None:
            raise PlatError(
                f"PLAT_URL is set ({url}) but PLAT_TOKEN is not: a daemon at a URL needs a token",
                hint="export PLAT_TOKEN=<token>: `plat tenant create NAME` prints a tenant's, "
                "`plat auth token` the admin's (on the daemon's machine); "
                "or unset PLAT_URL to use the local daemon",
            )
        if token is not None and not all(33 <= ord(c) < 127 for c in token):
            raise PlatError(
                "PLAT_TOKEN holds spaces or characters a token never has",
                hint="copy the token exactly as plat printed it",
            )
        return cls(url, token, tenant)


def connect(
    home: Home | None = None,
    env: Mapping[str, str] | None = None,
    backend: str | None = None,
) -> DaemonClient:
    """A client of the daemon at PLAT_URL, or of the local one, starting it first
    when none answers.

    ``backend`` (container | process) starts the daemon with that backend (and
    remembers it for this home), and raises PlatError when a running daemon uses
    another one, or when the daemon is remote. Without it, a start uses the backend
    remembered for this home. Many processes may call this at once: one daemon
    starts and all use it.
    """
    env = dict(os.environ if env is None else env)
    target = Target.from_env(env)
    if target.url is not None:
        if backend is not None:
            raise PlatError(
                f"--backend chooses how the local daemon runs; PLAT_URL points to {target.url}",
                hint="drop --backend, or unset PLAT_URL to use the local daemon",
            )
        return DaemonClient(url=target.url, token=target.token, tenant=target.tenant)

    home = home or Home.from_env(env)
    client = DaemonClient(home, tenant=target.tenant)
    if not client.ping():
        # Imported only here: ~40 ms of every command's start when a daemon runs.
        from plat.daemon.lifecycle import start_detached

        daemon_env = {k: v for k, v in env.items() if k not in TARGET_VARS}
        with err.status("starting the plat daemon...", spinner="dots"):
            started = start_detached(home, daemon_env, backend=backend)
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


def running_local(env: Mapping[str, str] | None = None) -> DaemonClient | None:
    """A client of the local daemon when one answers now and PLAT_URL is not set;
    None otherwise (nothing is started)."""
    env = dict(os.environ if env is None else env)
    target = Target.from_env(env)
    if target.url is not None:
        return None
    client = DaemonClient(Home.from_env(env), tenant=target.tenant)
    return client if client.ping() else None


@dataclass(frozen=True)
class Gateway:
    """Where and as whom the CLI calls functions: the gateway's base URL and the
    Authorization header a call carries (the admin's basic credentials locally,
    the bearer token remotely)."""

    endpoint: Endpoint
    authorization: str

    def function_path(self, name: str, tenant: str | None) -> str:
        """The path of ``/function/<name>[.<tenant>]`` on this gateway (below its prefix)."""
        return self.endpoint.prefix + _function(name, tenant)

    def function_url(self, name: str, tenant: str | None) -> str:
        return self.endpoint.url + _function(name, tenant)


def _function(name: str, tenant: str | None) -> str:
    from plat.tenancy import function_key

    key = function_key(name, tenant) if tenant else name
    return f"/function/{quote(key, safe='.')}"


def gateway(client: DaemonClient) -> Gateway:
    """How ``client``'s caller reaches functions: PLAT_URL itself (the gateway serves
    the API under /api) with the token, or the local daemon's gateway as the admin.

    Raises PlatError when the local credentials cannot be read."""
    from plat.credentials import basic_header, read_password

    if client.endpoint is not None:
        return Gateway(client.endpoint, f"Bearer {client.token}")
    status = client.request("GET", "/v1/status")
    endpoint = Endpoint.parse(str(status["gateway_url"]), "the daemon's gateway URL")
    return Gateway(endpoint, basic_header(read_password(client.home or Home.from_env())))


def tenant_of_function(client: DaemonClient, name: str) -> str | None:
    """The tenant whose ``name`` a call reaches: the one chosen (--tenant,
    PLAT_TENANT); else, remotely, the one the daemon resolves for this token
    (a tenant's token means its own tenant); else None (the default tenant)."""
    if client.tenant or not client.remote:
        return client.tenant
    fn = client.request("GET", f"/v1/functions/{quote(name, safe='')}")
    tenant = fn.get("tenant") if isinstance(fn, dict) else None
    return str(tenant) if tenant else None
