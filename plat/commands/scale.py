"""``plat scale NAME``: instance limits and per-instance concurrency, at run time."""

from __future__ import annotations

import typer

from plat.errors import PlatError


def scale(
    name: str = typer.Argument(..., help="The function."),
    min_: int | None = typer.Option(
        None, "--min", help="Instances always kept (0: scale to zero)."
    ),
    max_: int | None = typer.Option(None, "--max", help="Most instances the autoscaler starts."),
    concurrency: int | None = typer.Option(
        None, "--concurrency", "-c", help="Most requests one instance handles at once."
    ),
    reset: bool = typer.Option(False, "--reset", help="Go back to what plat.yaml says."),
) -> None:
    """Change NAME's scale settings now; kept across daemon restarts and redeploys.

    With no option, prints the current settings. `--reset` drops what `plat scale`
    set and goes back to plat.yaml's `scale:`.
    """
    from plat.connect import connect
    from plat.console import out

    client = connect()
    if min_ is None and max_ is None and concurrency is None and not reset:
        fn = client.request("GET", f"/v1/functions/{name}")
        s = fn["manifest"]["scale"]
        out.print(f"{name}: min {s['min']}, max {s['max']}, concurrency {s['concurrency']}")
        return
    for label, value in (("--min", min_), ("--max", max_), ("--concurrency", concurrency)):
        if value is not None and value < 0:
            raise PlatError(f"{label} must not be negative")
    body = {"min": min_, "max": max_, "concurrency": concurrency, "reset": reset}
    data = client.request("PATCH", f"/v1/functions/{name}/scale", body)
    s = data["scale"]
    out.print(
        f"[green]✓[/green] {name}: min {s['min']}, max {s['max']}, concurrency {s['concurrency']}"
    )


def register(app: typer.Typer) -> None:
    app.command()(scale)
