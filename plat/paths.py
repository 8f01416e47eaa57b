"""Where plat keeps its state: ``$PLAT_HOME`` (default ``~/.plat``)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from plat.errors import PlatError


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Home:
        env = os.environ if env is None else env
        raw = env.get("PLAT_HOME") or str(Path.home() / ".plat")
        return cls(Path(raw).expanduser().resolve())

    def daemon_id(self) -> str:
        """A stable id for this home, put on every container as the plat.daemon label."""
        path = self.root / "daemon-id"
        if path.is_file():
            return path.read_text().strip()
        value = secrets.token_hex(8)
        path.write_text(value + "\n")
        return value

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def socket(self) -> Path:
        return self.run_dir / "plat.sock"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "plat.pid"

    @property
    def lock_file(self) -> Path:
        return self.run_dir / "plat.lock"

    @property
    def database(self) -> Path:
        return self.root / "plat.db"

    @property
    def credentials(self) -> Path:
        return self.root / "credentials"

    @property
    def admin_token(self) -> Path:
        return self.root / "admin.token"

    @property
    def daemon_log(self) -> Path:
        return self.root / "daemon.log"

    @property
    def cli_log(self) -> Path:
        return self.root / "cli.log"

    @property
    def builds_dir(self) -> Path:
        return self.root / "builds"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    def ensure(self) -> None:
        """Create the state folders, private to the user (idempotent).

        Raises PlatError naming the folder when it cannot be created or written.
        """
        for path in (self.root, self.run_dir, self.builds_dir, self.cache_dir):
            try:
                path.mkdir(parents=True, exist_ok=True)
                os.chmod(path, 0o700)
            except OSError as exc:
                raise self.unusable(exc, path) from None

    def holds(self, path: str | os.PathLike[str] | None) -> bool:
        """Whether ``path`` is the home or lies below it."""
        if path is None:
            return False
        return Path(os.path.abspath(path)).is_relative_to(self.root)

    def unusable(self, exc: OSError, path: str | os.PathLike[str] | None = None) -> PlatError:
        """The error for a home plat cannot write to (read-only, below a file, full...)."""
        where = path if path is not None else exc.filename or self.root
        return PlatError(
            f"plat cannot write its state to {where}: {exc.strerror or exc}",
            hint=f"make {self.root} a writable folder, or point PLAT_HOME to one "
            "(e.g. export PLAT_HOME=$HOME/.plat)",
        )
