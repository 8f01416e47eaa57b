"""A version's files laid into a pool instance's folders: hard links, not copies."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from plat.daemon.drivers.versions import Layout


def make_folders(folder: Path) -> None:
    """The (empty) ``app`` and ``deps`` folders a pool instance mounts."""
    for sub in ("app", "deps"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for path in (folder, folder / "app", folder / "deps"):
        os.chmod(path, 0o755)


def link_layout(layout: Layout, folder: Path) -> None:
    """Hard-link the version's files into an instance's (empty, mounted) folders."""
    _link_tree(layout.app, folder / "app")
    if layout.deps is not None:
        _link_tree(layout.deps, folder / "deps")


def _link_tree(source: Path, target: Path) -> None:
    """Hard links of every file of ``source`` under the existing folder ``target``.

    Falls back to copying across filesystems. Symbolic links stay links.
    """
    for dirpath, dirnames, filenames in os.walk(source):
        rel = os.path.relpath(dirpath, source)
        dest = target if rel == "." else target / rel
        for name in dirnames:
            src = os.path.join(dirpath, name)
            if os.path.islink(src):
                os.symlink(os.readlink(src), dest / name)
            else:
                (dest / name).mkdir()
                os.chmod(dest / name, 0o755)
        for name in filenames:
            src = os.path.join(dirpath, name)
            if os.path.islink(src):
                os.symlink(os.readlink(src), dest / name)
                continue
            try:
                os.link(src, dest / name)
            except OSError:
                shutil.copy2(src, dest / name)
