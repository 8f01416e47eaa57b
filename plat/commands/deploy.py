"""``plat deploy [PATH]``: build the function's image and serve it."""

from __future__ import annotations

import shlex
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from plat.api import DoneEvent, ErrorEvent, FunctionSummary, deploy_event
from plat.errors import BuildError, PlatError
from plat.tenancy import DEFAULT_TENANT

if TYPE_CHECKING:
    from rich.status import Status

    from plat.client import DaemonClient

PROGRESS_FROM = 4 * 1024**2  # uploads from this size show their progress
MAX_NAME_READ = 64 * 1024  # plat.yaml's own limit is checked where it is validated
NAME_SHOWN = 63  # a valid name's longest


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
    target: str = typer.Option(
        "local",
        "--target",
        help="local: this machine's daemon. k8s: the cluster of a kube context, with the "
        "image `plat push` pushed (see docs/kubernetes.md).",
    ),
    context: str | None = typer.Option(None, "--context", help="k8s: the kube context."),
    namespace: str | None = typer.Option(
        None, "--namespace", "-n", help="k8s: default: the tenant's name, else the context's."
    ),
    knative: bool = typer.Option(False, "--knative", help="k8s: a Knative Service."),
    image: str | None = typer.Option(
        None, "--image", help="k8s: this image instead of the latest `plat push`."
    ),
    wait: bool = typer.Option(
        True, "--wait/--no-wait", help="k8s: wait until the rollout is available."
    ),
    wait_timeout: float = typer.Option(
        180.0, "--wait-timeout", min=1, help="k8s: seconds to wait for the rollout."
    ),
) -> None:
    """Build the function in PATH and serve it through the gateway.

    Unchanged code is not rebuilt; the new version takes traffic only once ready,
    and the old one keeps serving if anything fails. With --target k8s, apply it
    to a Kubernetes cluster instead (server-side apply, field manager plat).
    """
    if target not in ("local", "k8s"):
        raise typer.BadParameter(f"{target!r}: use local or k8s", param_hint="--target")
    if target == "k8s":
        from plat.commands.k8s import deploy_to_cluster

        deploy_to_cluster(
            path,
            context=context,
            namespace=namespace,
            knative=knative,
            image=image,
            wait=wait,
            timeout=wait_timeout,
        )
        return
    k8s_only = {"--context": context, "--namespace": namespace, "--image": image}
    given = [flag for flag, value in k8s_only.items() if value is not None]
    if knative:
        given.append("--knative")
    if given:
        verb = "needs" if len(given) == 1 else "need"
        raise typer.BadParameter(f"{', '.join(given)} {verb} --target k8s", param_hint="--target")
    from rich.markup import escape

    from plat.connect import connect, gateway, running_local
    from plat.console import err, out
    from plat.ignore import scan
    from plat.units import format_duration

    started = time.monotonic()
    running = running_local()
    if running is None or not (path / "plat.yaml").is_file():
        # Validated here, before a daemon is started, an upload is sent or a folder
        # without plat.yaml (a home folder, say) is scanned.
        from plat.manifest import load_manifest

        name = load_manifest(path).name
    else:
        # The running daemon validates plat.yaml with the same code before anything
        # else, and its error names what is wrong; the CLI is spared pydantic's import
        # (about half of its CPU time per deploy).
        name = _declared_name(path)
    scan(path)  # links that leave the folder, special files (the daemon checks again)
    client = running or connect()
    done: DoneEvent | None = None
    function: FunctionSummary | None = None
    with err.status(f"building {name}...", spinner="dots") as status:
        if client.remote:
            events = _upload(client, path, force, name, status)
        else:
            events = client.stream(
                "POST", "/v1/functions", {"path": str(path.resolve()), "force": force}
            )
        for data in events:
            event = deploy_event(data)
            if event["type"] == "log":
                line = event["line"]
                if verbose:
                    err.print(f"[dim]{escape(line)}[/dim]", highlight=False)
                elif line.startswith("STEP "):
                    status.update(f"building {name}: {escape(line[:90])}")
            elif event["type"] == "built":
                what = "unchanged, reused" if event["cached"] else "built"
                err.print(
                    f"[green]✓[/green] image {escape(event['image'])} {what} "
                    f"in {format_duration(event['seconds'])}"
                )
                status.update(f"starting {name}...")
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
    tenant = str(fn.get("tenant") or DEFAULT_TENANT)
    url = fn["url"] or ""  # a deployed function always has one
    if client.remote:  # the daemon's idea of its URL may not be how this machine reaches it
        url = gateway(client).function_url(fn["name"], tenant)
    out.print(f"  URL:  {url}")
    if fn["auth"] == "public":
        out.print(f"  curl: curl {shlex.quote(url)}")
    elif client.remote:
        out.print(f'  curl: curl -H "Authorization: Bearer $PLAT_TOKEN" {shlex.quote(url)}')
    else:
        out.print(f"  curl: curl -u admin:$(plat auth password) {shlex.quote(url)}")
    flag = f"--tenant {tenant} " if tenant != DEFAULT_TENANT and not client.remote else ""
    out.print(f'  or:   plat {flag}invoke {fn["name"]} -d \'{{"name": "Ada"}}\'')


def _declared_name(folder: Path) -> str:
    """The ``name`` plat.yaml declares, escaped for the status line: the folder's name
    when the file cannot be read as a mapping with a name (the daemon says why)."""
    import yaml
    from rich.markup import escape

    name: object = None
    try:
        with (folder / "plat.yaml").open("rb") as fh:
            text = fh.read(MAX_NAME_READ + 1)
        if len(text) <= MAX_NAME_READ:
            data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
            name = data.get("name") if isinstance(data, dict) else None
    except (OSError, yaml.YAMLError, ValueError):
        pass
    if not isinstance(name, str) or not name:
        name = folder.resolve().name
    return escape(name[:NAME_SHOWN])


def _upload(
    client: DaemonClient, folder: Path, force: bool, name: str, status: Status
) -> Iterator[dict[str, Any]]:
    """The deploy over HTTP: the folder packed as a tar.gz (plat.archive) and uploaded,
    with its progress on the status line; the daemon's events as the socket gives them."""
    from plat.archive import MAX_BYTES, pack
    from plat.console import err

    status.update(f"packing {name}...")
    with tempfile.TemporaryFile(prefix="plat-deploy-") as fh:
        files = pack(folder, fh)
        size = fh.tell()
        if size > MAX_BYTES:
            raise PlatError(
                f"{folder} packs to {_mib(size)}, more than the {_mib(MAX_BYTES)} a deploy uploads",
                hint="leave build outputs and dependencies out with .platignore",
            )
        fh.seek(0)
        err.print(f"[dim]uploading {name}: {files} files, {_mib(size)} packed[/dim]")

        def progress(sent: int) -> None:
            if size >= PROGRESS_FROM:
                status.update(
                    f"uploading {name}: {_mib(sent)} of {_mib(size)} ({sent * 100 // size} %)"
                )
            if sent >= size:
                status.update(f"building {name}...")

        query = f"?force={int(force)}&dev=0"
        yield from client.upload(
            "POST", "/v1/functions" + query, fh, size, "application/gzip", progress=progress
        )


def _mib(size: int) -> str:
    return f"{size / 1024**2:.1f} MiB" if size >= 100 * 1024 else f"{size / 1024:.1f} KiB"


def register(app: typer.Typer) -> None:
    app.command()(deploy)
