"""``plat calls [NAME]`` (queued calls, newest first) and ``plat call ID`` (one call:
its attempts, callback and the answer kept; ``--retry`` queues a dead or failed
call again).

The cells and lines are pure functions of the API's call objects, tested on
hand-written ones. What a function answered is shown with its control characters
replaced: an answer cannot move the cursor or clear the terminal.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text

    from plat.api import CallDetail, CallResponse, CallSummary

STATES = ("queued", "running", "done", "failed", "dead")
FINISHED = ("done", "failed", "dead")
STATE_STYLE = {
    "queued": "cyan",
    "running": "blue",
    "done": "green",
    "failed": "yellow",
    "dead": "red",
}
CALL_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
MAX_LIMIT = 1000
SHOWN_BODY = 4096  # bytes of an answer printed by `plat call ID`; --json has all that is kept
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")  # \t and \n stay
DEFAULT_TENANT = "default"
WIDE_LIST = 100  # narrower terminals list calls without a table


def parse_call_id(raw: str) -> str:
    """``raw`` stripped; raises PlatError unless it can be a call id, before anything
    is asked of the daemon."""
    from plat.errors import PlatError

    text = raw.strip()
    if CALL_ID.fullmatch(text):
        return text
    shown = raw if len(raw) <= 40 else raw[:40] + "..."
    raise PlatError(
        f"{shown!r} is not a call id: 1 to 128 letters, digits, '.', '_' or '-'",
        hint="`plat calls NAME` lists a function's calls",
    )


def parse_state(raw: str | None) -> str | None:
    from plat.errors import PlatError

    if raw is None:
        return None
    if raw.lower() not in STATES:
        raise PlatError(f"--state {raw[:40]!r} is not a state: give one of {', '.join(STATES)}")
    return raw.lower()


def clean(text: str) -> str:
    """``text`` with control characters (escapes) shown as U+FFFD; tabs and newlines kept."""
    return _CONTROL.sub("\ufffd", text)


def took(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    from plat.units import format_duration

    return format_duration(max(0.0, seconds))


def state_cell(state: str) -> str:
    style = STATE_STYLE.get(state, "")
    return f"[{style}]{state}[/{style}]" if style else state


def callback_cell(call: CallSummary) -> str:
    state = call["callback_state"]
    style = {"delivered": "green", "pending": "cyan", "failed": "red"}.get(state or "", "")
    return f"[{style}]{state}[/{style}]" if style else "-"


def list_cells(rows: Sequence[CallSummary], now: float) -> tuple[list[str], list[list[str]]]:
    """Headers and cells (rich markup) of the list; FUNCTION when several functions
    are listed, TENANT when another tenant than the default one is among them."""
    from rich.markup import escape

    from plat.commands.traces import age

    functions = len({(r["function"], r["tenant"]) for r in rows}) > 1
    tenants = any(r["tenant"] != DEFAULT_TENANT for r in rows)
    headers = [
        "ID",
        *(["FUNCTION"] if functions else []),
        *(["TENANT"] if tenants else []),
        *("STATE", "TRIGGER", "ATTEMPTS", "STATUS", "AGE", "DURATION", "CALLBACK"),
    ]
    cells = []
    for r in rows:
        cells.append(
            [
                escape(r["id"]),
                *([escape(r["function"])] if functions else []),
                *([escape(r["tenant"])] if tenants else []),
                state_cell(r["state"]),
                escape(r["trigger"]),
                str(r["attempts"]),
                str(r["status"] or "-"),
                age(now - r["created_at"]),
                took(r["duration"]),
                callback_cell(r),
            ]
        )
    return headers, cells


def calls_table(rows: Sequence[CallSummary], now: float, width: int) -> Table | Text:
    """A table of calls, or on a terminal too narrow for one, each call's id on a
    line of its own (ids are to be copied whole) and the rest below it."""
    from rich.table import Table
    from rich.text import Text

    headers, cells = list_cells(rows, now)
    if width < WIDE_LIST:
        lines = [f"[bold]{row[0]}[/bold]\n  " + "  ".join(row[1:]) for row in cells]
        return Text.from_markup("\n".join(lines))
    table = Table(box=None, header_style="bold")
    for header in headers:
        right = header in ("ATTEMPTS", "STATUS", "AGE", "DURATION")
        table.add_column(header, justify="right" if right else "left", no_wrap=True)
    table.columns[0].min_width = max(len(r["id"]) for r in rows)
    for row in cells:
        table.add_row(*row)
    return table


def body_lines(response: CallResponse) -> list[str]:
    """The answer's body as printed: text up to SHOWN_BODY bytes, else a note of its
    size (--json has it)."""
    raw = response["body"]
    binary = response.get("encoding") == "base64"
    size = len(base64.b64decode(raw)) if binary else len(raw.encode())
    if not size:
        return ["[dim](empty body)[/dim]"]
    if binary:
        return [f"[dim]({size} bytes, not UTF-8 text: `--json` shows them in base64)[/dim]"]
    if size > SHOWN_BODY:
        return [f"[dim]({size} bytes: `--json` shows them)[/dim]"]
    from rich.markup import escape

    return [escape(clean(raw))]


def detail_lines(call: CallDetail, now: float) -> list[str]:
    """`plat call ID` as lines of rich markup."""
    from datetime import UTC, datetime

    from rich.markup import escape

    from plat.commands.traces import age

    def when(ts: float) -> str:
        stamp = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"{stamp} ({age(now - ts)} ago)"

    of = call["function"] + ("" if call["tenant"] == DEFAULT_TENANT else f" ({call['tenant']})")
    lines = [f"[bold]call {escape(call['id'])}[/bold] of {escape(of)}  {state_cell(call['state'])}"]
    rows = [
        ("trigger", escape(call["trigger"])),
        ("request", escape(clean(f"{call['method']} {call['target'] or '/'}"))),
        ("created", when(call["created_at"])),
        *([("finished", when(call["finished_at"]))] if call["finished_at"] else []),
        ("status", str(call["status"] or "-")),
        ("duration", took(call["duration"])),
        ("attempts", str(call["attempts"])),
    ]
    if call["callback_url"]:
        tries = call["callback_attempts"]
        answer = f", answered {call['callback_status']}" if call["callback_status"] else ""
        rows.append(
            (
                "callback",
                f"{escape(clean(call['callback_url']))}: {callback_cell(call)} "
                f"after {tries} {'try' if tries == 1 else 'tries'}{answer}",
            )
        )
    if call.get("trace_id"):
        rows.append(("trace", f"{call['trace_id']} (plat trace {call['trace_id']})"))
    if call["error"]:
        rows.append(("error", f"[red]{escape(clean(call['error']))}[/red]"))
    lines += [f"  [dim]{key:<9}[/dim] {value}" for key, value in rows]
    attempts = call["attempts_detail"]
    if attempts:
        lines += ["", "[bold]attempts[/bold]"]
        for a in attempts:
            status = str(a["status"] or "-") if a["duration"] is not None else "running"
            error = f"  [red]{escape(clean(a['error']))}[/red]" if a["error"] else ""
            clock = datetime.fromtimestamp(a["started_at"], UTC).strftime("%H:%M:%S UTC")
            after = f"+{max(0.0, a['started_at'] - call['created_at']):.1f}s"
            lines.append(
                f"  #{a['attempt']:<3} {clock} {after:>8}  {took(a['duration']):>8}  "
                f"{status}{error}"
            )
    response = call["response"]
    if response is not None:
        label = "response" if call["state"] in FINISHED else "last response"
        lines += ["", f"[bold]{label} {response['status']}[/bold]"]
        lines += body_lines(response)
    return lines


# -- the commands ---------------------------------------------------------------------


def calls(
    name: str | None = typer.Argument(None, help="The function (default: all in scope)."),
    state: str | None = typer.Option(
        None, "--state", "-s", help="Only calls in this state: " + ", ".join(STATES) + "."
    ),
    limit: int = typer.Option(
        50, "--limit", "-n", min=1, max=MAX_LIMIT, help="At most N calls, newest first."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Queued calls (POST /async-function/NAME and cron ticks), newest first."""
    from urllib.parse import urlencode

    from plat.connect import connect
    from plat.console import err, out

    query = {"limit": str(limit)}
    if (wanted := parse_state(state)) is not None:
        query["state"] = wanted
    if name:
        query["function"] = name
    data: dict[str, Any] = connect().request("GET", f"/v1/calls?{urlencode(query)}")
    if as_json:
        out.print_json(json.dumps(data))
        return
    rows: list[CallSummary] = data["calls"]
    if not rows:
        of = f" of {name}" if name else ""
        if wanted:
            err.print(f"no {wanted} calls{of}")
        else:
            err.print(f"no queued calls{of} are kept")
            err.print(
                f"[yellow]hint:[/yellow] POST /async-function/{name or 'NAME'} queues one; "
                "finished calls are kept 7 days"
            )
        return
    out.print(calls_table(rows, time.time(), out.width))


def call(
    call_id: str = typer.Argument(..., metavar="ID", help="The call's id (X-Call-Id)."),
    retry: bool = typer.Option(
        False, "--retry", help="Queue a dead or failed call again, with fresh retries."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """One queued call: its state, attempts, callback and the answer kept."""
    from plat.connect import connect
    from plat.console import err, out

    wanted = parse_call_id(call_id)
    client = connect()
    if retry:
        data: CallDetail = client.request("POST", f"/v1/calls/{wanted}/retry")
    else:
        data = client.request("GET", f"/v1/calls/{wanted}")
    if as_json:
        out.print_json(json.dumps(data))
        return
    if retry:
        err.print(f"[green]✓[/green] call {wanted} queued again")
    for line in detail_lines(data, time.time()):
        out.print(line, highlight=False)


def register(app: typer.Typer) -> None:
    app.command("calls")(calls)
    app.command("call")(call)
