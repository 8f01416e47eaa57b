"""plat.daemon.lifecycle: one daemon per PLAT_HOME (lock + pid file), pid helpers."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from plat.daemon.lifecycle import pid_alive, read_pid, single_instance
from plat.errors import DaemonError
from plat.paths import Home


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home")


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_pid_file_written_and_removed(home: Home) -> None:
    with single_instance(home):
        assert home.pid_file.read_text() == f"{os.getpid()}\n"
        assert stat.S_IMODE(home.pid_file.stat().st_mode) == 0o600
        assert read_pid(home) == os.getpid()
        assert stat.S_IMODE(home.run_dir.stat().st_mode) == 0o700
    assert not home.pid_file.exists()
    assert read_pid(home) is None


def test_second_acquisition_is_refused(home: Home) -> None:
    with single_instance(home):
        with pytest.raises(DaemonError) as info, single_instance(home):
            pytest.fail("a second holder got the lock")
        # The first holder keeps its pid file.
        assert read_pid(home) == os.getpid()
    exc = info.value
    assert str(home.root) in exc.message
    assert f"(pid {os.getpid()})" in exc.message
    assert exc.hint is not None
    assert "plat daemon stop" in exc.hint
    assert "PLAT_HOME" in exc.hint


def test_refusal_without_pid_file_omits_pid(home: Home) -> None:
    with single_instance(home):
        home.pid_file.unlink()
        with pytest.raises(DaemonError) as info, single_instance(home):
            pass
    assert "(pid" not in info.value.message
    assert str(home.root) in info.value.message


def test_lock_released_after_exit(home: Home) -> None:
    with single_instance(home):
        pass
    with single_instance(home):
        assert read_pid(home) == os.getpid()


def test_lock_released_when_body_raises(home: Home) -> None:
    with pytest.raises(RuntimeError), single_instance(home):
        raise RuntimeError("boom")
    assert not home.pid_file.exists()
    with single_instance(home):
        pass


def test_other_homes_do_not_conflict(tmp_path: Path) -> None:
    with single_instance(Home(tmp_path / "a")), single_instance(Home(tmp_path / "b")):
        pass


def test_stale_pid_file_does_not_block(home: Home) -> None:
    home.ensure()
    stale = dead_pid()
    home.pid_file.write_text(f"{stale}\n")
    assert not pid_alive(stale)
    with single_instance(home):
        assert read_pid(home) == os.getpid()
    assert not home.pid_file.exists()


def test_lock_held_by_another_process(home: Home) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from plat.daemon.lifecycle import single_instance
        from plat.paths import Home
        with single_instance(Home(Path({str(home.root)!r}))):
            print("locked", flush=True)
            sys.stdin.readline()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(DaemonError, match=rf"\(pid {proc.pid}\)"), single_instance(home):
            pass
        assert read_pid(home) == proc.pid  # the holder's pid file is untouched
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == 0
    with single_instance(home):
        pass


@pytest.mark.parametrize(
    ("text", "pid"),
    [
        ("1234\n", 1234),
        ("1234", 1234),
        ("  42  \n", 42),
        ("", None),
        ("abc\n", None),
        ("1.5", None),
    ],
)
def test_read_pid(home: Home, text: str, pid: int | None) -> None:
    home.ensure()
    home.pid_file.write_text(text)
    assert read_pid(home) == pid


def test_read_pid_without_file(home: Home) -> None:
    assert read_pid(home) is None


def test_pid_alive() -> None:
    assert pid_alive(os.getpid())
    assert pid_alive(1)  # alive, whether or not we may signal it
    assert not pid_alive(dead_pid())


def test_a_zombie_is_not_alive() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while pid_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not pid_alive(proc.pid)  # exited, not reaped yet
        assert Path(f"/proc/{proc.pid}").exists()
    finally:
        proc.wait()
    assert pid_alive(os.getpid())
