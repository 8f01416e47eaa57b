"""The result model of a benchmark run and its rendering as Markdown and JSON.

Contract: a benchmark returns one :class:`Section`. Its ``figures`` are the
headline numbers, each measured together with a baseline in the same run
(``ratio`` = plat ÷ baseline); its ``tables`` hold the detail. A section whose
benchmark failed carries ``error`` and is still rendered, so a partial run still
writes a report that says what went wrong.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Better = Literal["lower", "higher"]
TIMES = "\u00d7"  # the multiplication sign


@dataclass(frozen=True)
class Figure:
    """One headline number of plat next to the same number for its baseline."""

    name: str
    value: float
    unit: str
    baseline_name: str
    baseline: float
    better: Better = "lower"
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """plat ÷ baseline; None when the baseline is zero, negative or not finite."""
        if not math.isfinite(self.baseline) or self.baseline <= 0 or not math.isfinite(self.value):
            return None
        return self.value / self.baseline


@dataclass
class Table:
    """A Markdown table: the cells are already formatted strings."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)


@dataclass
class Section:
    """What one benchmark measured (or the error that stopped it)."""

    key: str
    title: str
    method: str = ""
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None


@dataclass
class Report:
    """A whole run: where it ran, with which versions, and one section per benchmark."""

    date: str
    mode: str
    machine: list[tuple[str, str]]
    versions: list[tuple[str, str]]
    sections: list[Section] = field(default_factory=list)
    seconds: float = 0.0
    command: str = "python -m benchmarks"


# ---------------------------------------------------------------------------
# formatting


def fmt(value: float, unit: str) -> str:
    """``value`` in ``unit`` with a precision that suits the unit (``-`` if not finite)."""
    if not math.isfinite(value):
        return "-"
    if unit == "ms":
        return f"{value:.0f} ms" if abs(value) >= 100 else f"{value:.2f} ms"
    if unit == "s":
        return f"{value:.1f} s" if abs(value) >= 100 else f"{value:.2f} s"
    if unit == "req/s":
        return f"{value:,.0f} req/s"
    if unit == "MiB":
        return f"{value:,.1f} MiB"
    if unit == "%":
        return f"{value:.1f} %"
    if unit == "":
        return f"{value:g}"
    if unit == "count":  # a whole number, however large
        return f"{value:,.0f}"
    return f"{value:g} {unit}"


def fmt_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}{TIMES}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(table: Table) -> str:
    lines = []
    if table.title:
        lines += [f"**{table.title}**", ""]
    lines.append("| " + " | ".join(_cell(c) for c in table.columns) + " |")
    lines.append("|" + "|".join("---" for _ in table.columns) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return "\n".join(lines)


def figures_table(rows: list[tuple[str, Figure]], *, with_section: bool) -> Table:
    columns = ["benchmark"] if with_section else []
    columns += ["figure", "plat", "baseline", "baseline value", "ratio (plat ÷ baseline)"]
    table = Table("", columns)
    for title, fig in rows:
        cells = [title] if with_section else []
        name = fig.name + (f" ({fig.note})" if fig.note else "")
        cells += [
            name,
            fmt(fig.value, fig.unit),
            fig.baseline_name,
            fmt(fig.baseline, fig.unit),
            fmt_ratio(fig.ratio),
        ]
        table.rows.append(cells)
    return table


def to_markdown(report: Report) -> str:
    """The report as Markdown (what ``docs/benchmarks.md`` holds)."""
    out: list[str] = [
        "# plat benchmarks",
        "",
        f"Written by `{report.command}` on {report.date} "
        f"({report.mode} run, {report.seconds:.0f} s). Every plat figure is measured "
        "together with its baseline in the same run; the ratio is plat ÷ baseline "
        "(for latencies and times lower is better, for throughput higher is better). "
        "Single samples on a shared VM: treat differences under ~20 % as noise.",
        "",
        "## Machine",
        "",
        markdown_table(Table("", ["", ""], [[k, v] for k, v in report.machine])),
        "",
        "## Versions",
        "",
        markdown_table(Table("", ["tool", "version"], [[k, v] for k, v in report.versions])),
        "",
        "## Summary",
        "",
    ]
    summary = [(s.title, f) for s in report.sections for f in s.figures]
    if summary:
        out += [markdown_table(figures_table(summary, with_section=True)), ""]
    failed = [s for s in report.sections if s.error]
    for section in failed:
        out += [f"- **{section.title} failed:** {section.error}"]
    if failed:
        out.append("")
    for section in report.sections:
        out += [f"## {section.title}", ""]
        if section.method:
            out += [section.method, ""]
        if section.error:
            out += [f"**Failed:** {section.error}", ""]
        if section.figures:
            rows = [(section.title, f) for f in section.figures]
            out += [markdown_table(figures_table(rows, with_section=False)), ""]
        for table in section.tables:
            out += [markdown_table(table), ""]
        for note in section.notes:
            out.append(f"- {note}")
        if section.notes:
            out.append("")
        out += [f"_This benchmark took {section.seconds:.0f} s._", ""]
    return "\n".join(out).rstrip() + "\n"


def to_json(report: Report) -> dict[str, Any]:
    """The report as plain data; each figure also carries its ``ratio``."""
    data = asdict(report)
    for raw, section in zip(data["sections"], report.sections, strict=True):
        for raw_fig, fig in zip(raw["figures"], section.figures, strict=True):
            raw_fig["ratio"] = fig.ratio
    return data


def write(report: Report, markdown: Path, json_path: Path | None = None) -> None:
    markdown.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text(to_markdown(report))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(to_json(report), indent=2) + "\n")
