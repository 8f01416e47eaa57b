"""Kubernetes objects as one multi-document YAML text, ready for ``kubectl apply -f``.

Secret values are never part of it: a function with secrets gets a comment that
names the Secret and the ``kubectl create secret`` command that makes it.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from typing import Any

import yaml

from plat.k8s.mapping import Release, secret_name


class _Dumper(yaml.SafeDumper):
    """No anchors and aliases (``&id001``): a value used twice is written twice."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _dump(obj: dict[str, Any]) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1000)


def secret_hint(release: Release) -> str | None:
    """The command that creates the function's Secret (values from files), or None."""
    refs = release.manifest.secrets
    if not refs:
        return None
    files = " ".join(f"--from-file={ref.name}=./{ref.name}" for ref in refs)
    name = secret_name(release.manifest.name)
    return f"kubectl -n {shlex.quote(release.namespace)} create secret generic {name} {files}"


def render(release: Release, objects: Iterable[dict[str, Any]]) -> str:
    """``objects`` as YAML documents, after a comment saying what made them."""
    m = release.manifest
    head = [
        f"# {m.name}: rendered by `plat k8s render` from its plat.yaml",
        f"# image: {release.image}",
    ]
    hint = secret_hint(release)
    if hint:
        names = ", ".join(ref.name for ref in m.secrets)
        head += [
            f"# secrets ({names}) are read from the Secret {secret_name(m.name)}, "
            "which this file does not hold; create it first:",
            f"#   {hint}",
        ]
    body = "---\n".join(_dump(obj) for obj in objects)
    return "\n".join(head) + "\n---\n" + body
