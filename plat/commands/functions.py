"""``plat ls``, ``plat describe NAME``, ``plat rm NAME``."""

from __future__ import annotations

import json
import time
from typing import Any

import typer


def _ago(ts: float | None) -> str:
    from plat.units import format_duration

    if not ts:
        return "-"
    return format_duration(max(0.0, time.time() - ts)) + " ago"


def _next_run(ts: float | None) -> str:
    """When a scheduled function is called next: ``in 4m (12:05 UTC)``."""
    from datetime import UTC, datetime

    from plat.commands.traces import age

    if not ts:
        return "-"
    return f"in {age(ts - time.time())} ({datetime.fromtimestamp(ts, UTC):%H:%M} UTC)"


def _preview(mark: dict[str, Any] | None) -> str:
    """A git hook's preview: its branch, and when it expires unless pushed again."""
    from plat.commands.traces import age

    if not mark:
        return "-"
    left = mark["expires_at"] - time.time()
    return (
        f"{mark['branch']} (expires in {age(left)})" if left > 0 else f"{mark['branch']} (expired)"
    )


def _secret_names(secrets: list[Any]) -> str:
    """Names only: a vault secret is {name, vault}, a stored one its name."""
    return ", ".join(str(s.get("name") if isinstance(s, dict) else s) for s in secrets)


def ls(as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts.")) -> None:
    """List deployed functions."""
    from rich.table import Table

    from plat.connect import connect
    from plat.console import err, out
    from plat.tenancy import DEFAULT_TENANT

    items: list[dict[str, Any]] = connect().request("GET", "/v1/functions")
    if as_json:
        out.print_json(json.dumps(items))
        return
    if not items:
        err.print("no functions yet: `plat init hello && cd hello && plat deploy`")
        return
    # One column more only where there is more than the default tenant to tell apart.
    tenants = any(fn.get("tenant", DEFAULT_TENANT) != DEFAULT_TENANT for fn in items)
    table = Table(box=None, header_style="bold")
    scheduled = any(fn.get("next_run") for fn in items)
    previews = any(fn.get("preview") for fn in items)
    cols = ["NAME", "RUNTIME", "VERSION", "READY", "AUTH", "UPDATED", "URL"]
    cols += ["NEXT RUN"] if scheduled else []
    cols += ["PREVIEW"] if previews else []
    for col in ("TENANT", *cols) if tenants else cols:
        table.add_column(col)
    for fn in items:
        table.add_row(
            *([str(fn.get("tenant", DEFAULT_TENANT))] if tenants else []),
            fn["name"],
            str(fn.get("runtime") or "-"),
            str(fn.get("version") or "-"),
            f"{fn.get('instances', 0)}/{fn.get('desired', '-')}",
            str(fn.get("auth", "-")),
            _ago(fn.get("updated_at")),
            str(fn.get("url") or "-"),
            *([_next_run(fn.get("next_run"))] if scheduled else []),
            *([_preview(fn.get("preview"))] if previews else []),
        )
    out.print(table)


def _pushed(client: Any, name: str, version: str | None) -> str | None:
    """The registry reference `plat push` gave the current version, if any."""
    from plat.errors import PlatError

    try:
        pushes: list[dict[str, Any]] = client.request("GET", f"/v1/functions/{name}/pushes")
    except PlatError:  # a daemon without the route
        return None
    return next((str(p["reference"]) for p in pushes if p.get("version") == version), None)


def describe(
    name: str = typer.Argument(..., help="The function."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Show a function's manifest, versions and instances."""
    from rich.table import Table

    from plat.connect import connect
    from plat.console import out
    from plat.units import format_duration

    client = connect()
    fn: dict[str, Any] = client.request("GET", f"/v1/functions/{name}")
    if as_json:
        out.print_json(json.dumps(fn))
        return
    pushed = _pushed(client, name, fn.get("version"))
    m = fn["manifest"]
    out.print(f"[bold]{fn['name']}[/bold]  {fn.get('url') or ''}")
    rows = [
        *([("tenant", fn["tenant"])] if fn.get("tenant", "default") != "default" else []),
        ("runtime", m["runtime"]),
        ("version", fn.get("version") or "-"),
        ("image", fn.get("image") or "-"),
        ("source", fn["source_dir"]),
        ("auth", m["auth"]),
        ("timeout", f"{m['timeout']:g} s"),
        (
            "resources",
            f"memory {m['resources']['memory'] // 1024**2}Mi, cpu {m['resources']['cpu']}"
            f", pids {m['resources']['pids']}",
        ),
        (
            "scale",
            f"min {m['scale']['min']}, max {m['scale']['max']}, "
            f"concurrency {m['scale']['concurrency']}",
        ),
        ("env", ", ".join(f"{k}={v}" for k, v in m["env"].items()) or "-"),
        *([("secrets", _secret_names(m["secrets"]))] if m.get("secrets") else []),
        *([("pushed", pushed)] if pushed else []),
        ("updated", _ago(fn.get("updated_at"))),
    ]
    for key, value in rows:
        out.print(f"  [dim]{key:<10}[/dim] {value}")
    instances = Table(title="instances", box=None, header_style="bold", title_justify="left")
    for col in ("ID", "VERSION", "STATE", "ADDRESS", "READY IN", "STARTED"):
        instances.add_column(col)
    for inst in fn["instance_list"]:
        ready = inst.get("ready_seconds")
        instances.add_row(
            inst["id"],
            inst["version"],
            inst["state"],
            inst["address"],
            format_duration(ready) if ready else "-",
            _ago(inst["started_at"]),
        )
    out.print(instances)
    versions = Table(title="versions", box=None, header_style="bold", title_justify="left")
    for col in ("VERSION", "STATUS", "BUILDER", "BUILD TIME", "CREATED"):
        versions.add_column(col)
    for v in fn["versions"][:10]:
        seconds = v.get("build_seconds")
        versions.add_row(
            v["version"],
            v["status"],
            v.get("builder") or "-",
            format_duration(seconds) if seconds else "-",
            _ago(v["created_at"]),
        )
    out.print(versions)


def rm(
    name: str = typer.Argument(..., help="The function to remove."),
    target: str = typer.Option(
        "local", "--target", help="local: this machine's daemon. k8s: a kube context's cluster."
    ),
    context: str | None = typer.Option(None, "--context", help="k8s: the kube context."),
    namespace: str | None = typer.Option(
        None, "--namespace", "-n", help="k8s: default: the tenant's name, else the context's."
    ),
) -> None:
    """Remove a function: stop its instances and delete its metadata.

    With --target k8s, delete what `plat deploy --target k8s` applied (found by the
    label plat.function=NAME) from the cluster instead.
    """
    if target not in ("local", "k8s"):
        raise typer.BadParameter(f"{target!r}: use local or k8s", param_hint="--target")
    if target == "k8s":
        from plat.commands.k8s import remove_from_cluster

        remove_from_cluster(name, context=context, namespace=namespace)
        return
    if context is not None or namespace is not None:
        raise typer.BadParameter("--context and --namespace need --target k8s")
    from plat.connect import connect
    from plat.console import out

    connect().request("DELETE", f"/v1/functions/{name}")
    out.print(f"[green]✓[/green] removed {name}")


def register(app: typer.Typer) -> None:
    app.command()(ls)
    app.command()(describe)
    app.command()(rm)
