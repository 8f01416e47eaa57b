"""`plat runtime bootstrap`: build local base images from Debian packages."""

from __future__ import annotations

import time

import typer

from plat.commands.init import runtimes


def bootstrap_command(
    names: list[str] = typer.Argument(
        None, help="Runtimes to bootstrap; all with a bootstrap section when omitted."
    ),
    force: bool = typer.Option(
        False, "--force", help="Rebuild the image and its cached root filesystem."
    ),
) -> None:
    """Build each runtime's base image from Debian packages, for hosts without a registry.

    A no-op for images already present. Prints each image name on stdout.
    """
    from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

    from plat.baseimages import bootstrap, bootstrappable, image_exists
    from plat.console import err

    runtimes = bootstrappable(names or [])
    if not runtimes:
        err.print("no runtime has a bootstrap section")
        return
    for runtime in runtimes:
        boot = runtime.bootstrap
        if boot is not None and not force and image_exists(boot.image):
            err.print(f"[green]ok[/green] {runtime.name}: {boot.image} (already present)")
            typer.echo(boot.image)
            continue
        started = time.monotonic()
        with Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.fields[runtime]}[/bold]"),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=err,
            transient=True,
        ) as progress:
            task = progress.add_task("starting", total=None, runtime=runtime.name)

            def report(line: str, task: TaskID = task, progress: Progress = progress) -> None:
                progress.update(task, description=line[:100])

            image = bootstrap(runtime, force=force, progress=report)
        elapsed = time.monotonic() - started
        err.print(f"[green]ok[/green] {runtime.name}: {image} ({elapsed:.1f}s)")
        typer.echo(image)


def register(app: typer.Typer) -> None:
    """Add the ``runtime`` group: ``bootstrap``, and ``ls`` (the same as ``plat runtimes``)."""
    group = typer.Typer(
        name="runtime",
        help="Runtimes and their base images (`plat runtime ls` = `plat runtimes`).",
        no_args_is_help=True,
    )
    group.command("bootstrap")(bootstrap_command)
    group.command("ls", help="List the runtimes (same as `plat runtimes`).")(runtimes)
    app.add_typer(group, name="runtime")
