"""Where a function's files are, inside an instance and on the host.

Every runtime image has the function's code at ``APP_DIR`` and its installed
dependencies at ``DEPS_DIR``; the pool mounts a version's files there, a dev
reload mounts changed code over ``APP_DIR``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

APP_DIR = "/home/app"
DEPS_DIR = "/opt/plat/deps"


@dataclass(frozen=True)
class Layout:
    """A version's files on the host: its code, and its dependency folder if it has one."""

    app: Path
    deps: Path | None
