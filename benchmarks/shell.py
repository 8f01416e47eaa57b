"""Running a command to completion, optionally timed."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.context import BenchError


def run(
    cmd: list[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
    check: bool = True,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` capturing text output; raises BenchError (with the output) on failure."""
    try:
        proc = subprocess.run(
            cmd,
            env=None if env is None else dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"`{' '.join(cmd)}` did not finish within {timeout:.0f} s") from exc
    except FileNotFoundError as exc:
        raise BenchError(f"`{cmd[0]}` is not installed") from exc
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise BenchError(f"`{' '.join(cmd)}` exited {proc.returncode}:\n{tail}")
    return proc


def timed(cmd: list[str], **kwargs: Any) -> tuple[float, subprocess.CompletedProcess[str]]:
    """(wall seconds, completed process) of :func:`run`."""
    started = time.perf_counter()
    proc = run(cmd, **kwargs)
    return time.perf_counter() - started, proc
