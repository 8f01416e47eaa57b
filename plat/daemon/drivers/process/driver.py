"""The process driver as the daemon takes it: instances as local subprocesses of the
runtime's shim (no isolation), prepared folders instead of images; pool instances
are named a version's folders, not given them by links."""

from __future__ import annotations

from collections.abc import Mapping

from plat.daemon.drivers.process.artifacts import ProcessArtifacts
from plat.daemon.drivers.process.backend import ProcessBackend
from plat.daemon.drivers.versions import Driver
from plat.paths import Home


def process_driver(home: Home, env: Mapping[str, str]) -> Driver:
    artifacts = ProcessArtifacts(home.root / "artifacts", env)
    return Driver(ProcessBackend(home.daemon_id()), artifacts, artifacts, link=False)
