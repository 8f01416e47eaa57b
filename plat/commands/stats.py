"""``plat stats [NAME]``: invocations, error rate, latency percentiles, cold starts."""

from __future__ import annotations

import json
from typing import Any

import typer


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f} ms"


def stats(
    name: str | None = typer.Argument(None, help="One function (default: all)."),
    since: str = typer.Option("1h", "--since", help="Window, e.g. 10m, 1h, 7d."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Per function over a window: invocations, error rate, p50/p95/p99, cold starts."""
    from urllib.parse import urlencode

    from rich.table import Table

    from plat.connect import connect
    from plat.console import err, out

    query = {"since": since}
    if name:
        query["function"] = name
    data: dict[str, Any] = connect().request("GET", f"/v1/stats?{urlencode(query)}")
    if as_json:
        out.print_json(json.dumps(data))
        return
    if not data["functions"]:
        err.print(f"no invocations in the last {since}")
        return
    table = Table(box=None, header_style="bold", title=f"last {since}", title_justify="left")
    for col in ("FUNCTION", "CALLS", "5XX", "ERROR RATE", "P50", "P95", "P99", "COLD"):
        table.add_column(col, justify="left" if col == "FUNCTION" else "right")
    for fn in data["functions"]:
        table.add_row(
            fn["function"],
            str(fn["invocations"]),
            str(fn["errors"]),
            f"{fn['error_rate'] * 100:.1f} %",
            _ms(fn["p50"]),
            _ms(fn["p95"]),
            _ms(fn["p99"]),
            str(fn["cold_starts"]),
        )
    out.print(table)


def register(app: typer.Typer) -> None:
    app.command()(stats)
