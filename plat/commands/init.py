"""``plat init`` (scaffold a function) and ``plat runtimes`` (list the runtimes)."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Annotated

import typer


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is below it, else absolute."""
    absolute = path.resolve()
    try:
        return str(absolute.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(absolute)


def init(
    name: Annotated[str, typer.Argument(help="Function name: lowercase letters, digits, '-'.")],
    runtime: Annotated[
        str,
        typer.Option("--runtime", "-r", help="python, node or dockerfile (see `plat runtimes`)."),
    ] = "python",
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="Folder to create (default: ./NAME).", show_default=False),
    ] = None,
) -> None:
    """Scaffold a new function folder: plat.yaml, a handler and its dependency file."""
    from rich.markup import escape

    from plat.console import out
    from plat.scaffold import scaffold

    target = directory if directory is not None else Path(name)
    created = scaffold(target, name, runtime)
    folder = _shown(target)
    out.print(
        f"Created function [bold]{escape(name)}[/bold] ({escape(runtime)}) in {escape(folder)}"
    )
    for path in created:
        out.print(f"  {escape(os.path.join(folder, path.relative_to(target)))}")
    out.print("\nNext steps:")
    out.print(f"  cd {escape(shlex.quote(folder))} && plat deploy")
    example = shlex.quote(json.dumps({"name": "Ada"}))
    out.print(f"  plat invoke {escape(name)} -d {escape(example)}")


def runtimes(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List the runtimes `plat init --runtime` accepts."""
    from rich.markup import escape
    from rich.table import Table

    from plat.console import out
    from plat.runtimes import all_runtimes

    found = all_runtimes()
    if as_json:
        rows = [
            {
                "name": rt.name,
                "description": rt.description,
                "base": rt.base,
                "bootstrap_image": rt.bootstrap.image if rt.bootstrap else None,
                "handler": rt.handler,
                "detect": list(rt.detect),
                "dependencies": list(rt.dependencies),
            }
            for rt in found.values()
        ]
        out.print(json.dumps(rows, indent=2), markup=False, highlight=False)
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("NAME")
    table.add_column("BASE IMAGE")
    table.add_column("DESCRIPTION")
    for rt in found.values():
        table.add_row(rt.name, rt.base or "(your Dockerfile)", escape(rt.description))
    out.print(table)


def register(app: typer.Typer) -> None:
    """Add ``init`` and ``runtimes`` to the ``plat`` app."""
    app.command("init")(init)
    app.command("runtimes")(runtimes)
