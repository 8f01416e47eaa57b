"""``plat daemon run|start|stop|status``: the background daemon's lifecycle."""

from __future__ import annotations

import json
import os

import typer

from plat.errors import PlatError
from plat.paths import Home

daemon_app = typer.Typer(
    help="Run, start, stop and inspect the plat daemon (one per PLAT_HOME).",
    no_args_is_help=True,
)

PORT_HELP = "Gateway port on 127.0.0.1 (default: PLAT_GATEWAY_PORT or 8080)."
BACKEND_HELP = (
    "Where instances run: container, process (no isolation) or auto "
    "(containers when an engine answers; default: PLAT_BACKEND or auto)."
)


def _backend(value: str | None) -> str | None:
    if value is not None and value not in ("auto", "container", "process"):
        raise PlatError(f"unknown backend {value!r}", hint="use auto, container or process")
    return value


@daemon_app.command()
def run(
    port: int | None = typer.Option(None, "--port", "-p", help=PORT_HELP),
    backend: str | None = typer.Option(None, "--backend", "-b", help=BACKEND_HELP),
) -> None:
    """Run the daemon in the foreground (Ctrl-C or SIGTERM stops it and its instances)."""
    from plat.daemon import lifecycle

    overrides = {"gateway_port": port, "backend": _backend(backend)}
    lifecycle.run(Home.from_env(), os.environ, overrides)


@daemon_app.command()
def start(
    port: int | None = typer.Option(None, "--port", "-p", help=PORT_HELP),
    backend: str | None = typer.Option(None, "--backend", "-b", help=BACKEND_HELP),
) -> None:
    """Start the daemon in the background (no-op when it is running).

    Without --backend it uses the backend last given with --backend for this home.
    """
    from plat.client import DaemonClient
    from plat.console import err
    from plat.daemon import lifecycle

    home = Home.from_env()
    client = DaemonClient(home)
    if not client.ping():
        with err.status("starting the plat daemon...", spinner="dots"):
            lifecycle.start_detached(home, os.environ, port, backend=_backend(backend))
    _print_status(client.request("GET", "/v1/status"))


@daemon_app.command()
def stop(
    timeout: float = typer.Option(
        40.0, "--timeout", "-t", min=0, help="Seconds to wait for a clean stop before killing it."
    ),
) -> None:
    """Stop the daemon and remove its instances; functions stay in the store.

    A daemon that does not stop within --timeout is killed, and any container of
    it still there is removed.
    """
    from plat.console import out
    from plat.daemon import lifecycle

    home = Home.from_env()
    result = lifecycle.stop(home, timeout)
    if result.pid is None:
        out.print("the plat daemon is not running")
    elif result.forced:
        out.print(
            f"the plat daemon (pid {result.pid}) did not stop within {timeout:g} s: killed it"
        )
    else:
        out.print(f"stopped the plat daemon (pid {result.pid})")
    if result.removed:
        out.print(
            f"removed {len(result.removed)} container(s) it left behind: "
            + ", ".join(result.removed)
        )
    if result.remaining:
        raise PlatError(
            "these containers of the daemon are still there: "
            + ", ".join(result.remaining)
            + (f" ({result.problem})" if result.problem else ""),
            hint=f"remove them with {lifecycle.cleanup_hint(home)}",
        )


@daemon_app.command()
def status(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show pid, version, uptime, gateway URL, backend and engine. Exit 1 when stopped."""
    from plat.client import DaemonClient
    from plat.console import out

    home = Home.from_env()
    client = DaemonClient(home)
    if not client.ping():
        if as_json:
            out.print_json(json.dumps({"running": False, "home": str(home.root)}))
        else:
            out.print(f"the plat daemon is not running (home {home.root})")
        raise typer.Exit(1)
    data = client.request("GET", "/v1/status")
    if as_json:
        out.print_json(json.dumps({"running": True, **data}))
    else:
        _print_status(data)


def _engine_text(engine: dict[str, object]) -> str:
    if engine.get("name") == "none":
        return "none (instances are local processes)"
    text = f"{engine.get('name')} {engine.get('version')} at {engine.get('endpoint')}"
    return text + (" (started by plat)" if engine.get("started_by_plat") else "")


def _pool_text(pool: object) -> str:
    if not isinstance(pool, dict) or not pool.get("size"):
        return "off"
    pools = pool.get("pools") or []
    parts = [
        f"{p['key']}: {p['ready']} ready, {p['starting']} starting, {p['claimed']} claimed"
        for p in pools
        if isinstance(p, dict)
    ]
    return f"{pool['size']} per runtime in use" + (f" ({'; '.join(parts)})" if parts else "")


def _print_status(data: dict[str, object]) -> None:
    from plat.console import out
    from plat.units import format_duration

    engine = data.get("engine") or {}
    assert isinstance(engine, dict)
    rows = [
        ("pid", data["pid"]),
        ("version", data["version"]),
        ("uptime", format_duration(float(data["uptime"]))),  # type: ignore[arg-type]
        ("gateway", data["gateway_url"]),
        ("backend", data["backend"]),
        ("engine", _engine_text(engine)),
        ("builder", data["builder"]),
        ("functions", data["functions"]),
        ("pool", _pool_text(data.get("pool"))),
        ("home", data["home"]),
    ]
    out.print("[green]●[/green] plat daemon running")
    if data.get("backend_warning"):
        out.print(f"[yellow]warning:[/yellow] {data['backend_warning']}")
    for key, value in rows:
        out.print(f"  [dim]{key:<10}[/dim] {value}")


def register(app: typer.Typer) -> None:
    app.add_typer(daemon_app, name="daemon")
