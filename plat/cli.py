"""The ``plat`` command: one typer app, one module per verb group under plat/commands.

Start-up time is part of every command: modules here and in plat/commands import
only typer and the standard library at the top, and what a command needs (rich,
the daemon client, pydantic, the docker SDK, ...) inside the function that runs it.
`tests/test_cli.py` checks that ``plat --help`` loads none of those.
"""

from __future__ import annotations

import logging
import os
import sys
from importlib import import_module
from typing import NoReturn

import typer

from plat import __version__
from plat.errors import PlatError

# pydantic looks for plugins among the installed packages' entry points when the
# first model is made (~30 ms of CPU per command that validates a plat.yaml: the
# scan imports importlib.metadata and email); plat uses none. The daemon a
# command starts inherits it; instances get their own minimal environment.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

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
    "push",
    "k8s",
    "scale",
    "logs",
    "stats",
    "slo",
    "traces",
    "calls",
    "auth",
    "tenant",
    "secret",
    "hook",
    "audit",
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
    tenant: str | None = typer.Option(
        None,
        "--tenant",
        envvar="PLAT_TENANT",
        help="Act for this tenant (an admin may name any; a tenant's token acts for its own).",
    ),
    url: str | None = typer.Option(
        None,
        "--url",
        envvar="PLAT_URL",
        help="Talk to the daemon at this gateway URL (e.g. http://host:8080) instead of "
        "the local one; needs a token.",
    ),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="PLAT_TOKEN",
        help="The token to send with --url. Prefer the PLAT_TOKEN variable: "
        "a flag shows in `ps` and in shell history.",
    ),
) -> None:
    """plat: HTTP functions in real containers on your machine."""
    # plat.connect reads these from the environment, as when they were exported.
    for name, value in (("PLAT_TENANT", tenant), ("PLAT_URL", url), ("PLAT_TOKEN", token)):
        if value is not None:
            os.environ[name] = value


for _name in COMMAND_MODULES:
    import_module(f"plat.commands.{_name}").register(app)


def _log_unexpected(exc: BaseException) -> str:
    import traceback

    from plat.paths import Home

    home = Home.from_env()
    try:
        home.root.mkdir(parents=True, exist_ok=True)
        with home.cli_log.open("a") as fh:
            fh.write("".join(traceback.format_exception(exc)))
        return str(home.cli_log)
    except OSError:
        return "(could not write the log)"


def _stderr(markup: str) -> None:
    from plat.console import err

    err.print(markup)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _click_exception() -> type[Exception]:
    """click's ClickException (usage errors): typer >= 0.20 vendors click as typer._click."""
    try:
        from typer._click.exceptions import ClickException
    except ImportError:  # an older typer, on top of click
        from click import ClickException  # type: ignore[no-redef,assignment,unused-ignore]
    return ClickException


def main() -> None:
    """Entry point: PlatError -> message, exit 1; Ctrl-C -> 130; anything else -> 3."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        # Without standalone mode click returns the exit code of typer.Exit instead of raising.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except PlatError as exc:
        _report(exc)
    except KeyboardInterrupt:
        _stderr("interrupted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        _stderr("aborted")
        sys.exit(1)
    except SystemExit:
        raise
    except OSError as exc:
        # A home that cannot be written fails wherever plat first writes to it.
        from plat.paths import Home

        home = Home.from_env()
        if not (home.holds(exc.filename) or home.holds(exc.filename2)):
            _unexpected(exc)
        _report(home.unusable(exc))
    except Exception as exc:
        if isinstance(exc, _click_exception()):
            exc.show()  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        _unexpected(exc)


def _report(exc: PlatError) -> NoReturn:
    _stderr(f"[red]error:[/red] {_escape(exc.message)}")
    if exc.hint:
        _stderr(f"[yellow]hint:[/yellow] {_escape(exc.hint)}")
    sys.exit(1)


def _unexpected(exc: BaseException) -> NoReturn:
    where = _log_unexpected(exc)
    _stderr(f"[red]unexpected error:[/red] {_escape(repr(exc))}\nThe traceback is in {where}.")
    sys.exit(3)
