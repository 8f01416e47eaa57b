"""What a render or a cluster deploy starts from: the manifest (a folder's plat.yaml
or the deployed function's, as the daemon keeps it) and the image (given, or the
latest push of the function's current version).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from plat.errors import PlatError
from plat.k8s.mapping import Release, version_of_image
from plat.k8s.registry import PushRecord
from plat.manifest import MANIFEST_NAME, Manifest, load_manifest, validate_manifest
from plat.tenancy import DEFAULT_TENANT

if TYPE_CHECKING:
    from plat.client import DaemonClient

NAMESPACE_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def check_namespace(namespace: str) -> str:
    """``namespace`` if it can name a Kubernetes namespace (a DNS label); else PlatError."""
    if not NAMESPACE_RE.fullmatch(namespace):
        raise PlatError(
            f"{namespace[:80]!r} is not a namespace name: 1-63 lowercase letters, digits "
            "and '-', starting and ending with a letter or digit"
        )
    return namespace


@dataclass(frozen=True)
class Source:
    manifest: Manifest
    where: str  # said to the user: which plat.yaml this is


def from_folder(folder: Path) -> Source:
    manifest = load_manifest(folder)
    return Source(manifest, str(folder.resolve() / MANIFEST_NAME))


def from_daemon(described: dict[str, Any]) -> Source:
    """The deployed function's manifest, with its `plat scale` override applied."""
    data = dict(described["manifest"])
    override = described.get("scale_override") or {}
    if override:
        data["scale"] = {**(data.get("scale") or {}), **override}
    name = str(described["name"])
    manifest = validate_manifest(data, source=f"the deployed {name}")
    return Source(manifest, f"the deployed {name} (version {described.get('version') or '-'})")


def folder_names(folder: Path, name: str) -> bool:
    """Whether ``folder`` holds the plat.yaml of function ``name``."""
    path = folder / MANIFEST_NAME
    if not path.is_file():
        return False
    try:
        return load_manifest(folder).name == name
    except PlatError:
        return False


def describe(client: DaemonClient, name: str) -> dict[str, Any]:
    return dict(client.request("GET", f"/v1/functions/{quote(name, safe='')}"))


def latest_push(client: DaemonClient, name: str, version: str | None) -> PushRecord:
    """The newest push of ``name``'s ``version``; PlatError saying how to push it."""
    pushes: list[PushRecord] = client.request("GET", f"/v1/functions/{quote(name, safe='')}/pushes")
    for record in pushes:
        if record.get("version") == version:
            return record
    how = f"`plat push {name} --registry HOST[:PORT]`, or pass --image"
    if pushes:
        raise PlatError(
            f"{name} version {version} was not pushed (the last push was version "
            f"{pushes[0].get('version')}: {pushes[0].get('reference')})",
            hint=how,
        )
    raise PlatError(f"{name} has not been pushed to a registry", hint=how)


def release(
    manifest: Manifest,
    *,
    image: str,
    version: str | None,
    namespace: str | None,
    tenant: str | None,
    default_namespace: str = "default",
) -> Release:
    """Where it goes: --namespace, else the tenant's own namespace, else the kube
    context's (``default_namespace``)."""
    tenant = tenant or DEFAULT_TENANT
    if namespace is None:
        namespace = tenant if tenant != DEFAULT_TENANT else default_namespace
    check_namespace(namespace)
    if not image.strip() or any(c.isspace() for c in image) or len(image) > 1024:
        raise PlatError(f"{image[:80]!r} is not an image reference")
    return Release(
        manifest=manifest,
        image=image,
        namespace=namespace,
        version=version or version_of_image(image),
        tenant=tenant,
    )
