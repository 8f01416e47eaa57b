"""Function folders written for a benchmark."""

from __future__ import annotations

import textwrap
from pathlib import Path


def write_python_function(
    root: Path,
    name: str,
    handler: str,
    *,
    manifest_extra: str = "",
    requirements: str | None = None,
) -> Path:
    """A python function folder ``root/name`` (plat.yaml, handler.py, requirements.txt)."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plat.yaml").write_text(
        f"name: {name}\nruntime: python\nhandler: handler.handle\n"
        + textwrap.dedent(manifest_extra)
    )
    (folder / "handler.py").write_text(textwrap.dedent(handler).lstrip())
    if requirements is not None:
        (folder / "requirements.txt").write_text(requirements)
    return folder


def write_node_function(root: Path, name: str, handler: str, *, manifest_extra: str = "") -> Path:
    """A node function folder ``root/name`` (plat.yaml, handler.js; no npm packages)."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plat.yaml").write_text(
        f"name: {name}\nruntime: node\nhandler: handler.js\n" + textwrap.dedent(manifest_extra)
    )
    (folder / "handler.js").write_text(textwrap.dedent(handler).lstrip())
    return folder
