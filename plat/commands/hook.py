"""``plat hook add|ls|rm|deliveries``: git webhooks that build and deploy a function.

A push to the hook's branch deploys the function; a push to another branch (or
an opened pull/merge request) deploys a preview, ``NAME--<branch>``, removed
when the branch goes, the request closes, or its TTL passes.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any
from urllib.parse import quote

import typer

hook_app = typer.Typer(
    help="Git webhooks: a push builds and deploys; other branches get preview URLs.",
    no_args_is_help=True,
)


def _repo(repo: str, remote: bool) -> str:
    """A local folder named relatively becomes absolute (the daemon runs elsewhere)."""
    if not remote and "://" not in repo and os.path.isdir(repo):
        return os.path.abspath(repo)
    return repo


def _q(text: str) -> str:
    return quote(text, safe="")


@hook_app.command("add")
def add(
    name: str = typer.Argument(..., help="The function the hook deploys."),
    repo: str = typer.Option(..., "--repo", help="The git URL (or a path on the daemon's host)."),
    branch: str = typer.Option("main", "--branch", help="Pushes to this branch deploy NAME."),
    path: str = typer.Option("", "--path", help="The function's folder in the repository."),
    previews: bool = typer.Option(
        True, "--previews/--no-previews", help="Deploy other branches as NAME--<branch>."
    ),
    preview_ttl: str = typer.Option(
        "72h", "--preview-ttl", help="A preview goes this long after its last push."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Add a webhook; prints its URL and secret (shown once) for the git server."""
    from plat.connect import connect
    from plat.console import out
    from plat.units import parse_duration

    try:
        parse_duration(preview_ttl)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--preview-ttl") from None
    client = connect()
    body = {
        "function": name,
        "repo": _repo(repo, client.remote),
        "branch": branch,
        "path": path,
        "previews": previews,
        "preview_ttl": preview_ttl,
    }
    hook: dict[str, Any] = client.request("POST", "/v1/hooks", body)
    if as_json:
        out.print_json(json.dumps(hook))
        return
    where = f"{hook['repo']}" + (f" ({hook['path']})" if hook["path"] else "")
    out.print(f"[green]✓[/green] hook [bold]{hook['id']}[/bold] deploys {name} from {where}")
    out.print(f"  pushes to {hook['branch']} deploy {name}", highlight=False)
    if hook["previews"]:
        ttl = _hours(hook["preview_ttl"])
        out.print(f"  other branches and pull requests deploy {name}--<branch> (for {ttl})")
    out.print(f"  [dim]URL[/dim]     {hook['url']}", soft_wrap=True)
    out.print(f"  [dim]secret[/dim]  {hook['secret']}", soft_wrap=True, highlight=False)
    out.print(
        "  [yellow]the secret is shown once:[/yellow] give it to the git server "
        "(content type application/json); docs/hooks.md shows how"
    )


def _hours(seconds: float) -> str:
    from plat.commands.traces import age

    return age(seconds)


@hook_app.command("ls")
def ls(as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts.")) -> None:
    """List the hooks: function, repository, branch, previews, last delivery."""
    from rich.table import Table

    from plat.connect import connect
    from plat.console import err, out

    hooks: list[dict[str, Any]] = connect().request("GET", "/v1/hooks")
    if as_json:
        out.print_json(json.dumps(hooks))
        return
    if not hooks:
        err.print("no hooks yet: `plat hook add NAME --repo URL`")
        return
    tenants = any(h["tenant"] != "default" for h in hooks)
    table = Table(box=None, header_style="bold")
    cols = ["ID", "FUNCTION", "REPO", "BRANCH", "PREVIEWS", "LAST DELIVERY"]
    for col in ("TENANT", *cols) if tenants else cols:
        table.add_column(col)
    for h in hooks:
        table.add_row(
            *([h["tenant"]] if tenants else []),
            h["id"],
            h["function"],
            h["repo"] + (f" ({h['path']})" if h["path"] else ""),
            h["branch"],
            f"yes, {_hours(h['preview_ttl'])}" if h["previews"] else "no",
            h.get("last_state") or "-",
        )
    out.print(table)


@hook_app.command("rm")
def rm(key: str = typer.Argument(..., help="The hook's id, or its function's name.")) -> None:
    """Remove a hook and the previews it made (the function itself stays)."""
    from plat.connect import connect
    from plat.console import out

    data: dict[str, Any] = connect().request("DELETE", f"/v1/hooks/{_q(key)}")
    out.print(f"[green]✓[/green] removed hook {data['removed']} of {data['function']}")
    if data.get("previews_removed"):
        out.print(f"  and its previews: {', '.join(data['previews_removed'])}")


@hook_app.command("deliveries")
def deliveries(
    key: str = typer.Argument(..., help="The hook's id, or its function's name."),
    log: str | None = typer.Option(
        None, "--log", help="Print this delivery's log (its number or the provider's id)."
    ),
    limit: int = typer.Option(50, "--limit", min=1, max=500, help="How many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """The hook's deliveries: event, branch, commit, state, URL, duration, error."""
    from plat.connect import connect
    from plat.console import err, out

    client = connect()
    base = f"/v1/hooks/{_q(key)}/deliveries"
    if log is not None:
        one: dict[str, Any] = client.request("GET", f"{base}/{_q(log)}")
        if as_json:
            out.print_json(json.dumps(one))
            return
        out.print(_summary(one), highlight=False)
        if one["log"]:
            out.print(one["log"], markup=False, highlight=False, soft_wrap=True)
        return
    items: list[dict[str, Any]] = client.request("GET", f"{base}?limit={limit}")
    if as_json:
        out.print_json(json.dumps(items))
        return
    if not items:
        err.print("no deliveries yet: push to the repository (or redeliver from the git server)")
        return
    out.print(_table(items))


def _summary(d: dict[str, Any]) -> str:
    commit = (d.get("commit") or "")[:12] or "-"
    text = f"#{d['seq']} {d['state']}: {d['event']} {d.get('branch') or ''} {commit}"
    if d.get("url"):
        text += f" -> {d['url']}"
    if d.get("error"):
        text += f"\n  {d['error']}"
    return text


def _table(items: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    from plat.commands.traces import age
    from plat.units import format_duration

    table = Table(box=None, header_style="bold")
    for col in ("#", "ID", "PROVIDER", "EVENT", "BRANCH", "COMMIT", "STATE", "URL", "TOOK", "AGE"):
        table.add_column(col)
    table.add_column("ERROR", overflow="fold")
    for d in items:
        took = d.get("duration")
        table.add_row(
            str(d["seq"]),
            d["id"][:20],
            d["provider"],
            d["event"],
            d.get("branch") or "-",
            (d.get("commit") or "-")[:12],
            d["state"],
            d.get("url") or "-",
            format_duration(took) if took is not None else "-",
            age(time.time() - d["received_at"]),
            d.get("error") or "",
        )
    return table


def register(app: typer.Typer) -> None:
    app.add_typer(hook_app, name="hook")
