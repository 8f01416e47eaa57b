"""``plat traces [NAME]`` (recent traced calls) and ``plat trace ID`` (one trace's
spans as a waterfall in the terminal, then the log lines written during it).

The waterfall's layout (tree order, columns, bar positions) is pure functions of the
API's span objects, tested on hand-written spans; rich only draws what they decide.
Span names and services come from handlers, so they are shown with their control
characters replaced: a span cannot move the cursor or clear the terminal.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

import typer

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text


class TraceSummary(TypedDict):
    """One row of ``GET /v1/traces``: a sampled call through the gateway."""

    trace_id: str
    function: str
    tenant: str
    version: str
    ts: float
    duration: float
    status: int
    cold: bool
    call_id: str


class Span(TypedDict):
    """One span of ``GET /v1/traces/{id}``; times in epoch seconds."""

    span_id: str
    parent_id: str | None
    name: str
    kind: str
    service: str
    function: str
    tenant: str
    start: float
    end: float
    error: bool
    attributes: dict[str, Any]


TRACE_ID = re.compile(r"[0-9a-f]{32}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
DEFAULT_TENANT = "default"
NO_TRACES_HINT = (
    "tracing is on by default; OTEL_SDK_DISABLED=true or OTEL_TRACES_SAMPLER "
    "(e.g. always_off, or a low traceidratio) in the daemon's environment turn it off or "
    "sample fewer calls"
)
FULL, THIN = "█", "▏"  # a span's bar; the instant of a span that took no time
GAP = 1  # cells between columns
MIN_BAR = 10  # the bar column keeps at least this many cells, when the terminal has them
SERVICE_MAX = 16
SERVICE_FROM = 60  # terminals narrower than this drop the service column
WIDE_LIST = 80  # narrower terminals list traces without a table
BAR_STYLE = {"queue": "yellow", "cold start": "magenta", "pool specialisation": "magenta"}


def parse_trace_id(raw: str) -> str:
    """The trace id in ``raw`` (lowercased); raises PlatError unless it is 32 hex
    digits, not all zero (W3C trace context), before anything is asked of the daemon."""
    from plat.errors import PlatError

    text = raw.strip().lower()
    if TRACE_ID.fullmatch(text) and text != "0" * 32:
        return text
    shown = raw if len(raw) <= 40 else raw[:40] + "..."
    raise PlatError(
        f"{shown!r} is not a trace id: 32 hex digits expected (not all zero)",
        hint="`plat traces` lists recent ones",
    )


def clean(text: object) -> str:
    """``text`` with control characters (escapes, newlines) shown as U+FFFD."""
    return _CONTROL.sub("\ufffd", str(text))


def ms(seconds: float) -> str:
    """A duration in milliseconds with about three significant digits."""
    value = max(0.0, seconds) * 1000
    if value < 10:
        return f"{value:.2f} ms"
    if value < 1000:
        return f"{value:.1f} ms"
    return f"{value:.0f} ms"


def age(seconds: float) -> str:
    """How long ago, compactly: 5s, 3m, 2h, 4d (a future time, clock skew, is 0s)."""
    value = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size:
            return f"{value // size}{unit}"
    return f"{value}s"


# -- the waterfall's layout ----------------------------------------------------------


def tree_order(spans: Sequence[Span]) -> list[tuple[Span, int]]:
    """Every span once, with its depth: depth first, each parent before its children,
    roots and siblings by start. A span whose parent is not in the trace (the caller's
    span, or one not kept) is a root, so is each call of a trace with several. Spans
    whose parents form a cycle (corrupt data) start a tree at the earliest of them.
    Iterative: a chain of any depth does not hit the recursion limit."""

    def key(index: int) -> tuple[float, float, int]:
        return (spans[index]["start"], spans[index]["end"], index)

    first: dict[str, int] = {}
    for index, span in enumerate(spans):
        first.setdefault(span["span_id"], index)
    children: dict[int, list[int]] = {}
    roots: list[int] = []
    for index, span in enumerate(spans):
        parent = first.get(span["parent_id"] or "")
        if parent is None or parent == index:
            roots.append(index)
        else:
            children.setdefault(parent, []).append(index)
    placed: list[tuple[Span, int]] = []
    seen = [False] * len(spans)

    def walk(root: int) -> None:
        stack = [(root, 0)]
        while stack:
            index, depth = stack.pop()
            if seen[index]:
                continue
            seen[index] = True
            placed.append((spans[index], depth))
            below = sorted(children.get(index, ()), key=key, reverse=True)
            stack.extend((child, depth + 1) for child in below)

    for index in sorted(roots, key=key):
        walk(index)
    for index in sorted(range(len(spans)), key=key):
        if not seen[index]:
            walk(index)
    return placed


def axis(spans: Sequence[Span]) -> tuple[float, float]:
    """The common time axis: from the earliest start to the latest end. A child that
    starts before its parent (clocks of container and daemon differ) widens it."""
    if not spans:
        return (0.0, 0.0)
    start = min(s["start"] for s in spans)
    return start, max(max(s["start"], s["end"]) for s in spans)


def bar(start: float, end: float, t0: float, t1: float, width: int) -> tuple[int, int]:
    """Where a span's bar goes in ``width`` cells for the axis t0..t1: (offset, length).
    Every span gets at least one cell, inside the column, whatever its times."""
    if width <= 0:
        return (0, 0)
    total = t1 - t0
    if total <= 0:
        return (0, 1)
    scale = width / total
    left = min(max(math.floor((start - t0) * scale), 0), width - 1)
    right = min(max(math.ceil((max(start, end) - t0) * scale), left + 1), width)
    return left, right - left


@dataclass(frozen=True)
class Columns:
    """Cell widths of the waterfall's columns; ``service`` 0 hides that column."""

    name: int
    service: int
    duration: int
    bar: int

    @property
    def total(self) -> int:
        shown = [w for w in (self.name, self.service, self.duration, self.bar) if w]
        return sum(shown) + GAP * (len(shown) - 1)


def columns(
    width: int, labels: Sequence[str], services: Sequence[str], durations: Sequence[str]
) -> Columns:
    """Columns that fit ``width`` cells: the names get what they need up to 40 % of
    the room (or more on a narrow terminal, while the bar keeps MIN_BAR cells), the
    bar gets the rest; the service column only on terminals SERVICE_FROM wide."""
    from rich.cells import cell_len

    duration = max([len("DURATION"), *(len(d) for d in durations)])
    service = min(max((cell_len(s) for s in services), default=0), SERVICE_MAX)
    service = max(service, len("SERVICE")) if service and width >= SERVICE_FROM else 0
    fixed = duration + 2 * GAP + (service + GAP if service else 0)
    room = max(width - fixed, 2)
    longest = max([len("SPAN"), *(cell_len(label) for label in labels)])
    name = max(1, min(longest, max(room * 2 // 5, min(room - MIN_BAR, 16))))
    return Columns(name, service, duration, max(room - name, 1))


def indent(name: str, depth: int, width: int) -> str:
    """``name`` indented two cells a level, the indent capped at half the name column
    so that very deep spans still show their names (marked with a leading '…')."""
    cap = max(width // 2, 0)
    if 2 * depth <= cap:
        return "  " * depth + name
    return " " * max(cap - 1, 0) + "…" + name


@dataclass(frozen=True)
class Row:
    """One line of the waterfall, laid out: what is written and where its bar goes."""

    label: str
    service: str
    duration: str
    offset: int
    length: int
    error: bool
    style: str
    instant: bool  # took no time: drawn as a thin mark


def _label(span: Span) -> str:
    name = clean(span["name"])
    status = (span.get("attributes") or {}).get("http.response.status_code")
    return f"{name} {status}" if isinstance(status, int) and span["kind"] == "server" else name


def _style(span: Span) -> str:
    if span["error"]:
        return "red"
    if span["name"] in BAR_STYLE:
        return BAR_STYLE[span["name"]]
    return "cyan" if span.get("service", "plat") == "plat" else "green"


def waterfall(spans: Sequence[Span], width: int) -> tuple[Columns, list[Row]]:
    """The rows of the waterfall of ``spans`` for a terminal ``width`` cells wide."""
    placed = tree_order(spans)
    names = [_label(span) for span, _ in placed]
    services = [clean(span.get("service", "")) for span, _ in placed]
    durations = [ms(span["end"] - span["start"]) for span, _ in placed]
    labels = ["  " * depth + name for name, (_, depth) in zip(names, placed, strict=True)]
    cols = columns(width, labels, services, durations)
    t0, t1 = axis(spans)
    rows = []
    for (span, depth), name, service, duration in zip(
        placed, names, services, durations, strict=True
    ):
        offset, length = bar(span["start"], span["end"], t0, t1, cols.bar)
        rows.append(
            Row(
                label=indent(name, depth, cols.name),
                service=service,
                duration=duration,
                offset=offset,
                length=length,
                error=bool(span["error"]),
                style=_style(span),
                instant=span["end"] <= span["start"],
            )
        )
    return cols, rows


# -- drawing --------------------------------------------------------------------------


def _cell(text: str, width: int, style: str = "", right: bool = False) -> Text:
    from rich.text import Text

    cell = Text(text, style=style, no_wrap=True)
    cell.truncate(width, overflow="ellipsis")
    padding = " " * (width - cell.cell_len)
    return Text(padding, end="") + cell if right else cell + Text(padding)


def render(cols: Columns, rows: Sequence[Row], total: float) -> list[Text]:
    """The header (with the time axis: 0 at the left, the trace's duration at the
    right) and one line per row, each exactly ``cols.total`` cells."""
    from rich.text import Text

    def line(name: Text, service: Text, duration: Text, graph: Text) -> Text:
        parts = [name, *([service] if cols.service else []), duration, graph]
        return Text(" " * GAP).join(parts)

    scale = ms(total)
    ruler = "0".ljust(max(cols.bar - len(scale), 1)) + scale
    lines = [
        line(
            _cell("SPAN", cols.name, "bold"),
            _cell("SERVICE", cols.service, "bold"),
            _cell("DURATION", cols.duration, "bold", right=True),
            _cell(ruler, cols.bar, "dim"),
        )
    ]
    for row in rows:
        graph = Text(" " * row.offset, end="")
        graph.append(THIN if row.instant else FULL * row.length, style=row.style)
        graph.pad_right(cols.bar - graph.cell_len)
        lines.append(
            line(
                _cell(row.label, cols.name, "red" if row.error else ""),
                _cell(row.service, cols.service, "dim"),
                _cell(row.duration, cols.duration, right=True),
                graph,
            )
        )
    return lines


def summary_cells(rows: Sequence[TraceSummary], now: float) -> tuple[list[str], list[list[str]]]:
    """The headers and cells (rich markup) of the list of traced calls; a TENANT
    column only when another tenant than the default one is among them."""
    from rich.markup import escape

    tenants = any(row["tenant"] != DEFAULT_TENANT for row in rows)
    headers = ["TRACE ID", "FUNCTION", *(["TENANT"] if tenants else []), "STATUS"]
    cells = []
    for row in rows:
        status = int(row["status"])
        style = "red" if status >= 500 else "yellow" if status >= 400 else "green"
        cells.append(
            [
                row["trace_id"],
                escape(clean(row["function"])),
                *([escape(clean(row["tenant"]))] if tenants else []),
                f"[{style}]{status}[/{style}]",
                ms(row["duration"]),
                "[magenta]cold[/magenta]" if row["cold"] else "warm",
                age(now - row["ts"]),
            ]
        )
    return [*headers, "DURATION", "START", "AGE"], cells


def traces_table(rows: Sequence[TraceSummary], now: float, width: int) -> Table | Text:
    """A table of traced calls, or on a terminal too narrow for one, each call's
    trace id on a line of its own (ids are to be copied whole) and the rest below."""
    from rich.table import Table
    from rich.text import Text

    headers, cells = summary_cells(rows, now)
    if width < WIDE_LIST:
        lines = [f"[bold]{row[0]}[/bold]\n  " + " ".join(row[1:]) for row in cells]
        return Text.from_markup("\n".join(lines))
    table = Table(box=None, header_style="bold")
    for header in headers:
        right = header in ("STATUS", "DURATION", "AGE")
        table.add_column(header, justify="right" if right else "left", no_wrap=right)
    table.columns[0].no_wrap, table.columns[0].min_width = True, 32
    for row in cells:
        table.add_row(*row)
    return table


# -- the commands ---------------------------------------------------------------------


def traces(
    name: str | None = typer.Argument(None, help="One function (default: all in scope)."),
    slowest: bool = typer.Option(False, "--slowest", help="The slowest first."),
    errors: bool = typer.Option(False, "--errors", help="Only calls answered with a 5xx."),
    limit: int = typer.Option(20, "--limit", "-n", min=1, help="At most N traces."),
    since: str = typer.Option("1h", "--since", help="Window, e.g. 10m, 1h, 1d."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Recent traced calls, newest first: `plat trace ID` shows one as a waterfall."""
    from urllib.parse import urlencode

    from plat.connect import connect
    from plat.console import err, out
    from plat.errors import PlatError

    if slowest and errors:
        raise PlatError("--slowest and --errors exclude each other: choose one")
    order = "slowest" if slowest else "errors" if errors else "recent"
    query = {"order": order, "limit": str(limit), "since": since}
    if name:
        query["function"] = name
    data: dict[str, Any] = connect().request("GET", f"/v1/traces?{urlencode(query)}")
    if as_json:
        out.print_json(json.dumps(data))
        return
    rows: list[TraceSummary] = data["traces"]
    if not rows:
        of = f" of {name}" if name else ""
        if errors:
            err.print(f"no call{of} answered with a 5xx in the last {since}")
        else:
            err.print(f"no traced calls{of} in the last {since}")
            err.print(f"[yellow]hint:[/yellow] {NO_TRACES_HINT}")
        return
    out.print(traces_table(rows, time.time(), out.width))


def trace(
    trace_id: str = typer.Argument(..., metavar="ID", help="The trace id (32 hex digits)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """One trace as a waterfall: its spans on a common time axis, then its log lines."""
    from plat.commands.logs import format_line
    from plat.connect import connect
    from plat.console import out

    wanted = parse_trace_id(trace_id)
    data: dict[str, Any] = connect().request("GET", f"/v1/traces/{wanted}")
    if as_json:
        out.print_json(json.dumps(data))
        return
    spans: list[Span] = data["spans"]
    t0, t1 = axis(spans)
    out.print(f"[bold]trace {wanted}[/bold]  {len(spans)} span(s) over {ms(t1 - t0)}")
    cols, rows = waterfall(spans, out.width)
    for text in render(cols, rows, t1 - t0):
        out.print(text, no_wrap=True, overflow="crop", crop=True)
    logs: list[dict[str, Any]] = data.get("logs") or []
    out.print()
    if not logs:
        out.print("[dim]no log lines were written during this trace[/dim]")
        return
    out.print("[bold]logs[/bold]")
    for line in logs:
        out.print(format_line(line), highlight=False)


def register(app: typer.Typer) -> None:
    app.command("traces")(traces)
    app.command("trace")(trace)
