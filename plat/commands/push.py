"""``plat push NAME --registry HOST[:PORT][/prefix]``: the function's image, to a registry."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import typer


def push(
    name: str = typer.Argument(..., help="The deployed function whose current image to push."),
    registry: str = typer.Option(
        ...,
        "--registry",
        "-r",
        help="Where to push: HOST[:PORT][/prefix], e.g. localhost:5000 or "
        "registry.example.com/team. The image goes to <registry>/NAME:VERSION.",
    ),
    tls_verify: bool = typer.Option(
        True,
        "--tls-verify/--no-tls-verify",
        help="Require HTTPS with a trusted certificate (--no-tls-verify: plain HTTP or "
        "a self-signed certificate, e.g. a registry on localhost).",
    ),
    authfile: Path | None = typer.Option(
        None,
        "--authfile",
        help="Credentials file (auth.json or ~/.docker/config.json format). Default: "
        "$REGISTRY_AUTH_FILE, then $XDG_RUNTIME_DIR/containers/auth.json, then "
        "~/.docker/config.json of the daemon's user (`podman login HOST` writes them).",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show buildah's whole output."),
) -> None:
    """Push the function's current image (by digest) to an OCI registry.

    Prints the pushed reference, REGISTRY/NAME:VERSION@sha256:..., which
    `plat k8s render` and `plat deploy --target k8s` then use.
    """
    from rich.markup import escape

    from plat.connect import connect
    from plat.console import err, out
    from plat.errors import PlatError
    from plat.k8s.registry import PushRecord, parse_registry

    body: dict[str, object] = {"registry": parse_registry(registry), "tls_verify": tls_verify}
    client = connect()
    if authfile is not None:
        if client.remote:
            raise PlatError(
                "--authfile names a file here, but the daemon is at PLAT_URL",
                hint="the remote daemon pushes with its own credentials; drop --authfile",
            )
        path = authfile.expanduser().resolve()
        if not path.is_file() or not os.access(path, os.R_OK):
            raise PlatError(f"--authfile {authfile} is not a readable file")
        body["authfile"] = str(path)
    pushed: PushRecord | None = None
    with err.status(f"pushing {name}...", spinner="dots") as status:
        for event in client.stream("POST", f"/v1/functions/{quote(name, safe='')}/push", body):
            kind = event.get("type")
            if kind == "phase":
                status.update(escape(str(event.get("message", ""))))
            elif kind == "log":
                line = str(event.get("line", ""))
                if verbose:
                    err.print(f"[dim]{escape(line)}[/dim]", highlight=False)
                elif line.startswith(("Copying", "Writing")):
                    status.update(f"pushing {escape(name)}: {escape(line[:90])}")
            elif kind == "error":
                status.stop()
                raise PlatError(
                    str(event.get("message", "push failed")), hint=event.get("hint") or None
                )
            elif kind == "pushed":
                pushed = event["push"]
    if pushed is None:
        raise PlatError("the daemon ended the push without a result; see `plat daemon status`")
    err.print(f"[green]✓[/green] pushed {escape(name)} version {pushed['version']}")
    out.print(pushed["reference"], highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command()(push)
