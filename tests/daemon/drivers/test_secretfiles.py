"""plat.daemon.drivers.secretfiles: real files, real modes and owners, real /proc/mounts."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from plat.daemon.drivers.secretfiles import SecretFiles
from plat.daemon.drivers.secretvalue import SecretValue
from plat.errors import PlatError

ROOT = os.geteuid() == 0
NOBODY = 65534


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_root_is_created_private(tmp_path: Path) -> None:
    root = tmp_path / "deep" / "secrets"
    SecretFiles(root)
    assert root.is_dir() and _mode(root) == 0o700


def test_an_existing_root_with_loose_mode_is_tightened(tmp_path: Path) -> None:
    root = tmp_path / "secrets"
    root.mkdir(mode=0o777)
    os.chmod(root, 0o777)
    SecretFiles(root)
    assert _mode(root) == 0o700


def test_a_root_that_is_a_link_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "secrets").symlink_to(elsewhere)
    with pytest.raises(PlatError, match="not a folder of this user"):
        SecretFiles(tmp_path / "secrets")


@pytest.mark.skipif(not ROOT, reason="chown to another user takes root")
def test_a_root_another_user_made_first_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "secrets"
    root.mkdir()
    os.chown(root, NOBODY, NOBODY)
    with pytest.raises(PlatError, match="not a folder of this user"):
        SecretFiles(root)


def test_write_makes_read_only_files_in_a_read_only_folder(tmp_path: Path) -> None:
    files = SecretFiles(tmp_path / "s")
    folder = files.write(
        "abc123",
        {"db-password": SecretValue(b"hunter2\n"), "api.key": SecretValue(b"\x00\xffbin")},
        uid=None,
        gid=None,
    )
    assert folder == tmp_path / "s" / "abc123"
    assert sorted(os.listdir(folder)) == ["api.key", "db-password"]
    assert (folder / "db-password").read_bytes() == b"hunter2\n"
    assert (folder / "api.key").read_bytes() == b"\x00\xffbin"
    assert _mode(folder) == 0o500
    assert _mode(folder / "db-password") == 0o400
    # Nothing half-written is left beside it.
    assert os.listdir(tmp_path / "s") == ["abc123"]


def test_write_ignores_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        folder = SecretFiles(tmp_path / "s").write(
            "i1", {"a": SecretValue(b"x")}, uid=None, gid=None
        )
    finally:
        os.umask(old)
    assert folder is not None and _mode(folder / "a") == 0o400


@pytest.mark.skipif(not ROOT, reason="chown to another user takes root")
def test_write_gives_the_files_to_the_instance_user(tmp_path: Path) -> None:
    folder = SecretFiles(tmp_path / "s").write(
        "i1", {"token": SecretValue(b"t0k")}, uid=10001, gid=10002
    )
    assert folder is not None
    for path in (folder, folder / "token"):
        info = os.lstat(path)
        assert (info.st_uid, info.st_gid) == (10001, 10002)


@pytest.mark.skipif(not ROOT, reason="switching users takes root")
def test_only_the_instance_user_reads_the_files() -> None:
    # On the real tmpfs; the root of all instances is 0700, opened up here to test
    # the instance folder's and files' own modes.
    base = Path(tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    try:
        os.chmod(base, 0o755)
        files = SecretFiles(base / "s")
        folder = files.write("i1", {"token": SecretValue(b"t0k")}, uid=10001, gid=10001)
        assert folder is not None
        os.chmod(files.root, 0o755)

        def as_user(uid: int) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["/bin/cat", str(folder / "token")],
                user=uid,
                group=uid,
                extra_groups=[],
                capture_output=True,
                text=True,
            )

        assert as_user(10001).stdout == "t0k"
        other = as_user(10003)
        assert other.returncode != 0 and "Permission denied" in other.stderr
    finally:
        shutil.rmtree(base)


def test_no_secrets_no_folder(tmp_path: Path) -> None:
    files = SecretFiles(tmp_path / "s")
    assert files.write("i1", {}, uid=None, gid=None) is None
    assert os.listdir(files.root) == []


def test_rewrite_replaces_the_whole_folder(tmp_path: Path) -> None:
    files = SecretFiles(tmp_path / "s")
    files.write("i1", {"a": SecretValue(b"1"), "b": SecretValue(b"2")}, uid=None, gid=None)
    folder = files.write("i1", {"a": SecretValue(b"new")}, uid=None, gid=None)
    assert folder is not None
    assert os.listdir(folder) == ["a"] and (folder / "a").read_bytes() == b"new"
    assert os.listdir(files.root) == ["i1"]
    # Writing none removes what was there.
    assert files.write("i1", {}, uid=None, gid=None) is None
    assert os.listdir(files.root) == []


def test_a_big_value_is_written_whole(tmp_path: Path) -> None:
    value = os.urandom(1024 * 1024)
    folder = SecretFiles(tmp_path / "s").write(
        "i1", {"blob": SecretValue(value)}, uid=None, gid=None
    )
    assert folder is not None and (folder / "blob").read_bytes() == value


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ".", ".hidden", "", "nul\0"])
def test_names_that_are_not_plain_file_names_are_refused(tmp_path: Path, name: str) -> None:
    files = SecretFiles(tmp_path / "s")
    with pytest.raises(PlatError, match="not a valid secret name"):
        files.write("i1", {"ok": SecretValue(b"1"), name: SecretValue(b"x")}, uid=None, gid=None)
    # Nothing written, not even the good one, and nothing outside the root.
    assert os.listdir(files.root) == []
    assert sorted(os.listdir(tmp_path)) == ["s"]


@pytest.mark.parametrize("instance_id", ["../x", "a/b", "..", ".tmp-x", ""])
def test_instance_ids_that_are_not_plain_names_are_refused(
    tmp_path: Path, instance_id: str
) -> None:
    files = SecretFiles(tmp_path / "s")
    with pytest.raises(PlatError, match="not a valid instance id"):
        files.write(instance_id, {"a": SecretValue(b"x")}, uid=None, gid=None)
    with pytest.raises(PlatError):
        files.remove(instance_id)


def test_remove_is_idempotent_and_works_on_read_only_folders(tmp_path: Path) -> None:
    files = SecretFiles(tmp_path / "s")
    files.write("i1", {"a": SecretValue(b"x")}, uid=None, gid=None)
    files.remove("i1")
    files.remove("i1")
    assert os.listdir(files.root) == []


def test_sweep_keeps_only_live_instances_and_drops_half_writes(tmp_path: Path) -> None:
    files = SecretFiles(tmp_path / "s")
    for instance in ("live", "dead1", "dead2"):
        files.write(instance, {"a": SecretValue(b"x")}, uid=None, gid=None)
    (files.root / ".tmp-live-0000").mkdir()
    (files.root / "stray-file").write_text("x")
    files.sweep(keep=["live", "unknown"])
    assert os.listdir(files.root) == ["live"]
    # A root that vanished is nothing to sweep.
    files.remove("live")
    os.rmdir(files.root)
    files.sweep(keep=[])


def _mounts(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "mounts"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_default_root_prefers_a_tmpfs_runtime_dir(tmp_path: Path) -> None:
    runtime = tmp_path / "xdg"
    runtime.mkdir()
    mounts = _mounts(tmp_path, ["/dev/vda / ext4 rw 0 0", f"tmpfs {runtime} tmpfs rw 0 0"])
    root = SecretFiles.default_root(
        tmp_path / "home", "d1", env={"XDG_RUNTIME_DIR": str(runtime)}, mounts=mounts
    )
    assert root == runtime / "plat-d1"


def test_default_root_skips_what_is_not_tmpfs(tmp_path: Path) -> None:
    runtime = tmp_path / "xdg"
    runtime.mkdir()
    # The runtime dir is on disk; /dev/shm is tmpfs.
    mounts = _mounts(tmp_path, ["/dev/vda / ext4 rw 0 0", "tmpfs /dev/shm tmpfs rw 0 0"])
    root = SecretFiles.default_root(
        tmp_path / "home", "d1", env={"XDG_RUNTIME_DIR": str(runtime)}, mounts=mounts
    )
    assert root == Path("/dev/shm/plat-d1")


def test_a_disk_mounted_over_a_tmpfs_is_not_tmpfs(tmp_path: Path) -> None:
    runtime = tmp_path / "xdg"
    runtime.mkdir()
    mounts = _mounts(
        tmp_path,
        [
            "/dev/vda / ext4 rw 0 0",
            f"tmpfs {tmp_path} tmpfs rw 0 0",
            f"/dev/vdb {runtime} ext4 rw 0 0",
        ],
    )
    root = SecretFiles.default_root(
        tmp_path / "home", "d1", env={"XDG_RUNTIME_DIR": str(runtime)}, mounts=mounts
    )
    assert root != runtime / "plat-d1"


def test_default_root_falls_back_to_the_home_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mounts = _mounts(tmp_path, ["/dev/vda / ext4 rw 0 0"])
    with caplog.at_level(logging.WARNING):
        root = SecretFiles.default_root(tmp_path / "home", "d1", env={}, mounts=mounts)
    assert root == tmp_path / "home" / "run" / "secrets"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "on disk" in warnings[0].getMessage()


def test_default_root_on_this_host_is_tmpfs_when_dev_shm_is() -> None:
    # The real /proc/mounts: on a host with a tmpfs /dev/shm, that (or the runtime dir) wins.
    if "/dev/shm tmpfs" not in Path("/proc/mounts").read_text():
        pytest.skip("this host has no tmpfs /dev/shm")
    root = SecretFiles.default_root(Path("/nonexistent-home"), "d1", env={})
    assert root.parent in (Path("/dev/shm"), Path("/run"))


def test_discard_removes_every_folder_and_the_root(tmp_path: Path) -> None:
    files = SecretFiles(tmp_path / "s")
    files.write("a", {"x": SecretValue(b"1")}, uid=None, gid=None)
    files.write("b", {"x": SecretValue(b"2")}, uid=None, gid=None)
    files.discard()
    assert not files.root.exists()
    files.discard()
    # Still usable: a later write makes the root again.
    assert files.write("c", {"x": SecretValue(b"3")}, uid=None, gid=None) is not None
