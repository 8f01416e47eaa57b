"""plat.archive: packing a function folder, and unpacking hostile archives safely."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from plat.archive import ArchiveError, Limits, extract, pack_bytes
from plat.ignore import IGNORE_FILE, UnsafeFolderError


def member(
    name: str,
    data: bytes = b"",
    *,
    kind: bytes = tarfile.REGTYPE,
    link: str = "",
    mode: int = 0o644,
    size: int | None = None,
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = mode
    info.size = len(data) if size is None else size
    return info, data


def archive(*members: tuple[tarfile.TarInfo, bytes], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt) as tar:
        for info, data in members:
            if info.isreg():
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return gzip.compress(raw.getvalue())


def unpack(data: bytes, dest: Path, limits: Limits | None = None) -> int:
    return extract(io.BytesIO(data), dest, limits)


def refused(data: bytes, tmp_path: Path, limits: Limits | None = None) -> str:
    dest = tmp_path / "dest"
    with pytest.raises(ArchiveError) as info:
        unpack(data, dest, limits)
    assert not dest.exists(), "a refused archive leaves nothing behind"
    return info.value.message


def tree(root: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = (path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
    return out


# pack


def test_pack_round_trip_honours_platignore_and_keeps_links(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "lib").mkdir(parents=True)
    (src / "handler.py").write_text("def handle(e, c):\n    return 1\n")
    (src / "lib" / "util.py").write_text("X = 1\n")
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o700)
    (src / "alias.py").symlink_to("lib/util.py")
    (src / "debug.log").write_text("noise")
    (src / "secret.env").write_text("KEY=1")
    (src / IGNORE_FILE).write_text("secret.env\n")
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "x.pyc").write_bytes(b"\0")
    data = pack_bytes(src)
    assert pack_bytes(src) == data  # deterministic
    assert unpack(data, tmp_path / "dest") == 5
    assert tree(tmp_path / "dest") == {
        IGNORE_FILE: (b"secret.env\n", 0o644),
        "alias.py": ("link", "lib/util.py"),
        "handler.py": (b"def handle(e, c):\n    return 1\n", 0o644),
        "run.sh": (b"#!/bin/sh\n", 0o755),
        "lib": "dir",
        "lib/util.py": (b"X = 1\n", 0o644),
    }


def test_pack_refuses_links_out_of_the_folder(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "shadow").symlink_to("/etc/shadow")
    with pytest.raises(UnsafeFolderError, match="shadow -> /etc/shadow"):
        pack_bytes(src)


# extract: what is refused


@pytest.mark.parametrize(
    ("members", "words"),
    [
        ([member("/etc/evil", b"x")], "absolute"),
        ([member("../evil", b"x")], "'..'"),
        ([member("a/../../evil", b"x")], "'..'"),
        ([member("a/b/../../../evil", b"x")], "'..'"),
        ([member("ok/..", kind=tarfile.DIRTYPE)], "'..'"),
        ([member("C:/evil", b"x")], "absolute"),
        ([member("link", kind=tarfile.SYMTYPE, link="/etc/shadow")], "absolute path"),
        ([member("link", kind=tarfile.SYMTYPE, link="../outside")], "leaves the folder"),
        ([member("a/link", kind=tarfile.SYMTYPE, link="../../outside")], "leaves the folder"),
        ([member("link", kind=tarfile.SYMTYPE, link="")], "empty link target"),
        ([member("hard", kind=tarfile.LNKTYPE, link="/etc/passwd")], "absolute"),
        ([member("hard", kind=tarfile.LNKTYPE, link="../x")], "'..'"),
        ([member("hard", kind=tarfile.LNKTYPE, link="missing")], "not a file earlier"),
        ([member("dev", kind=tarfile.CHRTYPE)], "a device file"),
        ([member("blk", kind=tarfile.BLKTYPE)], "a device file"),
        ([member("fifo", kind=tarfile.FIFOTYPE)], "a FIFO"),
        ([member("a", b"1"), member("a", b"2")], "given twice"),
        ([member("a", b"1"), member("a", kind=tarfile.DIRTYPE)], "given twice"),
        ([member("a", b"1"), member("a/b", b"2")], "not a folder"),
        ([member("x" * 300, b"1")], "too long"),
        ([member("/".join(["d"] * 3000), b"1")], "too long"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_hostile_members_are_refused(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes]], words: str
) -> None:
    assert words in refused(archive(*members), tmp_path)


def test_writing_through_a_link_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    # The link itself stays inside; the file after it would be written through it.
    data = archive(
        member("sub", kind=tarfile.DIRTYPE),
        member("sub/up", kind=tarfile.SYMTYPE, link=".."),
        member("sub/up/evil", b"x"),
    )
    assert "not a folder" in refused(data, tmp_path)
    assert list(outside.iterdir()) == []


def test_a_link_chain_leaving_the_folder_is_refused(tmp_path: Path) -> None:
    # Each link looks inside on its own: "s" is the folder, "t/u" is "t/../s/..".
    data = archive(
        member("s", kind=tarfile.SYMTYPE, link="."),
        member("t", kind=tarfile.DIRTYPE),
        member("t/u", kind=tarfile.SYMTYPE, link="../s/.."),
    )
    assert "leaves the folder through other links" in refused(data, tmp_path)


def test_a_link_replacing_an_existing_file_is_refused(tmp_path: Path) -> None:
    data = archive(member("a", b"1"), member("a", kind=tarfile.SYMTYPE, link="/etc/passwd"))
    assert refused(data, tmp_path)


def test_existing_destination_is_refused(tmp_path: Path) -> None:
    (tmp_path / "dest").mkdir()
    with pytest.raises(FileExistsError):
        unpack(archive(member("a", b"1")), tmp_path / "dest")


def test_size_limit_counts_declared_and_real_bytes(tmp_path: Path) -> None:
    limits = Limits(max_bytes=1000, max_members=100)
    data = archive(member("a", b"x" * 600), member("b", b"y" * 600))
    assert "more than 1000 bytes" in refused(data, tmp_path, limits)
    assert unpack(archive(member("a", b"x" * 1000)), tmp_path / "ok", limits) == 1


def test_member_count_limit(tmp_path: Path) -> None:
    data = archive(*(member(f"f{i}", b"") for i in range(11)))
    assert "more than 10 members" in refused(data, tmp_path, Limits(max_members=10))


def test_gzip_bomb_is_refused(tmp_path: Path) -> None:
    # 64 MiB of zeros in one member compresses to ~64 KiB.
    bomb = archive(member("zeros", b"\0" * (64 * 1024 * 1024)))
    assert len(bomb) < 1024 * 1024
    assert "more than" in refused(bomb, tmp_path, Limits(max_bytes=1024 * 1024))


def test_oversized_pax_header_is_cut_off(tmp_path: Path) -> None:
    info = tarfile.TarInfo("a")
    info.pax_headers = {"comment": "z" * (2 * 1024 * 1024)}
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(b""))
    data = gzip.compress(raw.getvalue())
    assert "more than" in refused(data, tmp_path, Limits(max_bytes=1024, max_members=2))


@pytest.mark.parametrize(
    "data",
    [b"", b"not gzip at all", gzip.compress(b"not a tar" * 100), b"\x1f\x8b\x08\x00trunc"],
    ids=["empty", "not-gzip", "not-tar", "truncated-gzip"],
)
def test_garbage_is_a_clear_error(tmp_path: Path, data: bytes) -> None:
    message = refused(data, tmp_path)
    assert "not a readable tar.gz archive" in message


def test_truncated_member_is_refused(tmp_path: Path) -> None:
    whole = gzip.decompress(archive(member("a", b"x" * 5000)))
    assert refused(gzip.compress(whole[:2000]), tmp_path)


# extract: what is accepted


def test_modes_are_normalised_and_setuid_dropped(tmp_path: Path) -> None:
    data = archive(
        member("suid", b"x", mode=0o4755),
        member("private", b"y", mode=0o600),
        member("world", b"z", mode=0o666),
    )
    unpack(data, tmp_path / "dest")
    modes = {k: v[1] for k, v in tree(tmp_path / "dest").items() if isinstance(v, tuple)}
    assert modes == {"suid": 0o755, "private": 0o644, "world": 0o644}


def test_links_inside_and_hard_links_to_earlier_files_are_kept(tmp_path: Path) -> None:
    data = archive(
        member("./", kind=tarfile.DIRTYPE),
        member("./lib/util.py", b"X = 1\n"),
        member("alias.py", kind=tarfile.SYMTYPE, link="lib/util.py"),
        member("lib/self", kind=tarfile.SYMTYPE, link="."),
        member("lib/up", kind=tarfile.SYMTYPE, link="../alias.py"),
        member("copy.py", kind=tarfile.LNKTYPE, link="lib/util.py"),
        member("dangling", kind=tarfile.SYMTYPE, link="nowhere"),
    )
    assert unpack(data, tmp_path / "dest") == 7
    dest = tmp_path / "dest"
    assert (dest / "alias.py").read_text() == "X = 1\n"
    assert (dest / "lib" / "up").read_text() == "X = 1\n"
    assert (dest / "copy.py").stat().st_ino == (dest / "lib" / "util.py").stat().st_ino


def test_gnu_and_ustar_formats(tmp_path: Path) -> None:
    for fmt in (tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT):
        dest = tmp_path / f"d{fmt}"
        long = "deep/" * 30 + "file.txt"
        members = [member(long if fmt == tarfile.GNU_FORMAT else "a/b.txt", b"ok")]
        assert unpack(archive(*members, fmt=fmt), dest) == 1
