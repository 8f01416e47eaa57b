"""Child processes of the daemon: tied to its life, and streamed line by line."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def death_signal_hook(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A preexec_fn that has the kernel send ``sig`` to the child when the daemon dies,
    even by SIGKILL; None where prctl does not exist (not Linux).

    prctl is looked up here, in the parent, so the forked child only makes the call.
    If the daemon died between the fork and the prctl, the child is already an
    orphan and sends ``sig`` to itself.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    # Strictly the signal comes when the forking *thread* ends: the daemon forks
    # from its event loop thread, which lives as long as the daemon.
    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return hook


async def stream_lines(
    cmd: Sequence[str],
    on_line: Callable[[str], None],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Run ``cmd`` with its stdout and stderr merged, hand each line (without its line
    ending) to ``on_line`` as it comes, and return the exit code.

    The command runs in a session of its own; when the caller is cancelled (or
    ``on_line`` raises) its whole process group is killed and reaped, so an
    installer's or a builder's children do not outlive it.
    """
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        cwd=cwd,
        env=None if env is None else dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    try:
        async for raw in proc.stdout:
            on_line(raw.decode(errors="replace").rstrip("\r\n"))
        return await proc.wait()
    except BaseException:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        raise
