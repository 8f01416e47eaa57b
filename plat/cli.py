"""The ``plat`` command: one typer app, one module per verb group under plat/commands."""

from __future__ import annotations

import logging
import sys
import traceback
from importlib import import_module

import typer
from rich.markup import escape

from plat import __version__
from plat.console import err
from plat.errors import PlatError
from plat.paths import Home

app = typer.Typer(
    name="plat",
    help="plat: HTTP functions in real containers on your machine.\n\n"
    "Start with `plat init hello`, then `cd hello && plat deploy`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Each module exposes register(app). Order is the order of `plat --help`.
COMMAND_MODULES = (
    "init",
    "deploy",
    "dev",
    "invoke",
    "functions",
    "scale",
    "logs",
    "stats",
    "auth",
    "daemon",
    "runtime",
    "doctor",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"plat {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """plat: HTTP functions in real containers on your machine."""


for _name in COMMAND_MODULES:
    import_module(f"plat.commands.{_name}").register(app)


def _log_unexpected(exc: BaseException) -> str:
    home = Home.from_env()
    try:
        home.root.mkdir(parents=True, exist_ok=True)
        with home.cli_log.open("a") as fh:
            fh.write("".join(traceback.format_exception(exc)))
        return str(home.cli_log)
    except OSError:
        return "(could not write the log)"


def main() -> None:
    """Entry point: PlatError -> message, exit 1; Ctrl-C -> 130; anything else -> 3."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        # Without standalone mode click returns the exit code of typer.Exit instead of raising.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except PlatError as exc:
        err.print(f"[red]error:[/red] {escape(exc.message)}")
        if exc.hint:
            err.print(f"[yellow]hint:[/yellow] {escape(exc.hint)}")
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(1)
    except SystemExit:
        raise
    except Exception as exc:
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        where = _log_unexpected(exc)
        err.print(f"[red]unexpected error:[/red] {escape(repr(exc))}\nThe traceback is in {where}.")
        sys.exit(3)
