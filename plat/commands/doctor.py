"""`plat doctor`: check this host and print how to fix what is missing."""

from __future__ import annotations

import json
import os

import typer

from plat.errors import PlatError
from plat.paths import Home

_MARKS = {True: "[green]ok[/green]", False: "[red]FAIL[/red]", None: "[yellow]warn[/yellow]"}


def doctor(
    as_json: bool = typer.Option(False, "--json", help="Print the checks and facts as JSON."),
) -> None:
    """Check what this host can run (engine, buildah, base images, daemon) and how to fix it.

    Exits 1 when a check fails; warnings do not count.
    """
    from rich.table import Table

    from plat.config import load_config
    from plat.console import out
    from plat.doctor.checks import failed, judge
    from plat.doctor.facts import facts_to_json
    from plat.doctor.host import gather_facts

    env = dict(os.environ)
    home = Home.from_env(env)
    config_error = ""
    try:
        configured = load_config(home, env).engine_host
    except PlatError as exc:
        # A broken config is one more finding, not a reason to skip the others.
        configured, config_error = env.get("PLAT_ENGINE_HOST"), str(exc)
    facts = gather_facts(home, env, configured)
    facts.config_error = config_error
    checks = judge(facts)
    if as_json:
        payload = {
            "ok": not failed(checks),
            "checks": [
                {"name": c.name, "ok": c.ok, "detail": c.detail, "fix": c.fix} for c in checks
            ],
            "facts": facts_to_json(facts),
        }
        typer.echo(json.dumps(payload, indent=2))
    else:
        table = Table(show_lines=False, box=None, pad_edge=False)
        table.add_column("", no_wrap=True)
        table.add_column("check", style="bold", no_wrap=True)
        table.add_column("detail")
        with_fixes = any(check.fix for check in checks)
        if with_fixes:
            table.add_column("fix", style="cyan")
        for check in checks:
            row = [_MARKS[check.ok], check.name, check.detail]
            if with_fixes:
                row.append(check.fix)
            table.add_row(*row)
        out.print(table, markup=True)
        bad = sum(1 for c in checks if c.ok is False)
        warn = sum(1 for c in checks if c.ok is None)
        out.print(
            f"\n{bad} failing, {warn} warning(s)" if bad or warn else "\nall checks passed",
            highlight=False,
        )
    if failed(checks):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
