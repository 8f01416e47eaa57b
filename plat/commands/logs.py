"""``plat logs NAME``: a function's stdout/stderr (every instance), or its build log."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

import typer

STREAM_STYLE = {"stdout": "", "stderr": "red", "plat": "cyan"}


def format_line(line: dict[str, Any]) -> str:
    """One log line for people: time, instance, call id, text (rich markup)."""
    from rich.markup import escape

    when = datetime.fromtimestamp(line["ts"]).strftime("%H:%M:%S.%f")[:-3]
    call = (line.get("call_id") or "-")[:12]
    style = STREAM_STYLE.get(line["stream"], "")
    text = escape(line["line"])
    if style:
        text = f"[{style}]{text}[/{style}]"
    return f"[dim]{when} {line['instance'][:8]} {call:<12}[/dim] {text}"


def logs(
    name: str = typer.Argument(..., help="The function."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines."),
    since: str | None = typer.Option(None, "--since", help="Only lines newer than e.g. 10m, 2h."),
    tail: int | None = typer.Option(None, "--tail", "-n", help="Only the last N lines."),
    instance: str | None = typer.Option(None, "--instance", help="Only this instance (id prefix)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
    build: bool = typer.Option(False, "--build", help="Show a build log instead."),
    version: str | None = typer.Argument(None, help="With --build: the version (default latest)."),
) -> None:
    """Show the stdout/stderr of every instance of NAME, across replacements and redeploys.

    Lines written while handling a call carry its X-Call-Id. `-f` follows live.
    """
    from urllib.parse import urlencode

    from plat.connect import connect
    from plat.console import out

    client = connect()
    if build:
        data = client.request("GET", f"/v1/functions/{name}/builds/{version or 'latest'}")
        if as_json:
            out.print_json(json.dumps(data))
        else:
            sys.stdout.write(data["log"] + ("\n" if data["log"] else ""))
        return
    query: dict[str, str] = {}
    if since:
        query["since"] = since
    if tail is not None:
        query["tail"] = str(tail)
    if instance:
        query["instance"] = instance
    if follow:
        query["follow"] = "1"
    path = f"/v1/functions/{name}/logs" + (f"?{urlencode(query)}" if query else "")
    for line in client.stream("GET", path):
        if as_json:
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()
        else:
            out.print(format_line(line), highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(logs)
