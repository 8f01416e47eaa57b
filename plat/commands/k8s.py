"""``plat k8s render NAME``; the cluster side of ``plat deploy --target k8s`` and
``plat rm --target k8s`` (called from plat/commands/deploy.py and functions.py).

The manifest is the folder's plat.yaml (--path, or the current folder when its
plat.yaml names NAME), else the deployed function's as the daemon keeps it; the
image is --image, else the latest `plat push` of the function's current version.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from plat.k8s.apply import Cluster
    from plat.k8s.mapping import Release
    from plat.k8s.source import Source

k8s_app = typer.Typer(
    name="k8s",
    help="Kubernetes and Knative: render a function as manifests (see docs/kubernetes.md).",
    no_args_is_help=True,
)

DEFAULT_WAIT = 180.0


def _image_for(
    name: str, image: str | None, described: dict[str, Any] | None = None
) -> tuple[str, str | None, str | None]:
    """(image, version, tenant): --image as given (no daemon needed), else the latest
    push of the deployed function's current version."""
    from plat.connect import connect
    from plat.errors import PlatError
    from plat.k8s.source import describe, latest_push

    if image is not None:
        tenant = (described or {}).get("tenant") or os.environ.get("PLAT_TENANT") or None
        return image, None, tenant
    client = connect()
    if described is None:
        try:
            described = describe(client, name)
        except PlatError as exc:
            if exc.status != 404:
                raise
            raise PlatError(
                f"{name} is not deployed here, so plat knows no pushed image of it",
                hint=f"`plat deploy`, then `plat push {name} --registry HOST[:PORT]`; "
                "or pass --image REF",
            ) from None
    record = latest_push(client, name, described.get("version"))
    return record["reference"], record["version"], described.get("tenant")


def _source(name: str, path: Path | None) -> tuple[Source, dict[str, Any] | None]:
    from plat.connect import connect
    from plat.errors import PlatError
    from plat.k8s.source import describe, folder_names, from_daemon, from_folder

    if path is not None:
        source = from_folder(path)
        if source.manifest.name != name:
            raise PlatError(
                f"{source.where} is the manifest of {source.manifest.name}, not {name}",
                hint=f"`plat k8s render {source.manifest.name} --path {path}`",
            )
        return source, None
    if folder_names(Path.cwd(), name):
        return from_folder(Path.cwd()), None
    described = describe(connect(), name)
    return from_daemon(described), described


@k8s_app.command("render")
def render(
    name: str = typer.Argument(..., help="The function."),
    knative: bool = typer.Option(False, "--knative", help="A Knative Service instead."),
    namespace: str | None = typer.Option(
        None, "--namespace", "-n", help="Default: the tenant's name, else `default`."
    ),
    image: str | None = typer.Option(
        None, "--image", help="The image reference (default: the latest `plat push`)."
    ),
    path: Path | None = typer.Option(
        None,
        "--path",
        help="The function's folder. Default: the current folder when its plat.yaml "
        "names NAME, else the deployed function's manifest.",
    ),
) -> None:
    """Print the function as Kubernetes YAML: Deployment + Service + HPA, or --knative.

    One `kubectl apply -f` away: `plat k8s render hello > hello.yaml`. Secret values
    are never printed: a function with secrets names the Secret to create.
    """
    from plat.console import err, out
    from plat.k8s.mapping import documents
    from plat.k8s.render import render as render_yaml
    from plat.k8s.source import release

    source, described = _source(name, path)
    ref, version, tenant = _image_for(name, image, described)
    rel = release(source.manifest, image=ref, version=version, namespace=namespace, tenant=tenant)
    out.print(render_yaml(rel, documents(rel, knative=knative)), end="", highlight=False)
    err.print(f"[dim]rendered from {source.where}; image {ref}[/dim]", highlight=False)


def _apply_all(cluster: Cluster, rel: Release, *, knative: bool) -> list[dict[str, Any]]:
    from plat.console import err
    from plat.k8s.mapping import documents

    docs = documents(rel, knative=knative)
    if not knative:
        hpa = cluster.hpa_version()
        for doc in docs:
            if doc["kind"] == "HorizontalPodAutoscaler":
                doc["apiVersion"] = hpa
    applied = []
    for doc in docs:
        applied.append(cluster.apply(doc))
        what = f"{doc['kind']} {doc['metadata']['name']} ({doc['apiVersion']})"
        err.print(f"[green]✓[/green] applied {what}")
    return applied


def _warn_secret(cluster: Cluster, rel: Release) -> None:
    from plat.console import err
    from plat.errors import PlatError
    from plat.k8s.mapping import secret_name
    from plat.k8s.render import secret_hint

    if not rel.manifest.secrets:
        return
    name = secret_name(rel.manifest.name)
    try:
        present = cluster.get("v1", "Secret", name, rel.namespace) is not None
    except PlatError:  # not allowed to read Secrets: say nothing rather than guess
        return
    if not present:
        err.print(
            f"[yellow]warning:[/yellow] the Secret {name} does not exist in {rel.namespace}: "
            f"pods wait for it. Create it (plat never copies secret values):\n  {secret_hint(rel)}"
        )


def _reach(rel: Release, obj: dict[str, Any], *, knative: bool) -> list[str]:
    from plat.k8s.mapping import SERVICE_PORT, object_name

    name, ns = object_name(rel.manifest.name), rel.namespace
    if knative:
        url = (obj.get("status") or {}).get("url")
        return [f"  URL:  {url}"] if url else [f"  URL:  kubectl -n {ns} get ksvc {name}"]
    local = f"kubectl -n {shlex.quote(ns)} port-forward service/{name} 8080:{SERVICE_PORT}"
    return [
        f"  in the cluster: http://{name}.{ns}.svc.cluster.local/",
        f"  from here:      {local}  then  curl http://127.0.0.1:8080/",
    ]


def _look(rel: Release, *, knative: bool) -> str:
    from plat.k8s.mapping import object_name

    ns, name = shlex.quote(rel.namespace), object_name(rel.manifest.name)
    kind = "ksvc" if knative else "deployment"
    return (
        f"`kubectl -n {ns} describe {kind} {name}`, "
        f"`kubectl -n {ns} get pods -l plat.function={rel.manifest.name}`"
    )


def deploy_to_cluster(
    path: Path,
    *,
    context: str | None,
    namespace: str | None,
    knative: bool,
    image: str | None,
    wait: bool,
    timeout: float,
) -> None:
    """`plat deploy --target k8s`: apply the folder's function to the cluster of the
    kube context, then wait for its rollout (unless ``wait`` is false)."""
    from plat.console import err, out
    from plat.k8s.apply import Cluster
    from plat.k8s.mapping import KNATIVE_API, object_name
    from plat.k8s.source import from_folder, release
    from plat.k8s.wait import wait_rollout

    source = from_folder(path)
    name = source.manifest.name
    ref, version, tenant = _image_for(name, image)
    cluster = Cluster.connect(context, os.environ)
    try:
        rel = release(
            source.manifest,
            image=ref,
            version=version,
            namespace=namespace,
            tenant=tenant,
            default_namespace=cluster.namespace,
        )
        err.print(
            f"[dim]deploying {name} from {source.where} to context {cluster.context!r}, "
            f"namespace {rel.namespace}; image {ref}[/dim]",
            highlight=False,
        )
        _warn_secret(cluster, rel)
        applied = _apply_all(cluster, rel, knative=knative)
        obj = applied[-1] if knative else next(a for a in applied if a["kind"] == "Deployment")
        if wait:
            api, kind = (KNATIVE_API, "Service") if knative else ("apps/v1", "Deployment")
            what = f"{'Knative Service' if knative else 'Deployment'} {object_name(name)}"
            with err.status(f"waiting for {what}...", spinner="dots") as status:
                obj = wait_rollout(
                    lambda: cluster.get(api, kind, object_name(name), rel.namespace),
                    api,
                    timeout=timeout,
                    progress=lambda shown: status.update(f"waiting for {what}: {shown}"),
                    where=f"{what} in namespace {rel.namespace}",
                    look=_look(rel, knative=knative),
                )
            out.print(f"[green]✓[/green] {name} is rolled out in {rel.namespace}")
        else:
            out.print(f"[green]✓[/green] applied {name} to {rel.namespace} (not waiting)")
        for line in _reach(rel, obj, knative=knative):
            out.print(line, highlight=False, soft_wrap=True)
    finally:
        cluster.close()


def remove_from_cluster(name: str, *, context: str | None, namespace: str | None) -> None:
    """`plat rm NAME --target k8s`: delete what plat applied for NAME (by its labels)."""
    from plat.console import out
    from plat.k8s.apply import Cluster
    from plat.k8s.source import check_namespace
    from plat.tenancy import DEFAULT_TENANT

    tenant = os.environ.get("PLAT_TENANT") or DEFAULT_TENANT
    cluster = Cluster.connect(context, os.environ)
    try:
        if namespace is None:
            namespace = tenant if tenant != DEFAULT_TENANT else cluster.namespace
        removed = cluster.remove(name, check_namespace(namespace), tenant)
    finally:
        cluster.close()
    out.print(f"[green]✓[/green] removed {name} from {namespace}: {', '.join(removed)}")


def register(app: typer.Typer) -> None:
    app.add_typer(k8s_app)
