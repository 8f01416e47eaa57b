"""``plat dev [PATH]``: deploy, then redeploy on every save with zero failed requests."""

from __future__ import annotations

from pathlib import Path

import typer

from plat.errors import PlatError


def dev(
    path: Path = typer.Argument(Path("."), help="The function's folder (holding plat.yaml)."),
    backend: str | None = typer.Option(
        None,
        "--backend",
        "-b",
        help="container or process (no isolation, fastest); starts the daemon with it.",
    ),
) -> None:
    """Watch PATH and hot-redeploy on every save; stream the function's logs inline.

    A code-only change is served from a fresh container of the same image with the
    new code mounted read-only (no build); a dependency change builds the image.
    Each new version takes traffic only once ready; a broken save keeps the
    previous version serving. Ctrl-C stops watching and leaves the last good
    version deployed.
    """
    if backend is not None and backend not in ("container", "process"):
        raise PlatError(f"unknown backend {backend!r}", hint="use container or process")
    from plat.connect import connect
    from plat.console import err
    from plat.devloop import DevSession
    from plat.manifest import load_manifest

    manifest = load_manifest(path)
    client = connect(backend=backend)
    if client.remote:
        raise PlatError(
            "plat dev mounts the folder into the daemon's instances: it works with the "
            "daemon on this machine, not with one at PLAT_URL",
            hint="unset PLAT_URL for plat dev, or `plat deploy` to the remote daemon",
        )
    session = DevSession(client, path, manifest.name, err)
    if not session.deploy(dev=False):
        err.print("[yellow]fix the error and save: plat dev keeps watching[/yellow]")
    session.follow_logs()
    err.print(f"[dim]watching {session.folder} (Ctrl-C to stop)[/dim]")
    session.watch()
    if session.serving:
        err.print(
            f"stopped watching; {manifest.name} version {session.serving} keeps serving "
            f"at {session.url}"
        )
    else:
        err.print("stopped watching")


def register(app: typer.Typer) -> None:
    app.command()(dev)
