"""``plat secret set|ls|rm``: a tenant's secrets, which functions read as files.

Values go to the daemon and nowhere else: never printed, never in an argument
unless the user asks for it (``--from-literal``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import typer

from plat.errors import PlatError

MAX_VALUE = 1024**2  # what the daemon accepts (1 MiB)

secret_app = typer.Typer(
    help="Secrets: files at /var/plat/secrets/<name> in the functions that list them.",
    no_args_is_help=True,
)


def _name(name: str) -> str:
    """The checks a secret's name must pass to be a file name; the daemon has the rest."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise PlatError(
            f"{name!r} cannot name a secret", hint="use e.g. db-password (a-z, 0-9, '-')"
        )
    return name


def read_value(name: str, from_file: Path | None, from_literal: str | None) -> bytes:
    """The value from exactly one source: a file, a literal, or stdin (hidden prompt
    on a terminal). Raises PlatError for two sources, an unreadable file, an empty
    value or one over 1 MiB; never shows the value."""
    if from_file is not None and from_literal is not None:
        raise PlatError("give one of --from-file and --from-literal, not both")
    if from_literal is not None:
        value, where = from_literal.encode(), "--from-literal"
    elif from_file is not None:
        value, where = _read_file(from_file), str(from_file)
    elif sys.stdin.isatty():
        where = "the prompt"
        value = typer.prompt(f"value of {name}", hide_input=True, confirmation_prompt=True).encode()
    else:
        where = "stdin"
        value = sys.stdin.buffer.read(MAX_VALUE + 1)
        if value.endswith(b"\n"):
            from plat.console import err

            err.print(
                "[dim]note: the value read from stdin ends with a newline, which is kept "
                "(printf '%s' ... leaves it out)[/dim]"
            )
    if not value:
        raise PlatError(
            f"the value of {name} from {where} is empty",
            hint="pipe it in (printf '%s' \"$VALUE\" | plat secret set NAME) "
            "or use --from-file FILE",
        )
    if len(value) > MAX_VALUE:
        raise PlatError(f"the value of {name} from {where} is larger than 1 MiB")
    return value


def _read_file(path: Path) -> bytes:
    if path.is_dir():
        raise PlatError(f"--from-file {path} is a folder, not a file")
    try:
        with path.open("rb") as fh:
            return fh.read(MAX_VALUE + 1)
    except OSError as exc:
        raise PlatError(f"cannot read --from-file {path}: {exc.strerror or exc}") from None


@secret_app.command("set")
def set_(
    name: str = typer.Argument(..., help="The secret, e.g. db-password."),
    from_file: Path | None = typer.Option(
        None, "--from-file", help="Read the value from this file (its bytes, as they are)."
    ),
    from_literal: str | None = typer.Option(
        None,
        "--from-literal",
        help="The value itself. It lands in your shell history and shows in `ps`: "
        "prefer stdin or --from-file.",
    ),
) -> None:
    """Create or change a secret; the value comes from stdin unless a flag says otherwise.

    On a terminal, asks for it with hidden input. Functions that use the secret are
    rolled to the new value with zero failed requests.
    """
    from plat.connect import connect
    from plat.console import out

    _name(name)
    value = read_value(name, from_file, from_literal)
    data: dict[str, Any] = connect().send("PUT", f"/v1/secrets/{quote(name, safe='')}", value)
    verb = "created" if data.get("created") else "updated"
    rolled = data.get("rolled") or []
    out.print(f"[green]✓[/green] {verb} secret [bold]{name}[/bold] (revision {data['revision']})")
    if rolled:
        out.print(f"  rolled: {', '.join(rolled)}")
    elif not data.get("created"):
        out.print("  no function uses it")


def _ago(ts: float | None) -> str:
    from plat.units import format_duration

    return format_duration(max(0.0, time.time() - ts)) + " ago" if ts else "-"


@secret_app.command("ls")
def ls(as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts.")) -> None:
    """List the tenant's secrets (names, never values) and the functions using them."""
    from rich.table import Table

    from plat.connect import connect
    from plat.console import err, out

    secrets: list[dict[str, Any]] = connect().request("GET", "/v1/secrets")["secrets"]
    if as_json:
        out.print_json(json.dumps(secrets))
        return
    if not secrets:
        err.print("no secrets yet: `plat secret set NAME` (the value from stdin)")
        return
    table = Table(box=None, header_style="bold")
    for col in ("NAME", "REVISION", "UPDATED", "USED BY"):
        table.add_column(col)
    for s in secrets:
        table.add_row(
            s["name"],
            str(s.get("revision", "-")),
            _ago(s.get("updated_at")),
            ", ".join(s.get("used_by") or []) or "-",
        )
    out.print(table)


@secret_app.command("rm")
def rm(name: str = typer.Argument(..., help="The secret.")) -> None:
    """Remove a secret no function uses."""
    from plat.connect import connect
    from plat.console import out

    _name(name)
    try:
        connect().request("DELETE", f"/v1/secrets/{quote(name, safe='')}")
    except PlatError as exc:
        if exc.code == "secret_in_use" and not exc.hint:
            exc.hint = f"remove {name} from those functions' plat.yaml and redeploy them first"
        raise
    out.print(f"[green]✓[/green] removed secret {name}")


def register(app: typer.Typer) -> None:
    app.add_typer(secret_app, name="secret")
