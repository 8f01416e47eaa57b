"""plat.subprocesses: children streamed line by line, killed as a group, tied to the daemon."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from plat.subprocesses import stream_lines


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def test_lines_come_as_written_with_stderr_merged_and_the_exit_code(
    tmp_path: Path,
) -> None:
    lines: list[str] = []
    script = "echo one; echo two >&2; printf 'three\\r\\n'; printf last; exit 4"
    code = await stream_lines(["sh", "-c", script], lines.append, cwd=tmp_path, env={"A": "b"})
    assert code == 4
    assert lines == ["one", "two", "three", "last"]


async def test_cancelling_kills_the_whole_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = f"sleep 60 & echo $! > {pids}; echo $$ >> {pids}; echo started; wait"
    lines: list[str] = []
    task = asyncio.create_task(stream_lines(["sh", "-c", script], lines.append))
    for _ in range(500):
        if "started" in lines:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for pid in map(int, pids.read_text().split()):
        for _ in range(100):
            if gone(pid):
                break
            await asyncio.sleep(0.02)
        assert gone(pid), pid


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_a_child_gets_the_death_signal_when_its_parent_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "child"
    parent = textwrap.dedent(
        f"""
        import signal, subprocess, time
        from plat.subprocesses import death_signal_hook
        child = subprocess.Popen(["sleep", "60"], preexec_fn=death_signal_hook(signal.SIGTERM))
        open({str(pid_file)!r}, "w").write(str(child.pid))
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", parent])
    try:
        deadline = time.monotonic() + 20
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the parent never started its child"
            time.sleep(0.05)
        child = int(pid_file.read_text())
        assert not gone(child)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        while not gone(child):
            assert time.monotonic() < deadline, "the child outlived its parent"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
