"""plat.ignore: which files belong to a function (.platignore) and their digest."""

from __future__ import annotations

import os
import socket
import stat
import warnings
from pathlib import Path

import pytest

from plat.ignore import (
    IGNORE_FILE,
    IgnoreRules,
    UnsafeFolderError,
    content_entry,
    copy_entries,
    digest_files,
    open_regular,
)


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
        "dev.log",
        "lib/trace.log",
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


def test_dangling_link_inside_is_left_out(tmp_path: Path) -> None:
    write(tmp_path, "handler.py")
    (tmp_path / "dangling").symlink_to("nowhere")
    (tmp_path / "loop-a").symlink_to("loop-b")
    (tmp_path / "loop-b").symlink_to("loop-a")
    assert listed(tmp_path) == ["handler.py"]


def refused(root: Path) -> str:
    with pytest.raises(UnsafeFolderError) as info:
        IgnoreRules(root).entries()
    assert info.value.hint and ".platignore" in info.value.hint
    return info.value.message


def test_links_leaving_the_folder_are_refused_each_named(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside, "secret.txt", "s3cret")
    fn = tmp_path / "fn"
    write(fn, "handler.py")
    (fn / "shadow").symlink_to("/etc/shadow")
    (fn / "up").symlink_to("../outside/secret.txt")
    (fn / "linkdir").symlink_to(outside, target_is_directory=True)
    (fn / "gone").symlink_to("/nonexistent/elsewhere")
    write(fn, "sub/keep.py")
    (fn / "sub" / "hop").symlink_to("../chain")
    (fn / "chain").symlink_to("../outside")
    message = refused(fn)
    assert str(fn) in message
    assert "6 entries" in message
    for line in (
        "shadow -> /etc/shadow (leaves the folder)",
        "up -> ../outside/secret.txt (leaves the folder, resolves to "
        f"{outside.resolve() / 'secret.txt'})",
        f"linkdir -> {outside} (leaves the folder)",
        "gone -> /nonexistent/elsewhere (leaves the folder)",
        f"sub/hop -> ../chain (leaves the folder, resolves to {outside.resolve()})",
        f"chain -> ../outside (leaves the folder, resolves to {outside.resolve()})",
    ):
        assert line in message
    assert "s3cret" not in message


def test_ignored_links_are_not_checked(tmp_path: Path) -> None:
    write(tmp_path, "handler.py")
    write(tmp_path, IGNORE_FILE, "shadow\n")
    (tmp_path / "shadow").symlink_to("/etc/shadow")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "python").symlink_to("/usr/bin/python3")
    assert listed(tmp_path) == [IGNORE_FILE, "handler.py"]


def test_links_inside_are_kept_as_normalised_links(tmp_path: Path) -> None:
    write(tmp_path, "lib/util.py", "X = 1\n")
    write(tmp_path, "handler.py")
    (tmp_path / "alias.py").symlink_to("lib/util.py")
    (tmp_path / "lib" / "again.py").symlink_to("../alias.py")  # a chain, inside
    (tmp_path / "libs").symlink_to("lib", target_is_directory=True)
    (tmp_path / "abs.py").symlink_to(tmp_path / "handler.py")  # absolute, but inside
    (tmp_path / "self").symlink_to(".", target_is_directory=True)  # a cycle: never walked
    entries = {e.path.as_posix(): e for e in IgnoreRules(tmp_path).entries()}
    assert sorted(entries) == [
        "abs.py",
        "alias.py",
        "handler.py",
        "lib/again.py",
        "lib/util.py",
        "libs",
        "self",
    ]
    assert entries["alias.py"].link == "lib/util.py"
    assert entries["lib/again.py"].link == "util.py"
    assert entries["abs.py"].link == "handler.py"
    assert entries["libs"].link == "lib" and entries["libs"].to_dir
    assert entries["self"].link == "." and entries["self"].to_dir
    assert entries["handler.py"].link is None


def test_link_to_an_ignored_entry_is_refused(tmp_path: Path) -> None:
    write(tmp_path, IGNORE_FILE, "secrets.env\nprivate/\n")
    write(tmp_path, "secrets.env", "KEY=1")
    write(tmp_path, "private/key.pem", "k")
    (tmp_path / "config").symlink_to("secrets.env")
    (tmp_path / "key").symlink_to("private/key.pem")
    message = refused(tmp_path)
    assert "config -> secrets.env (points to secrets.env, which is ignored)" in message
    assert "key -> private/key.pem (points to private/key.pem, which is ignored)" in message


def test_fifos_sockets_and_links_to_them_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "handler.py")
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "to-pipe").symlink_to("pipe")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock"))
        message = refused(tmp_path)
    assert "pipe (a FIFO (named pipe))" in message
    assert "sock (a socket)" in message
    assert "to-pipe -> pipe (points to a FIFO (named pipe))" in message


def test_a_device_file_is_refused(tmp_path: Path) -> None:
    try:
        os.mknod(tmp_path / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("creating device files is not permitted here")
    assert "null (a device file)" in refused(tmp_path)


def test_the_error_lists_at_most_twenty(tmp_path: Path) -> None:
    for i in range(25):
        (tmp_path / f"l{i:02}").symlink_to("/etc/passwd")
    message = refused(tmp_path)
    assert "25 entries" in message
    assert "l19 -> /etc/passwd" in message and "l20 -> " not in message
    assert "... and 5 more" in message


def test_open_regular_never_follows_links(tmp_path: Path) -> None:
    write(tmp_path, "outside.txt", "secret")
    fn = tmp_path / "fn"
    write(fn, "sub/file.txt", "ok")
    (fn / "link.txt").symlink_to(tmp_path / "outside.txt")
    (fn / "dirlink").symlink_to(fn / "sub", target_is_directory=True)
    os.mkfifo(fn / "pipe")
    with open_regular(fn, Path("sub/file.txt")) as fh:
        assert fh.read() == b"ok"
    for rel in ("link.txt", "dirlink/file.txt", "pipe", "missing"):
        with pytest.raises(UnsafeFolderError):
            open_regular(fn, Path(rel))


def test_copy_entries_recreates_links_and_never_dereferences(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src, "lib/util.py", "X = 1\n")
    write(src, "run.sh", "#!/bin/sh\n", mode=0o700)
    (src / "alias.py").symlink_to("lib/util.py")
    (src / "libs").symlink_to("lib", target_is_directory=True)
    entries = IgnoreRules(src).entries()
    dest = tmp_path / "dest"
    copy_entries(src, entries, dest)
    assert os.readlink(dest / "alias.py") == "lib/util.py"
    assert os.readlink(dest / "libs") == "lib"
    assert (dest / "alias.py").read_text() == "X = 1\n"
    assert stat.S_IMODE((dest / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "lib" / "util.py").stat().st_mode) == 0o644
    # A link swapped in after the check is not read through.
    (src / "lib" / "util.py").unlink()
    (src / "lib" / "util.py").symlink_to("/etc/hostname")
    with pytest.raises(UnsafeFolderError):
        copy_entries(src, entries, tmp_path / "again")


def test_content_entry_resolves_kept_links(tmp_path: Path) -> None:
    write(tmp_path, "reqs/prod.txt", "humanize\n")
    (tmp_path / "requirements.txt").symlink_to("reqs/prod.txt")
    (tmp_path / "package.json").symlink_to("reqs", target_is_directory=True)
    entries = IgnoreRules(tmp_path).entries()
    found = content_entry(entries, "requirements.txt")
    assert found is not None and found.path == Path("reqs/prod.txt")
    assert content_entry(entries, "package.json") is None
    assert content_entry(entries, "missing") is None


# digest_files


def digest(root: Path) -> str:
    return digest_files(root, IgnoreRules(root).entries())


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


def test_digest_counts_a_link_as_its_target_path(tmp_path: Path) -> None:
    write(tmp_path, "a.py", "A")
    write(tmp_path, "b.py", "B")
    (tmp_path / "x.py").symlink_to("a.py")
    before = digest(tmp_path)
    (tmp_path / "x.py").unlink()
    (tmp_path / "x.py").symlink_to("b.py")
    assert digest(tmp_path) != before
    (tmp_path / "x.py").unlink()
    write(tmp_path, "x.py", "A")  # a copy is not the same as a link
    assert digest(tmp_path) != before


def test_plat_home_inside_the_folder_is_never_part_of_the_function(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "handler.py")
    write(tmp_path, ".plat/credentials", "admin:secret")
    write(tmp_path, ".plat/plat.db")
    write(tmp_path, "sub/.plat/kept.txt")  # another folder of that name is the user's
    monkeypatch.setenv("PLAT_HOME", str(tmp_path / ".plat"))
    assert listed(tmp_path) == ["handler.py", "sub/.plat/kept.txt"]
