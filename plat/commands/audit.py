"""``plat audit``: who changed what, from where; ``verify`` checks the hash chain,
``export`` writes every record as a JSON line (for a SIEM)."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import typer

from plat.errors import PlatError

audit_app = typer.Typer(
    help="The audit log: every change made through the daemon, hash-chained.",
    invoke_without_command=True,
)

COLUMNS = ("TIME", "ACTOR", "ORIGIN", "ACTION", "TARGET", "TENANT", "OUTCOME")


def _query(**values: str | int | None) -> str:
    query = {k: str(v) for k, v in values.items() if v not in (None, "")}
    return f"?{urlencode(query)}" if query else ""


def _when(stamp: str) -> str:
    """A record's UTC time, shown in local time."""
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    return moment.astimezone().strftime("%m-%d %H:%M:%S")


def _params(params: Any) -> str:
    if not isinstance(params, dict) or not params:
        return ""
    return " ".join(f"{k}={json.dumps(v)}" for k, v in params.items())


@audit_app.callback()
def audit(
    ctx: typer.Context,
    since: str | None = typer.Option(
        None, "--since", help="Only records since: a duration (30m, 2h, 7d) or an ISO time."
    ),
    actor: str | None = typer.Option(
        None, "--actor", help="Only this actor: admin, tenant:NAME, hook:ID, anonymous."
    ),
    action: str | None = typer.Option(
        None, "--action", help="Only this action (function.deploy), or a prefix: 'function.*'."
    ),
    limit: int = typer.Option(100, "--limit", "-n", help="The newest N records (at most 10000)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """List the newest audit records, oldest first.

    A tenant's token sees its own tenant's records; the admin sees every tenant's
    (or one: `plat --tenant NAME audit`).
    """
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table
    from rich.text import Text

    from plat.connect import connect
    from plat.console import err, out

    path = "/v1/audit" + _query(since=since, actor=actor, action=action, limit=limit)
    records: list[dict[str, Any]] = connect().request("GET", path)["records"]
    if as_json:
        out.print_json(json.dumps(records))
        return
    if not records:
        err.print("no audit records" + (" match" if since or actor or action else " yet"))
        return
    table = Table(box=None, header_style="bold")
    for col in COLUMNS:
        table.add_column(col, no_wrap=col in ("TIME", "ACTION", "OUTCOME"))
    # Parameters are the longest cell: at 80 columns they get a third of the line
    # (folded), and the short columns give way, instead of a sliver of 8.
    table.add_column("PARAMS", overflow="fold", min_width=28, ratio=1)
    for r in records:
        outcome = Text(r["outcome"], style="" if r["outcome"] == "ok" else "red")
        # Text, not markup: a target or a path an attacker chose is shown as it is.
        cells = [Text(str(r.get(k, ""))) for k in ("actor", "origin", "action", "target")]
        table.add_row(
            Text(_when(r["time"])), *cells, Text(r["tenant"]), outcome, Text(_params(r["params"]))
        )
    out.print(table)


@audit_app.command("verify")
def verify(as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts.")) -> None:
    """Check the hash chain: exit 0 when every record is as written, 1 naming the
    first record that was changed, deleted or moved."""
    from plat.connect import connect
    from plat.console import out

    client = connect()
    verdict: dict[str, Any] = client.request("GET", "/v1/audit/verify", timeout=600)
    if as_json:
        out.print_json(json.dumps(verdict))
        if not verdict["ok"]:
            raise typer.Exit(1)
        return
    if verdict["ok"]:
        span = f" (records {verdict['first']} to {verdict['last']})" if verdict["records"] else ""
        out.print(f"{verdict['records']} records verified{span}; head {verdict['head']}")
        return
    problems = verdict["problems"]
    more = len(problems) - 1
    raise PlatError(
        f"the audit log does not verify: {problems[0]['message']}",
        hint=(f"{more} more problem(s): `plat audit verify --json` lists them; " if more else "")
        + "compare with an export kept elsewhere (`plat audit export`)",
    )


@audit_app.command("export")
def export(
    since: str | None = typer.Option(None, "--since", help="Only records since (30m, 7d, ISO)."),
    actor: str | None = typer.Option(None, "--actor", help="Only this actor."),
    action: str | None = typer.Option(None, "--action", help="Only this action (or prefix.*)."),
) -> None:
    """Write every record as one JSON line, oldest first (e.g. `> audit.jsonl` for a SIEM)."""
    from plat.connect import connect

    path = "/v1/audit/export" + _query(since=since, actor=actor, action=action)
    for record in connect().stream("GET", path):
        sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
