"""``plat deploy [PATH]``: build the function's image and serve it."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import typer

from plat.api import DoneEvent, ErrorEvent, FunctionSummary, deploy_event
from plat.errors import BuildError, PlatError


def _fail(event: ErrorEvent) -> None:
    from rich.markup import escape

    from plat.console import err

    tail = event.get("log_tail")
    if tail:
        err.print("[dim]--- build log (last lines) ---[/dim]")
        err.print(escape(tail), highlight=False)
        err.print("[dim]------------------------------[/dim]")
    cls = BuildError if event.get("error") == "build_failed" else PlatError
    raise cls(str(event.get("message", "deploy failed")), hint=event.get("hint"))


def deploy(
    path: Path = typer.Argument(Path("."), help="The function's folder (holding plat.yaml)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show the full build log."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if the code is unchanged."),
) -> None:
    """Build the function in PATH and serve it through the gateway.

    Unchanged code is not rebuilt; the new version takes traffic only once ready,
    and the old one keeps serving if anything fails.
    """
    from rich.markup import escape

    from plat.connect import connect
    from plat.console import err, out
    from plat.ignore import scan
    from plat.manifest import load_manifest
    from plat.units import format_duration

    started = time.monotonic()
    manifest = load_manifest(path)  # validated here, before anything is sent
    scan(path)  # links that leave the folder, special files (the daemon checks again)
    client = connect()
    done: DoneEvent | None = None
    function: FunctionSummary | None = None
    with err.status(f"building {manifest.name}...", spinner="dots") as status:
        for data in client.stream(
            "POST", "/v1/functions", {"path": str(path.resolve()), "force": force}
        ):
            event = deploy_event(data)
            if event["type"] == "log":
                line = event["line"]
                if verbose:
                    err.print(f"[dim]{escape(line)}[/dim]", highlight=False)
                elif line.startswith("STEP "):
                    status.update(f"building {manifest.name}: {escape(line[:90])}")
            elif event["type"] == "built":
                what = "unchanged, reused" if event["cached"] else "built"
                err.print(
                    f"[green]✓[/green] image {escape(event['image'])} {what} "
                    f"in {format_duration(event['seconds'])}"
                )
                status.update(f"starting {manifest.name}...")
            elif event["type"] == "event":
                if verbose:
                    err.print(f"[dim]{escape(event['message'])}[/dim]")
            elif event["type"] == "error":
                status.stop()
                _fail(event)
            elif event["type"] == "done":
                done = event
            elif event["type"] == "function":
                function = event["function"]
    if done is None or function is None:
        raise PlatError("the daemon ended the deploy without a result; see `plat daemon status`")
    fn = function
    elapsed = time.monotonic() - started
    out.print(
        f"[green]✓[/green] deployed [bold]{fn['name']}[/bold] version {fn['version']} "
        f"in {format_duration(elapsed)} (ready in {format_duration(done['ready_seconds'])})"
    )
    url = fn["url"] or ""  # a deployed function always has one
    out.print(f"  URL:  {url}")
    if fn["auth"] == "public":
        out.print(f"  curl: curl {shlex.quote(url)}")
    else:
        out.print(f"  curl: curl -u admin:$(plat auth password) {shlex.quote(url)}")
    out.print(f'  or:   plat invoke {fn["name"]} -d \'{{"name": "Ada"}}\'')


def register(app: typer.Typer) -> None:
    app.command()(deploy)
