"""Property tests of plat.archive.extract: any archive, however hostile, is unpacked
inside its folder or refused with an ArchiveError; nothing is ever written outside,
and nothing unpacked leads outside.

Fast by default; PLAT_FUZZ_PROFILE=long runs many more examples (tests/fuzzing.py).
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from plat.archive import ArchiveError, Limits, extract
from tests.fuzzing import fuzz_settings

FAST = fuzz_settings("archive", fast=200, long=2000)
LIMITS = Limits(max_bytes=4096, max_members=12)
ABS = "{ABS}"  # replaced by the absolute path of a folder beside the destination

parts = st.sampled_from(["a", "b", "..", ".", "", "x y", "ü", "\\", "c:", ABS, "link", "d"])
names = st.lists(parts, min_size=1, max_size=5).map("/".join) | st.sampled_from(
    [ABS + "/evil", "/etc/evil", "../evil", "./a", "a/", "a//b", "..", "."]
)
kinds = st.sampled_from(
    [
        tarfile.REGTYPE,
        tarfile.AREGTYPE,
        tarfile.DIRTYPE,
        tarfile.SYMTYPE,
        tarfile.LNKTYPE,
        tarfile.CHRTYPE,
        tarfile.BLKTYPE,
        tarfile.FIFOTYPE,
        tarfile.CONTTYPE,
    ]
)
members = st.tuples(
    names,
    kinds,
    names,  # link target
    st.binary(max_size=64),
    st.integers(min_value=0, max_value=0o7777),
)


def build(spec: list[tuple[str, bytes, str, bytes, int]], outside: Path, fmt: int) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt) as tar:
        for name, kind, link, data, mode in spec:
            info = tarfile.TarInfo(name.replace(ABS, str(outside)))
            info.type = kind
            info.linkname = link.replace(ABS, str(outside))
            info.mode = mode
            if info.isreg():
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return gzip.compress(raw.getvalue())


def snapshot(root: Path) -> dict[str, tuple[int, bytes | str]]:
    out: dict[str, tuple[int, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st_ = path.lstat()
            body: bytes | str = ""
            if stat.S_ISREG(st_.st_mode):
                body = path.read_bytes()
            elif stat.S_ISLNK(st_.st_mode):
                body = os.readlink(path)
            out[str(path.relative_to(root))] = (st_.st_mode, body)
    return out


def check_extract(data: bytes, box: Path) -> None:
    outside = box / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "sentinel").write_text("untouched")
    dest = box / "dest"
    before = snapshot(box)
    try:
        extract(io.BytesIO(data), dest, LIMITS)
    except ArchiveError as exc:
        assert exc.message
        assert not dest.exists()
    else:
        real = os.path.realpath(dest)
        total = 0
        for dirpath, dirnames, filenames in os.walk(dest):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                mode = path.lstat().st_mode
                assert stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)
                assert not mode & (stat.S_ISUID | stat.S_ISGID)
                resolved = os.path.realpath(path)
                assert resolved == real or resolved.startswith(real + os.sep), path
                if stat.S_ISREG(mode):
                    total += path.lstat().st_size
        assert total <= LIMITS.max_bytes * LIMITS.max_members  # hard links share bytes
    after = {k: v for k, v in snapshot(box).items() if not k.startswith("dest")}
    assert after == before, "something outside the destination changed"


@FAST
@given(
    st.lists(members, max_size=8),
    st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT]),
)
def test_hostile_members(spec: list[tuple[str, bytes, str, bytes, int]], fmt: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        box = Path(tmp)
        outside = box / "outside"
        check_extract(build(spec, outside, fmt), box)


@FAST
@given(
    st.lists(members, min_size=1, max_size=5),
    st.integers(min_value=0, max_value=4000),
    st.binary(min_size=1, max_size=16),
)
def test_corrupted_archives(
    spec: list[tuple[str, bytes, str, bytes, int]], at: int, junk: bytes
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        box = Path(tmp)
        raw = gzip.decompress(build(spec, box / "outside", tarfile.PAX_FORMAT))
        at = min(at, len(raw))
        check_extract(gzip.compress(raw[:at] + junk + raw[at + len(junk) :]), box)


@FAST
@given(st.binary(max_size=600))
def test_any_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        check_extract(data, Path(tmp))
