"""``plat slo [NAME]`` (SLIs, error budget left and burn rates of the functions
with an SLO) and ``plat slo rules [-o FILE]`` (their Prometheus rules)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperGroup

if TYPE_CHECKING:
    from typer import _click

    from plat.slo import SliReport, SloAnswer, SloReport, WindowReport


class _ShowByDefault(TyperGroup):
    """``plat slo [NAME] [--json]`` is ``plat slo show ...``: a first argument that is
    not a subcommand (nor --help) goes to ``show``. ``plat slo show rules`` shows a
    function named rules."""

    def parse_args(self, ctx: _click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ctx.help_option_names):
            args = ["show", *args]
        return super().parse_args(ctx, args)


slo_app = typer.Typer(
    cls=_ShowByDefault,
    help="Service level objectives (`slo:` in plat.yaml): `plat slo [NAME]` shows SLIs, "
    "error budget and burn rates; `plat slo rules` writes Prometheus rules.",
)

ALERTS = {"page": "[bold red]PAGE[/bold red]", "ticket": "[yellow]ticket[/yellow]", None: "ok"}


def _percent(value: float | None) -> str:
    """A ratio as a percentage with the digits that tell it from 100 %."""
    if value is None:
        return "-"
    digits = 2
    while digits < 6 and value < 1 and round(value * 100, digits) >= 100:
        digits += 1
    return f"{value * 100:.{digits}f} %"


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:g} ms" if seconds < 1 else f"{seconds:g} s"


def _label(sli: SliReport) -> str:
    if sli["sli"] == "latency" and sli["threshold"] is not None:
        return f"latency {sli['percentile']} ≤ {_duration(sli['threshold'])}"
    return "availability"


def _short(window: WindowReport) -> str:
    """A mark for a window that the kept records do not fill."""
    return "*" if window["covered"] < window["seconds"] - 1 else ""


def _table(report: SloReport) -> Any:
    from rich.table import Table

    title = report["function"]
    if report["tenant"] != "default":
        title += f" (tenant {report['tenant']})"
    table = Table(box=None, header_style="bold", title=title, title_justify="left")
    windows = report["slis"][0]["windows"]
    table.add_column("SLI")
    table.add_column("OBJECTIVE", justify="right")
    for window in windows:
        table.add_column(window["window"] + _short(window), justify="right")
    table.add_column("BUDGET LEFT", justify="right")
    table.add_column("ALERT")
    table.add_row("calls", "", *(str(w["calls"]) for w in windows), "", "")
    for sli in report["slis"]:
        table.add_row(
            _label(sli),
            f"{sli['objective']:g} %",
            *(_percent(w["sli"]) for w in sli["windows"]),
            _percent(sli["budget_left"]),
            ALERTS[sli["alert"]],
        )
        table.add_row(
            "  burn rate",
            "",
            *("-" if w["burn_rate"] is None else f"{w['burn_rate']:.2f}x" for w in sli["windows"]),
            "",
            "",
        )
    return table


@slo_app.command("show")
def show(
    name: str | None = typer.Argument(None, help="One function (default: every one with an SLO)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """SLIs over 5m, 1h, 6h, 1d and 30d, the 30-day error budget left and burn rates."""
    from urllib.parse import urlencode

    from rich.markup import escape

    from plat.connect import connect
    from plat.console import err, out

    path = "/v1/slo" + (f"?{urlencode({'function': name})}" if name else "")
    data: SloAnswer = connect().request("GET", path)
    if as_json:
        out.print_json(json.dumps(data))
        return
    if not data["functions"]:
        err.print(
            "no function has an SLO; add one to a plat.yaml and deploy it, "
            "e.g. slo: {availability: 99.9, latency: {p95: 300ms}}"
        )
        return
    for index, report in enumerate(data["functions"]):
        if index:
            out.print()
        out.print(_table(report))
        for note in report["notes"]:
            out.print(f"[dim]note: {escape(note)}[/dim]")
    out.print(
        "[dim]availability: calls not answered with a 5xx; burn rate 1x spends the "
        "30-day budget in 30 days; alerts as `plat slo rules` (docs/slo.md)[/dim]"
    )


@slo_app.command("rules")
def rules(
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Write the rules to FILE (default: stdout)."
    ),
) -> None:
    """Prometheus recording and alerting rules (multi-window, multi-burn-rate)."""
    from rich.markup import escape

    from plat.connect import connect
    from plat.console import err
    from plat.errors import PlatError

    data: dict[str, Any] = connect().request("GET", "/v1/slo/rules?format=json")
    for note in data["notes"]:
        err.print(f"[dim]note: {escape(note)}[/dim]")
    if not data["rules"]:
        err.print("no function has an SLO with Prometheus rules; the file has no groups")
    text: str = data["yaml"]
    if output is None:
        sys.stdout.write(text)
        return
    temporary = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text)
        os.replace(temporary, output)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise PlatError(f"cannot write {output}: {exc.strerror or exc}") from None
    where = escape(str(output))
    err.print(
        f"wrote {data['rules']} rules for {data['functions']} function(s) to {where}; "
        f"check them with `promtool check rules {where}`"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(slo_app, name="slo")
