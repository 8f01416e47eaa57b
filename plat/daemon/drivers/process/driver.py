"""The process driver as the daemon takes it: instances as local subprocesses of the
runtime's shim (no isolation), prepared folders instead of images; pool instances
are named a version's folders, not given them by links; secret files on tmpfs."""

from __future__ import annotations

from collections.abc import Mapping

from plat.daemon.drivers.process.artifacts import ProcessArtifacts
from plat.daemon.drivers.process.backend import ProcessBackend
from plat.daemon.drivers.secretfiles import SecretFiles
from plat.daemon.drivers.versions import Driver
from plat.paths import Home


def process_driver(home: Home, env: Mapping[str, str]) -> Driver:
    artifacts = ProcessArtifacts(home.root / "artifacts", env)
    daemon_id = home.daemon_id()
    # Process instances die with their daemon: what an earlier one left is stale.
    secret_files = SecretFiles(SecretFiles.default_root(home.root, f"{daemon_id}-process", env=env))
    secret_files.sweep(keep=())
    backend = ProcessBackend(daemon_id, secret_files=secret_files)
    return Driver(backend, artifacts, artifacts, link=False)
