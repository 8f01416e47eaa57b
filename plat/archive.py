"""A function folder as a tar.gz, and back: what a deploy over HTTP uploads.

``pack`` writes the folder's entries as ``plat.ignore`` selects them
(`.platignore` and the link rule: regular files, and links that stay inside),
with neutral owners and modes. ``extract`` unpacks an archive from anyone into a
new folder and refuses, with an ArchiveError naming the member: absolute names,
``..``, device files and FIFOs, links (symbolic or hard) that leave the folder,
writing through a link, a name given twice, and more than ``max_members``
members or ``max_bytes`` of content. Nothing it writes is ever outside the
folder, and on any error the folder is removed.
"""

from __future__ import annotations

import gzip
import io
import os
import posixpath
import shutil
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from plat.errors import PlatError
from plat.ignore import open_regular, scan

MAX_BYTES = 256 * 1024**2
MAX_MEMBERS = 20_000
MAX_NAME = 4096
MAX_PART = 255
# Headers (and pax records) a member may add to the decompressed stream beyond its content.
HEADER_ALLOWANCE = 64 * 1024
CHUNK = 1 << 20


class ArchiveError(PlatError):
    """An uploaded archive that cannot be unpacked safely."""

    code = "invalid_archive"


@dataclass(frozen=True)
class Limits:
    max_bytes: int = MAX_BYTES
    max_members: int = MAX_MEMBERS


def pack(folder: Path, out: BinaryIO) -> int:
    """Write ``folder``'s entries to ``out`` as a tar.gz; returns how many.

    Raises UnsafeFolderError (see plat.ignore) before writing anything when the
    folder holds links that leave it or special files.
    """
    entries = scan(folder)
    with (
        gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for entry in entries:
            info = tarfile.TarInfo(entry.path.as_posix())
            if entry.link is not None:
                info.type = tarfile.SYMTYPE
                info.linkname = entry.link
                info.mode = 0o777
                tar.addfile(info)
                continue
            with open_regular(folder, entry.path) as fh:
                st = os.fstat(fh.fileno())
                info.size = st.st_size
                info.mode = 0o755 if st.st_mode & 0o111 else 0o644
                info.mtime = int(st.st_mtime)
                tar.addfile(info, fh)
    return len(entries)


def pack_bytes(folder: Path) -> bytes:
    buffer = io.BytesIO()
    pack(folder, buffer)
    return buffer.getvalue()


class _Budget(io.RawIOBase):
    """Reads the decompressed stream, refusing past ``limit`` bytes (a gzip bomb)."""

    def __init__(self, inner: BinaryIO, limit: int) -> None:
        self.inner = inner
        self.limit = limit
        self.used = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.inner.read(len(buffer))
        self.used += len(data)
        if self.used > self.limit:
            raise ArchiveError(
                f"the archive unpacks to more than {self.limit} bytes",
                hint="leave build outputs and dependencies out with .platignore",
            )
        buffer[: len(data)] = data
        return len(data)


def member_parts(name: str, what: str = "name") -> list[str]:
    """The path components of an archive member's name; ArchiveError when it is
    absolute, goes up (``..``), holds a NUL or is too long."""
    if "\0" in name:
        raise ArchiveError(f"archive member {name!r}: NUL in its {what}")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"archive member {name!r}: absolute {what}")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"archive member {name!r}: '..' in its {what}")
    if len(name.encode(errors="surrogateescape")) > MAX_NAME or any(
        len(part.encode(errors="surrogateescape")) > MAX_PART for part in parts
    ):
        raise ArchiveError(f"archive member {name[:80]!r}...: {what} too long")
    return parts


def _check_link(name: str, parts: list[str], target: str) -> None:
    if not target or "\0" in target:
        raise ArchiveError(f"archive member {name!r}: empty link target or NUL in it")
    if target.startswith("/"):
        raise ArchiveError(f"archive member {name!r}: link to the absolute path {target!r}")
    joined = posixpath.normpath(posixpath.join(*parts[:-1], target) if parts[:-1] else target)
    if joined == ".." or joined.startswith("../"):
        raise ArchiveError(f"archive member {name!r}: link to {target!r} leaves the folder")


class _Writer:
    """Creates members below ``root`` through directory descriptors, never following links."""

    def __init__(self, root: Path, limits: Limits) -> None:
        self.root = root
        self.limits = limits
        self.written = 0
        self.regular: set[str] = set()
        self.links: list[str] = []
        self.fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)

    def close(self) -> None:
        os.close(self.fd)

    @contextmanager
    def parent(self, name: str, parts: list[str]) -> Iterator[int]:
        fd = os.dup(self.fd)
        try:
            for part in parts[:-1]:
                with suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
                try:
                    inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except OSError:
                    raise ArchiveError(
                        f"archive member {name!r}: {part!r} on its path is not a folder "
                        "(a file or a link of the archive)"
                    ) from None
                os.close(fd)
                fd = inner
            yield fd
        finally:
            os.close(fd)

    def directory(self, name: str, parts: list[str]) -> None:
        with self.parent(name, parts) as fd:
            try:
                os.mkdir(parts[-1], 0o755, dir_fd=fd)
            except FileExistsError:
                try:
                    os.close(
                        os.open(parts[-1], os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                    )
                except OSError:
                    raise ArchiveError(f"archive member {name!r}: given twice") from None

    def file(self, name: str, parts: list[str], data: IO[bytes], size: int, mode: int) -> None:
        if self.written + size > self.limits.max_bytes:
            raise ArchiveError(
                f"the archive holds more than {self.limits.max_bytes} bytes of files (at {name!r})",
                hint="leave build outputs and dependencies out with .platignore",
            )
        with self.parent(name, parts) as fd:
            leaf = self._create(name, parts[-1], fd, 0o755 if mode & 0o111 else 0o644)
            with os.fdopen(leaf, "wb") as out:
                copied = 0
                while chunk := data.read(min(CHUNK, size - copied)):
                    copied += len(chunk)
                    out.write(chunk)
                    if copied >= size:
                        break
        self.written += size
        self.regular.add("/".join(parts))

    def symlink(self, name: str, parts: list[str], target: str) -> None:
        _check_link(name, parts, target)
        with self.parent(name, parts) as fd:
            try:
                os.symlink(target, parts[-1], dir_fd=fd)
            except FileExistsError:
                raise ArchiveError(f"archive member {name!r}: given twice") from None
        self.links.append("/".join(parts))

    def hardlink(self, name: str, parts: list[str], target: str) -> None:
        source = member_parts(target, "link target")
        if "/".join(source) not in self.regular:
            raise ArchiveError(
                f"archive member {name!r}: hard link to {target!r}, "
                "which is not a file earlier in the archive"
            )
        with self.parent(target, source) as src_fd, self.parent(name, parts) as dst_fd:
            try:
                os.link(
                    source[-1],
                    parts[-1],
                    src_dir_fd=src_fd,
                    dst_dir_fd=dst_fd,
                    follow_symlinks=False,
                )
            except FileExistsError:
                raise ArchiveError(f"archive member {name!r}: given twice") from None

    def _create(self, name: str, leaf: str, fd: int, mode: int) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        try:
            created = os.open(leaf, flags, mode, dir_fd=fd)
        except FileExistsError:
            raise ArchiveError(f"archive member {name!r}: given twice") from None
        os.fchmod(created, mode)  # not narrowed by the umask
        return created

    def check_links(self) -> None:
        """Every link, followed through the others, must end inside the folder."""
        real_root = os.path.realpath(self.root)
        for name in self.links:
            resolved = os.path.realpath(self.root / name)
            if resolved != real_root and not resolved.startswith(real_root + os.sep):
                raise ArchiveError(
                    f"archive member {name!r}: link {os.readlink(self.root / name)!r} "
                    "leaves the folder through other links"
                )


def extract(source: BinaryIO, dest: Path, limits: Limits | None = None) -> int:
    """Unpack the tar.gz ``source`` into ``dest`` (which must not exist); returns how
    many members. Raises ArchiveError (``dest`` removed) for anything unsafe or broken.
    """
    limits = limits or Limits()
    dest.mkdir(parents=False, exist_ok=False)
    writer = _Writer(dest, limits)
    budget = limits.max_bytes + limits.max_members * HEADER_ALLOWANCE
    count = 0
    try:
        with (
            gzip.GzipFile(fileobj=source, mode="rb") as gz,
            io.BufferedReader(_Budget(gz, budget)) as stream,  # type: ignore[arg-type]
            tarfile.open(fileobj=stream, mode="r|") as tar,
        ):
            for member in tar:
                count += 1
                if count > limits.max_members:
                    raise ArchiveError(f"the archive has more than {limits.max_members} members")
                _extract_member(tar, member, writer)
        writer.check_links()
    except ArchiveError:
        _discard(writer, dest)
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error, UnicodeError) as exc:
        _discard(writer, dest)
        raise ArchiveError(f"not a readable tar.gz archive: {exc}") from None
    except BaseException:
        _discard(writer, dest)
        raise
    writer.close()
    return count


def _discard(writer: _Writer, dest: Path) -> None:
    with suppress(OSError):
        writer.close()
    shutil.rmtree(dest, ignore_errors=True)


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, writer: _Writer) -> None:
    name = member.name
    parts = member_parts(name)
    if not parts:
        if member.isdir():
            return  # the folder itself ("./")
        raise ArchiveError(f"archive member {name!r}: no name")
    if member.isdir():
        writer.directory(name, parts)
    elif member.isreg():
        data = tar.extractfile(member)
        if data is None:
            raise ArchiveError(f"archive member {name!r}: no content")
        writer.file(name, parts, data, member.size, member.mode)
    elif member.issym():
        writer.symlink(name, parts, member.linkname)
    elif member.islnk():
        writer.hardlink(name, parts, member.linkname)
    else:
        kind = "a FIFO" if member.isfifo() else "a device file" if member.isdev() else "special"
        raise ArchiveError(f"archive member {name!r}: {kind}, not a file, folder or link")
