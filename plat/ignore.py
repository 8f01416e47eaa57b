"""Which files of a function folder are part of it: `.platignore` (gitignore syntax).

The same rules select the files that go into a build and, for `plat dev`, the
changes that trigger a reload.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pathspec

IGNORE_FILE = ".platignore"
ALWAYS_IGNORED = (
    ".git/",
    ".hg/",
    "__pycache__/",
    "*.pyc",
    "node_modules/",
    ".venv/",
    ".DS_Store",
    "*.swp",
    "*.swx",
    "*~",
    ".#*",
)


class IgnoreRules:
    """``.platignore`` (plus any ``extra_files``, e.g. ``.gitignore`` for the watcher)."""

    def __init__(self, root: Path, extra_files: tuple[str, ...] = ()) -> None:
        self.root = root
        lines = list(ALWAYS_IGNORED)
        for name in (IGNORE_FILE, *extra_files):
            path = root / name
            if path.is_file():
                lines += path.read_text(errors="replace").splitlines()
        self._spec = pathspec.GitIgnoreSpec.from_lines(lines)

    def ignored(self, relative: str, is_dir: bool = False) -> bool:
        return self._spec.match_file(relative + "/" if is_dir else relative)

    def files(self) -> Iterator[Path]:
        """Relative paths of the files that belong to the function, sorted."""
        for dirpath, dirnames, filenames in os.walk(self.root):
            base = Path(dirpath).relative_to(self.root)
            dirnames[:] = sorted(
                d for d in dirnames if not self.ignored((base / d).as_posix(), is_dir=True)
            )
            for name in sorted(filenames):
                rel = base / name
                if not self.ignored(rel.as_posix()) and (self.root / rel).is_file():
                    yield rel


def digest_files(root: Path, files: list[Path], extra: bytes = b"") -> str:
    """A sha256 over relative paths, modes and contents of ``files`` plus ``extra``."""
    h = hashlib.sha256(extra)
    for rel in files:
        path = root / rel
        h.update(rel.as_posix().encode() + b"\0" + str(path.stat().st_size).encode() + b"\0")
        h.update(b"x" if os.access(path, os.X_OK) else b"-")
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 16), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()
