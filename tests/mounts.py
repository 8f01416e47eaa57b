"""Real small filesystems for tests: a tmpfs mounted for the test, and filling one up.

Mounting needs root (the test set-up runs as root); a test is skipped only where the
kernel refuses the mount, never because the component is missing.
"""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def tmpfs(mountpoint: Path, options: str) -> Iterator[Path]:
    """``mountpoint`` (created) as a fresh tmpfs mounted with ``options`` (``-o``)."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


def fill(path: Path) -> int:
    """Write ``path`` until its file system has no byte left; returns the bytes written."""
    chunk = b"\0" * (1 << 20)
    written = 0
    with path.open("wb", buffering=0) as fh:
        while True:
            try:
                written += fh.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    return written
                chunk = chunk[: len(chunk) // 2]
