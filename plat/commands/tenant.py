"""``plat tenant create|ls|rm|token``: tenants, their quotas and their tokens (admin only)."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any

import typer

from plat.errors import PlatError

if TYPE_CHECKING:
    from plat.client import DaemonClient

tenant_app = typer.Typer(
    help="Tenants: each has its own functions, secrets, quotas and token (admin only).",
    no_args_is_help=True,
)

NAME_HELP = "The tenant: 1 to 32 of a-z, 0-9 and '-'."


def _name(name: str) -> str:
    from plat.tenancy import DEFAULT_TENANT, valid_tenant

    if not valid_tenant(name):
        raise PlatError(
            f"{name!r} is not a tenant name",
            hint="1 to 32 of a-z, 0-9 and '-', starting and ending with a letter or digit",
        )
    if name == DEFAULT_TENANT:
        raise PlatError(f"{DEFAULT_TENANT!r} is the built-in tenant: it has no token or quotas")
    return name


def _size(size: object) -> str:
    """Bytes as 4Gi; None as '-'; 0 as 0; a text ("4Gi") as it is."""
    from plat.units import format_size

    if size is None:
        return "-"
    if not isinstance(size, int) or isinstance(size, bool):
        return str(size)
    return format_size(size) if size else "0"


def _use_line(client: DaemonClient, token: str) -> str:
    """How to act as the tenant: the URL this CLI reached, or the local gateway's."""
    if client.endpoint is not None:
        url = client.endpoint.url
    else:
        url = client.request("GET", "/v1/status")["gateway_url"]
    return f"PLAT_URL={url} PLAT_TOKEN={token} plat deploy"


def _show_token(client: DaemonClient, name: str, token: str) -> None:
    from plat.console import err, out

    out.print(f"  token: [bold]{token}[/bold]")
    err.print(
        f"[yellow]This token is shown only now:[/yellow] plat keeps only its hash. "
        f"Store it safely; `plat tenant token {name} --rotate` replaces it."
    )
    out.print(f"  use:   {_use_line(client, token)}")


@tenant_app.command()
def create(
    name: str = typer.Argument(..., help=NAME_HELP),
    max_instances: int | None = typer.Option(
        None, "--max-instances", help="Most instances the tenant's functions run at once."
    ),
    max_memory: str | None = typer.Option(
        None, "--max-memory", help="Most memory its instances may ask for in all, e.g. 4Gi."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (with the token)."),
) -> None:
    """Create a tenant and print its token (shown this once only)."""
    from plat.connect import connect
    from plat.console import out
    from plat.units import parse_size

    _name(name)
    if max_instances is not None and max_instances < 0:
        raise PlatError(f"--max-instances {max_instances}: must not be negative")
    memory: int | None = None
    if max_memory is not None:
        try:
            memory = parse_size(max_memory)
        except ValueError as exc:
            raise PlatError(f"--max-memory {max_memory!r}: {exc}") from None
    client = connect()
    body = {"name": name, "max_instances": max_instances, "max_memory": memory}
    data: dict[str, Any] = client.request("POST", "/v1/tenants", body)
    if as_json:
        out.print_json(json.dumps(data))
        return
    instances = data.get("max_instances")
    memory_limit = data.get("max_memory")
    out.print(
        f"[green]✓[/green] created tenant [bold]{data['name']}[/bold] "
        f"(instances: {'no limit' if instances is None else instances}, "
        f"memory: {'no limit' if memory_limit is None else _size(memory_limit)})"
    )
    _show_token(client, data["name"], data["token"])
    _warn(data)


def _warn(data: dict[str, Any]) -> None:
    """What the daemon says a tenant should know (its backend does not isolate tenants)."""
    from rich.markup import escape

    from plat.console import err

    if data.get("warning"):
        err.print(f"[yellow]warning:[/yellow] {escape(str(data['warning']))}")


def _ago(ts: float | None) -> str:
    from plat.units import format_duration

    return format_duration(max(0.0, time.time() - ts)) + " ago" if ts else "-"


@tenant_app.command("ls")
def ls(as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts.")) -> None:
    """List tenants: functions, running instances and memory against their quotas."""
    from rich.table import Table

    from plat.connect import connect
    from plat.console import err, out

    data: dict[str, Any] = connect().request("GET", "/v1/tenants")
    tenants: list[dict[str, Any]] = data["tenants"]
    if as_json:
        out.print_json(json.dumps(tenants))
        return
    _warn(data)
    if not tenants:
        err.print("no tenants yet: `plat tenant create acme`")
        return
    table = Table(box=None, header_style="bold")
    for col in ("NAME", "FUNCTIONS", "INSTANCES", "MEMORY", "CREATED"):
        table.add_column(col)
    for t in tenants:
        limit = t.get("max_instances")
        table.add_row(
            t["name"],
            str(t.get("functions", 0)),
            f"{t.get('instances', 0)}/{'-' if limit is None else limit}",
            f"{_size(t.get('memory') or 0)}/{_size(t.get('max_memory'))}",
            _ago(t.get("created_at")),
        )
    out.print(table)


@tenant_app.command("rm")
def rm(
    name: str = typer.Argument(..., help=NAME_HELP),
    force: bool = typer.Option(
        False, "--force", help="Remove its functions and secrets too (asks first)."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before removing functions."),
) -> None:
    """Remove a tenant; its token stops working at once.

    A tenant with functions is kept unless --force, which removes its functions and
    secrets too (after a confirmation, unless --yes).
    """
    from plat.connect import connect
    from plat.console import out

    _name(name)
    client = connect()
    if force and not yes:
        tenants = client.request("GET", "/v1/tenants")["tenants"]
        found = next((t for t in tenants if t["name"] == name), None)
        count = int(found.get("functions", 0)) if found else 0
        if count:
            if not sys.stdin.isatty():
                raise PlatError(
                    f"removing tenant {name} removes its {count} function(s) and its secrets",
                    hint="add --yes to confirm without a terminal",
                )
            if not typer.confirm(
                f"Remove tenant {name}, its {count} function(s) and its secrets?", default=False
            ):
                raise typer.Abort()
    try:
        client.request("DELETE", f"/v1/tenants/{name}" + ("?force=1" if force else ""))
    except PlatError as exc:
        if exc.code == "tenant_in_use" and not exc.hint:
            exc.hint = f"`plat tenant rm {name} --force` removes its functions and secrets too"
        raise
    out.print(f"[green]✓[/green] removed tenant {name}")


@tenant_app.command()
def token(
    name: str = typer.Argument(..., help=NAME_HELP),
    rotate: bool = typer.Option(
        False, "--rotate", help="Make a new token; the old one stops working at once."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (with the token)."),
) -> None:
    """Replace a tenant's token (--rotate); the old one stops working at once.

    Tokens are kept only as hashes: a lost token cannot be shown again, only replaced.
    """
    from plat.connect import connect
    from plat.console import out

    _name(name)
    if not rotate:
        raise PlatError(
            f"tokens are stored only as hashes: {name}'s token cannot be shown again",
            hint=f"`plat tenant token {name} --rotate` makes a new one "
            "(the old one stops working at once)",
        )
    client = connect()
    data: dict[str, Any] = client.request("POST", f"/v1/tenants/{name}/token")
    if as_json:
        out.print_json(json.dumps(data))
        return
    out.print(
        f"[green]✓[/green] new token for tenant [bold]{data['name']}[/bold]; "
        "the old one no longer works"
    )
    _show_token(client, data["name"], data["token"])


def register(app: typer.Typer) -> None:
    app.add_typer(tenant_app, name="tenant")
