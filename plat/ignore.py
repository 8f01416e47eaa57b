"""Which entries of a function folder are part of it: `.platignore` and the link rule.

The same rules select the files that go into a build, into a process artifact and
into an uploaded archive, and, for `plat dev`, the changes that trigger a reload.

The link rule: a symbolic link is kept, as a link, when it resolves (through
any chain of links) to an entry inside the folder that is itself part of the
function; it is rewritten to point there by a relative path, so it means the
same in every copy. A link that leaves the folder (an absolute path elsewhere,
``..`` past the top, a chain that ends outside, a link to a folder outside), a
link to something `.platignore` leaves out, and sockets, FIFOs and device files
are refused with one error naming each of them. A link to nothing inside the
folder (dangling) is left out. Nothing is ever read through a link:
``open_regular`` refuses them, so a folder changed after the check cannot make
plat read a file outside it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pathspec

from plat.errors import PlatError
from plat.paths import Home

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
    "*.log",
)
# How many offending entries one error lists.
LISTED_PROBLEMS = 20
LINK_HINT = (
    "plat copies regular files, and links that stay inside the function's folder. "
    'Replace a link with a copy of what it points to (`cp --remove-destination "$(readlink -f '
    'LINK)" LINK`), move its target into the folder, or list the entry in .platignore'
)


class UnsafeFolderError(PlatError):
    """The folder holds links that leave it, or files that are not regular files."""

    code = "unsafe_folder"


@dataclass(frozen=True)
class Entry:
    """One entry of a function: a regular file, or a link kept as a link.

    For a link, ``link`` is its target relative to the link's own folder (normalised:
    no chain, no ``..`` past the top), ``real`` the root-relative path it resolves
    to and ``to_dir`` whether that is a folder.
    """

    path: Path
    link: str | None = None
    real: Path | None = None
    to_dir: bool = False


def _kind(mode: int) -> str | None:
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    return None


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class IgnoreRules:
    """``.platignore`` (plus any ``extra_files``, e.g. ``.gitignore`` for the watcher).

    plat's own home (``$PLAT_HOME``: the credentials, the store) is never part of a
    function, even when it lies inside the function's folder."""

    def __init__(self, root: Path, extra_files: tuple[str, ...] = ()) -> None:
        self.root = root
        real_root = os.path.realpath(root)
        home = str(Home.from_env().root)
        self._home = os.path.relpath(home, real_root) if _inside(home, real_root) else None
        lines = list(ALWAYS_IGNORED)
        for name in (IGNORE_FILE, *extra_files):
            path = root / name
            # An ignore file that is a link out of the folder is not read (nor followed).
            if path.is_file() and _inside(os.path.realpath(path), real_root):
                lines += path.read_text(errors="replace").splitlines()
        self._spec = pathspec.GitIgnoreSpec.from_lines(lines)

    def ignored(self, relative: str, is_dir: bool = False) -> bool:
        return self._spec.match_file(relative + "/" if is_dir else relative)

    def excluded(self, relative: str, is_dir: bool = False) -> bool:
        """Whether ``relative`` or one of the folders above it is ignored."""
        parts = relative.split("/")
        for i in range(1, len(parts)):
            if self.ignored("/".join(parts[:i]), is_dir=True):
                return True
        return self.ignored(relative, is_dir=is_dir)

    def entries(self) -> list[Entry]:
        """The function's files and kept links, relative, sorted (a folder's files before
        its subfolders). Raises UnsafeFolderError naming every entry the link rule refuses."""
        real_root = os.path.realpath(self.root)
        found: list[Entry] = []
        problems: list[str] = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            base = Path(dirpath).relative_to(self.root)
            here: list[Entry] = []
            keep_dirs = []
            for name in dirnames:
                rel = base / name
                if os.path.islink(os.path.join(dirpath, name)):
                    filenames.append(name)  # a link to a folder: never walked into
                elif rel.as_posix() == self._home:
                    continue
                elif not self.ignored(rel.as_posix(), is_dir=True):
                    keep_dirs.append(name)
            dirnames[:] = sorted(keep_dirs)
            for name in sorted(filenames):
                rel = base / name
                full = os.path.join(dirpath, name)
                try:
                    mode = os.lstat(full).st_mode
                except OSError:
                    continue  # gone meanwhile
                is_link = stat.S_ISLNK(mode)
                if self.ignored(rel.as_posix(), is_dir=is_link and os.path.isdir(full)):
                    continue
                if is_link:
                    entry = self._link(rel, full, real_root, problems)
                    if entry is not None:
                        here.append(entry)
                elif stat.S_ISREG(mode):
                    here.append(Entry(rel))
                else:
                    problems.append(f"{rel.as_posix()} ({_kind(mode) or 'not a regular file'})")
            found += here
        if problems:
            raise _unsafe(self.root, problems)
        return found

    def files(self) -> list[Path]:
        """Relative paths of the entries (files and kept links); see ``entries``."""
        return [entry.path for entry in self.entries()]

    def _link(self, rel: Path, full: str, real_root: str, problems: list[str]) -> Entry | None:
        raw = os.readlink(full)
        resolved = os.path.realpath(full)
        shown = f"{rel.as_posix()} -> {raw}"
        if not _inside(resolved, real_root):
            where = "" if resolved == raw else f", resolves to {resolved}"
            problems.append(f"{shown} (leaves the folder{where})")
            return None
        if not os.path.lexists(resolved) or os.path.islink(resolved):
            return None  # dangling (or a loop): points at nothing
        real = Path(os.path.relpath(resolved, real_root))
        to_dir = os.path.isdir(resolved)
        if real.as_posix() != "." and self.excluded(real.as_posix(), is_dir=to_dir):
            problems.append(f"{shown} (points to {real.as_posix()}, which is ignored)")
            return None
        kind = _kind(os.lstat(resolved).st_mode)
        if kind is not None:
            problems.append(f"{shown} (points to {kind})")
            return None
        target = os.path.relpath(resolved, os.path.join(real_root, rel.parent))
        return Entry(rel, link=target, real=real, to_dir=to_dir)


def _unsafe(root: Path, problems: list[str]) -> UnsafeFolderError:
    count = len(problems)
    listed = problems[:LISTED_PROBLEMS]
    if count > LISTED_PROBLEMS:
        listed.append(f"... and {count - LISTED_PROBLEMS} more")
    noun = "entry" if count == 1 else "entries"
    return UnsafeFolderError(
        f"{root}: {count} {noun} cannot be part of a function:\n  " + "\n  ".join(listed),
        hint=LINK_HINT,
    )


def scan(root: Path) -> list[Entry]:
    """``IgnoreRules(root).entries()``: raises UnsafeFolderError."""
    return IgnoreRules(root).entries()


def open_regular(root: Path, relative: Path) -> BinaryIO:
    """Open the regular file ``root/relative`` for reading without following any link
    below ``root``; raises UnsafeFolderError if a part of the path is a link or the
    file is not a regular file."""
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
    parts = relative.parts
    fd = os.open(root, flags | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            try:
                inner = os.open(part, flags | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                raise _changed(root, relative, exc) from None
            os.close(fd)
            fd = inner
        try:
            # O_NONBLOCK: a FIFO put there meanwhile must not block the open.
            leaf = os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
        except OSError as exc:
            raise _changed(root, relative, exc) from None
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(leaf).st_mode):
        os.close(leaf)
        raise _changed(root, relative, None)
    os.set_blocking(leaf, True)
    return os.fdopen(leaf, "rb")


def _changed(root: Path, relative: Path, exc: OSError | None) -> UnsafeFolderError:
    why = f": {exc.strerror}" if exc is not None and exc.strerror else ""
    return UnsafeFolderError(
        f"{root / relative} is no longer a regular file inside the folder{why}",
        hint="the folder changed while plat read it; deploy again. " + LINK_HINT,
    )


def _as_entries(files: Iterable[Path | Entry]) -> Iterable[Entry]:
    for item in files:
        yield item if isinstance(item, Entry) else Entry(item)


def digest_files(root: Path, files: Sequence[Path | Entry], extra: bytes = b"") -> str:
    """A sha256 over relative paths, modes and contents of ``files`` plus ``extra``.

    A kept link counts as its path and target. Files are read without following links.
    """
    h = hashlib.sha256(extra)
    for entry in _as_entries(files):
        name = entry.path.as_posix().encode()
        if entry.link is not None:
            h.update(name + b"\0link\0" + entry.link.encode() + b"\0")
            continue
        with open_regular(root, entry.path) as fh:
            st = os.fstat(fh.fileno())
            h.update(name + b"\0" + str(st.st_size).encode() + b"\0")
            h.update(b"x" if st.st_mode & 0o111 else b"-")
            for chunk in iter(lambda: fh.read(1 << 16), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def copy_regular(root: Path, relative: Path, dest: Path) -> None:
    """Copy the regular file ``root/relative`` to ``dest`` (0755 if executable, else
    0644; modification time kept), reading it without following links."""
    with open_regular(root, relative) as src:
        st = os.fstat(src.fileno())
        dest.unlink(missing_ok=True)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        os.chmod(dest, 0o755 if st.st_mode & 0o111 else 0o644)
        os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))


def copy_entries(root: Path, entries: Iterable[Entry], dest: Path) -> None:
    """Recreate ``entries`` of ``root`` under the folder ``dest``: files copied, links
    made from their checked targets (never read through)."""
    for entry in entries:
        target = dest / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        if entry.link is None:
            copy_regular(root, entry.path, target)
            continue
        if entry.to_dir and entry.real is not None:
            (dest / entry.real).mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        os.symlink(entry.link, target)


def content_entry(entries: Iterable[Entry], name: str) -> Entry | None:
    """The regular file standing for ``name`` (itself, or what the kept link ``name``
    points to), or None when the function has no such file."""
    by_path = {entry.path.as_posix(): entry for entry in entries}
    entry = by_path.get(name)
    if entry is None or entry.link is None:
        return entry
    if entry.to_dir or entry.real is None:
        return None
    return by_path.get(entry.real.as_posix())


def content_entries(entries: Iterable[Entry], names: Iterable[str]) -> dict[str, Entry]:
    """``content_entry`` of each of ``names`` the function has (dependency files)."""
    listed = list(entries)
    found = {name: content_entry(listed, name) for name in names}
    return {name: entry for name, entry in found.items() if entry is not None}
