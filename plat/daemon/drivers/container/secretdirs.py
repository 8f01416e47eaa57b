"""The secret folders of a container backend's instances: files on the host's tmpfs
(:mod:`plat.daemon.drivers.secretfiles`), one folder per instance, bind-mounted
read-only into its container; written when its container is made, removed with it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Set
from pathlib import Path

from plat.daemon.drivers.base import InstanceSpec
from plat.daemon.drivers.container.documents import secret_owner
from plat.daemon.drivers.secretfiles import SecretFiles
from plat.errors import PlatError

log = logging.getLogger(__name__)


def _open_to_the_instance(folder: Path) -> None:
    """Rootless: the files are ours, which is root inside the container, and the
    instance's user (10001) maps to a subordinate id we cannot chown to; so its
    folder and files become readable by every id (0555/0444). Nobody else on the
    host reaches them: the daemon's secrets folder above them stays 0700."""
    for entry in folder.iterdir():
        os.chmod(entry, 0o444, follow_symlinks=False)
    os.chmod(folder, 0o555)


class SecretDirs:
    """``files``: where the folders are written; None: an instance that has secrets
    cannot start."""

    def __init__(self, files: SecretFiles | None) -> None:
        self.files = files
        # Instances whose folders this object wrote and has not removed yet.
        self.ids: set[str] = set()

    def write(self, spec: InstanceSpec, instance_id: str) -> str | None:
        """The host folder of the instance's secret files (None: it has none).
        Written inline: a few small files on tmpfs take microseconds."""
        if not spec.secrets:
            return None
        if self.files is None:
            raise PlatError(f"{spec.function} has secrets, but this backend has no place for them")
        # Only root may give files away; any other daemon keeps them its own.
        rootless = os.geteuid() != 0
        uid, gid = (None, None) if rootless else secret_owner(spec.user)
        self.ids.add(instance_id)
        try:
            folder = self.files.write(instance_id, spec.secrets, uid=uid, gid=gid)
            if folder is not None and rootless:
                _open_to_the_instance(folder)
        except OSError as exc:
            self.drop(instance_id)
            raise PlatError(f"could not write the secret files of {spec.function}: {exc}") from exc
        return None if folder is None else str(folder)

    def drop(self, instance_id: str) -> None:
        """Remove the instance's secret files, if it has any; idempotent, never raises."""
        if self.files is None:
            return
        self.ids.discard(instance_id)
        try:
            self.files.remove(instance_id)
        except (OSError, PlatError) as exc:  # swept later
            log.warning("could not remove the secret files of %s: %s", instance_id, exc)

    def sweep(self, listed: Set[str]) -> None:
        """Remove the folders of instances neither ``listed`` nor written here."""
        if self.files is not None:
            self.files.sweep(set(listed) | self.ids)

    def close(self) -> None:
        """Remove the root folder, unless instances still read from it."""
        if self.files is not None:
            with contextlib.suppress(OSError):
                os.rmdir(self.files.root)
