"""An instance's secrets as files on the host, on tmpfs, for a backend to hand over.

One folder per instance under ``root``: ``<root>/<instance id>/<secret name>``.
The container backend bind-mounts that folder read-only at SECRETS_PATHS; the
process backend points ``PLAT_SECRETS_DIR`` at it. The files live on tmpfs so a
secret never reaches a disk (nor an image layer: the folder is mounted, never
copied), and only the instance's user can read them (folder 0500, files 0400).

A folder is written whole into a hidden temporary folder, then renamed into
place, so an instance never sees half of its secrets.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets as _random
import shutil
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from plat.daemon.drivers.secretvalue import Secrets
from plat.errors import PlatError

log = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".old-"
# tmpfs (and ramfs) keep files in memory only.
MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})
MOUNTS = Path("/proc/mounts")


class SecretFiles:
    """The folder holding one sub-folder of secret files per instance. Synchronous
    and small: a backend calls it from a thread or inline (a few tiny files)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        _own_folder(root)

    @staticmethod
    def default_root(
        home_root: Path,
        daemon_id: str,
        *,
        env: Mapping[str, str] | None = None,
        mounts: Path = MOUNTS,
    ) -> Path:
        """A place on tmpfs for this daemon's secret files: ``plat-<daemon_id>`` in
        ``$XDG_RUNTIME_DIR``, ``/dev/shm`` or ``/run``, the first that is a writable
        tmpfs (per ``/proc/mounts``). Without one, ``home_root/run/secrets``, with
        one warning: the files then sit on that disk while instances run."""
        env = os.environ if env is None else env
        table = _mount_table(mounts)
        candidates = [env.get("XDG_RUNTIME_DIR", ""), "/dev/shm", "/run"]
        for raw in candidates:
            if not raw:
                continue
            base = Path(raw)
            if base.is_dir() and os.access(base, os.W_OK | os.X_OK) and _in_memory(base, table):
                return base / f"plat-{daemon_id}"
        fallback = home_root / "run" / "secrets"
        log.warning(
            "no tmpfs found for secret files (tried %s): they are kept in %s, on disk, "
            "while instances run",
            ", ".join(c for c in candidates if c),
            fallback,
        )
        return fallback

    def path(self, instance_id: str) -> Path:
        return self.root / _checked_id(instance_id)

    def write(
        self, instance_id: str, secrets: Secrets, *, uid: int | None, gid: int | None
    ) -> Path | None:
        """Write ``secrets`` as files of ``instance_id``'s folder and return it; None
        (and no folder) when there are none. Files are 0400, the folder 0500, both
        owned by ``uid``:``gid`` when given (which takes root). Replaces a folder the
        instance had. Raises PlatError on a name that is not a plain file name."""
        target = self.path(instance_id)
        if not secrets:
            self.remove(instance_id)
            return None
        for name in secrets:
            _checked_name(name)
        _own_folder(self.root)
        staging = self.root / f"{TMP_PREFIX}{instance_id}-{_random.token_hex(4)}"
        os.mkdir(staging, 0o700)
        try:
            for name, value in secrets.items():
                _write_file(staging / name, value.reveal(), uid, gid)
            if uid is not None or gid is not None:
                os.chown(staging, -1 if uid is None else uid, -1 if gid is None else gid)
            os.chmod(staging, 0o500)
            self._replace(staging, target)
        except BaseException:
            _rmtree(staging)
            raise
        return target

    def _replace(self, staging: Path, target: Path) -> None:
        """Rename ``staging`` to ``target``; an existing ``target`` goes first (a
        directory cannot be renamed over a non-empty one)."""
        if os.path.lexists(target):
            trash = self.root / f"{TRASH_PREFIX}{target.name}-{_random.token_hex(4)}"
            os.rename(target, trash)
            os.rename(staging, target)
            _rmtree(trash)
        else:
            os.rename(staging, target)

    def remove(self, instance_id: str) -> None:
        """Delete the instance's folder; idempotent."""
        _rmtree(self.path(instance_id))

    def sweep(self, keep: Iterable[str]) -> None:
        """Delete the folders of instances not in ``keep`` (left by a daemon that
        died), and any half-written folder."""
        kept = set(keep)
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.name not in kept:
                _rmtree(Path(entry.path))

    def discard(self) -> None:
        """Remove every instance's folder and the root itself (the backend closes and
        no instance of it outlives the daemon); idempotent."""
        self.sweep(keep=())
        with contextlib.suppress(FileNotFoundError, OSError):
            os.rmdir(self.root)


def _own_folder(path: Path) -> None:
    """Create ``path`` (0700) or accept an existing one only if it is a real folder
    of ours: in a world-writable place (/dev/shm) another user could have made it
    first, or left a link to elsewhere."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise PlatError(
            f"{path} is not a folder of this user (a link, a file or another user's); "
            "plat will not keep secrets there",
            hint=f"remove {path} and start the daemon again",
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)


def _write_file(path: Path, data: bytes, uid: int | None, gid: int | None) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o400)
    try:
        os.fchmod(fd, 0o400)  # whatever the umask
        if uid is not None or gid is not None:
            os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _rmtree(path: Path) -> None:
    """Remove a folder of secret files, although it is read-only (0500) to us."""
    with contextlib.suppress(FileNotFoundError):
        if os.path.islink(path) or not os.path.isdir(path):
            os.unlink(path)
            return
        os.chmod(path, 0o700)
        shutil.rmtree(path, ignore_errors=True)


def _checked_id(instance_id: str) -> str:
    if not _plain(instance_id) or instance_id.startswith("."):
        raise PlatError(f"{instance_id!r} is not a valid instance id")
    return instance_id


def _checked_name(name: str) -> None:
    if not _plain(name) or name.startswith("."):
        raise PlatError(
            f"{name[:64]!r} is not a valid secret name: it must be a plain file name",
            hint="use lowercase letters, digits, '.', '_' and '-' (e.g. db-password)",
        )


def _plain(name: str) -> bool:
    return bool(name) and len(name) <= 255 and "/" not in name and "\0" not in name


def _mount_table(mounts: Path) -> list[tuple[str, str]]:
    """(mount point, filesystem type) of each line of ``/proc/mounts``, in order."""
    try:
        text = mounts.read_text()
    except OSError:
        return []
    table = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            # /proc/mounts escapes a space in a path as \040.
            point = fields[1].encode().decode("unicode_escape")
            table.append((point, fields[2]))
    return table


def _in_memory(path: Path, table: list[tuple[str, str]]) -> bool:
    """Whether the mount holding ``path`` is tmpfs: the longest mount point that
    contains it, the last mounted one on a tie."""
    real = os.path.realpath(path)
    best, kind = "", ""
    for point, fstype in table:
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fstype
    return kind in MEMORY_FILESYSTEMS
