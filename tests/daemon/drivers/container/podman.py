"""What the container driver's real-engine tests share: a backend on an engine of
the test's own, and the podman CLI's view of what it made."""

from __future__ import annotations

import contextlib
import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from plat.daemon.drivers.base import LABEL_DAEMON
from plat.daemon.drivers.container.backend import ContainerBackend
from plat.daemon.drivers.container.firewall import Firewall
from plat.daemon.drivers.container.holders import LABEL_HOLDER
from plat.daemon.drivers.secretfiles import SecretFiles
from plat.engine import PodmanService


@contextlib.asynccontextmanager
async def engine_backend(
    tmp_path: Path,
    address: str,
    secret_files: SecretFiles | None = None,
    firewall: Firewall | None = None,
    standby_networks: int = 0,
) -> AsyncIterator[ContainerBackend]:
    """A backend on ``podman system service`` at a socket of the test's own; its
    containers and networks are removed afterwards. ``standby_networks``: standbys
    whose network is held ahead."""
    service = PodmanService(tmp_path / "engine.sock")
    info = await service.start()
    daemon_id = f"test-{uuid.uuid4().hex[:8]}"
    backend = ContainerBackend(
        info.endpoint,
        daemon_id,
        address,
        secret_files,
        firewall,
        standby_networks=standby_networks,
    )
    try:
        yield backend
    finally:
        for inst in await backend.list():
            await backend.remove(inst)
        await backend.close()
        await service.stop()
        remove_networks_of(daemon_id)


def run(*args: str) -> str:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=True).stdout


def inspect(ref: str, kind: str = "container") -> dict[str, Any]:
    """``podman <kind> inspect``'s document of one container (or network)."""
    data: dict[str, Any] = json.loads(run(kind, "inspect", ref))[0]
    return data


def containers_of(daemon_id: str) -> list[str]:
    return run(
        "ps", "-a", "--format", "{{.Names}}", "--filter", f"label={LABEL_DAEMON}={daemon_id}"
    ).split()


def holders_of(daemon_id: str) -> list[str]:
    return run(
        "ps", "-a", "--format", "{{.Names}}", "--filter", f"label={LABEL_HOLDER}={daemon_id}"
    ).split()


def networks_of(daemon_id: str) -> list[str]:
    return sorted(
        run("network", "ls", "-q", "--filter", f"label={LABEL_DAEMON}={daemon_id}").split()
    )


def remove_networks_of(daemon_id: str) -> None:
    """What a failed test left (the backend's close removes the unused ones)."""
    for name in networks_of(daemon_id):
        subprocess.run(["podman", "network", "rm", "-f", name], capture_output=True)
