"""plat.ignore: which files belong to a function (.platignore) and their digest."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from plat.ignore import IGNORE_FILE, IgnoreRules, digest_files


def write(root: Path, rel: str, content: str = "x", mode: int | None = None) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    if mode is not None:
        path.chmod(mode)
    return path


def listed(root: Path) -> list[str]:
    return [p.as_posix() for p in IgnoreRules(root).files()]


def test_ignore_rules_emit_no_deprecation_warning(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        IgnoreRules(tmp_path)


def test_default_ignores(tmp_path: Path) -> None:
    for rel in [
        "handler.py",
        "requirements.txt",
        "lib/util.py",
        ".git/config",
        ".git/objects/ab/cdef",
        ".hg/store",
        "__pycache__/handler.cpython-311.pyc",
        "lib/__pycache__/util.cpython-311.pyc",
        "stray.pyc",
        "node_modules/left-pad/index.js",
        "web/node_modules/x/index.js",
        ".venv/bin/python",
        ".DS_Store",
        "lib/.DS_Store",
        ".handler.py.swp",
        ".handler.py.swx",
        "handler.py~",
        ".#handler.py",
    ]:
        write(tmp_path, rel)
    assert listed(tmp_path) == ["handler.py", "requirements.txt", "lib/util.py"]


def test_files_are_sorted_and_relative(tmp_path: Path) -> None:
    for rel in ["b.py", "a.py", "z/y.py", "c/d.py"]:
        write(tmp_path, rel)
    files = list(IgnoreRules(tmp_path).files())
    assert all(not p.is_absolute() for p in files)
    # Files of a folder come before its subfolders; both sorted by name.
    assert [p.as_posix() for p in files] == ["a.py", "b.py", "c/d.py", "z/y.py"]


def test_empty_folder(tmp_path: Path) -> None:
    assert listed(tmp_path) == []


@pytest.mark.parametrize(
    ("rel", "is_dir", "ignored"),
    [
        (".git", True, True),
        ("__pycache__", True, True),
        ("node_modules", True, True),
        ("node_modules", False, False),  # a *file* called node_modules is kept
        ("src", True, False),
        ("x.swp", False, True),
        ("handler.py", False, False),
    ],
)
def test_ignored(tmp_path: Path, rel: str, is_dir: bool, ignored: bool) -> None:
    assert IgnoreRules(tmp_path).ignored(rel, is_dir=is_dir) is ignored


def test_platignore_patterns(tmp_path: Path) -> None:
    write(tmp_path, IGNORE_FILE, "# comment\n\n*.log\nsecrets.env\n/only-root.txt\n")
    for rel in [
        "handler.py",
        "debug.log",
        "sub/trace.log",
        "secrets.env",
        "sub/secrets.env",
        "only-root.txt",
        "sub/only-root.txt",
    ]:
        write(tmp_path, rel)
    assert listed(tmp_path) == [IGNORE_FILE, "handler.py", "sub/only-root.txt"]


def test_platignore_negation(tmp_path: Path) -> None:
    write(tmp_path, IGNORE_FILE, "*.log\n!keep.log\n")
    for rel in ["a.log", "keep.log", "sub/keep.log", "sub/b.log"]:
        write(tmp_path, rel)
    assert listed(tmp_path) == [IGNORE_FILE, "keep.log", "sub/keep.log"]


def test_platignore_directories(tmp_path: Path) -> None:
    write(tmp_path, IGNORE_FILE, "build/\ndocs/**/*.md\n")
    for rel in [
        "build/out.bin",
        "src/build/gen.py",
        "build.py",
        "docs/a/readme.md",
        "docs/a/pic.png",
    ]:
        write(tmp_path, rel)
    assert listed(tmp_path) == [IGNORE_FILE, "build.py", "docs/a/pic.png"]


def test_platignore_can_ignore_itself(tmp_path: Path) -> None:
    write(tmp_path, IGNORE_FILE, ".platignore\n")
    write(tmp_path, "handler.py")
    assert listed(tmp_path) == ["handler.py"]


def test_negation_cannot_reinclude_a_file_in_an_ignored_dir(tmp_path: Path) -> None:
    # gitignore semantics: once a folder is excluded its files are never visited.
    write(tmp_path, IGNORE_FILE, "vendor/\n!vendor/keep.py\n")
    write(tmp_path, "vendor/keep.py")
    assert listed(tmp_path) == [IGNORE_FILE]


def test_symlinked_dir_not_followed_and_broken_link_skipped(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside, "secret.txt")
    fn = tmp_path / "fn"
    write(fn, "handler.py")
    (fn / "linkdir").symlink_to(outside, target_is_directory=True)
    (fn / "dangling").symlink_to(tmp_path / "nowhere")
    assert listed(fn) == ["handler.py"]


# digest_files


def digest(root: Path) -> str:
    return digest_files(root, list(IgnoreRules(root).files()))


def test_digest_is_stable(tmp_path: Path) -> None:
    write(tmp_path, "handler.py", "def handle(e, c):\n    return 'hi'\n")
    write(tmp_path, "lib/util.py", "X = 1\n")
    first = digest(tmp_path)
    assert digest(tmp_path) == first
    assert len(first) == 64
    int(first, 16)


def test_digest_is_independent_of_location_and_mtime(tmp_path: Path) -> None:
    for root in (tmp_path / "a", tmp_path / "b"):
        write(root, "handler.py", "print(1)\n")
    os.utime(tmp_path / "b" / "handler.py", (0, 0))
    assert digest(tmp_path / "a") == digest(tmp_path / "b")


def test_digest_ignores_ignored_files(tmp_path: Path) -> None:
    write(tmp_path, "handler.py")
    before = digest(tmp_path)
    write(tmp_path, "__pycache__/handler.cpython-311.pyc", "bytecode")
    write(tmp_path, ".handler.py.swp", "swap")
    assert digest(tmp_path) == before


def test_digest_changes_with_content(tmp_path: Path) -> None:
    write(tmp_path, "handler.py", "a")
    before = digest(tmp_path)
    write(tmp_path, "handler.py", "b")
    assert digest(tmp_path) != before


def test_digest_changes_with_path(tmp_path: Path) -> None:
    write(tmp_path, "handler.py", "same")
    before = digest(tmp_path)
    (tmp_path / "handler.py").rename(tmp_path / "main.py")
    assert digest(tmp_path) != before


def test_digest_changes_with_exec_bit(tmp_path: Path) -> None:
    path = write(tmp_path, "run.sh", "#!/bin/sh\n", mode=0o644)
    before = digest(tmp_path)
    path.chmod(0o755)
    assert digest(tmp_path) != before
    path.chmod(0o644)
    assert digest(tmp_path) == before


def test_digest_changes_with_added_file(tmp_path: Path) -> None:
    write(tmp_path, "handler.py")
    before = digest(tmp_path)
    write(tmp_path, "empty.txt", "")
    assert digest(tmp_path) != before


def test_digest_changes_with_extra(tmp_path: Path) -> None:
    write(tmp_path, "handler.py")
    files = list(IgnoreRules(tmp_path).files())
    assert digest_files(tmp_path, files, b"python") != digest_files(tmp_path, files, b"node")
    assert digest_files(tmp_path, files) == digest_files(tmp_path, files, b"")


def test_digest_framing_is_unambiguous(tmp_path: Path) -> None:
    one = tmp_path / "one"
    write(one, "a", "X\0b\0-Y", mode=0o644)
    two = tmp_path / "two"
    write(two, "a", "X", mode=0o644)
    write(two, "b", "Y", mode=0o644)
    assert digest_files(one, [Path("a")]) != digest_files(two, [Path("a"), Path("b")])
