"""What the container driver's tests share: a small image, and an engine of their own
(with a backend on it, its instances published or reached directly)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from plat.baseimages import resolve_base_sync
from plat.daemon.drivers.container.backend import ContainerBackend
from plat.engine import PodmanService
from plat.runtimes import get_runtime
from tests.daemon.drivers.container.podman import engine_backend


@pytest.fixture(scope="session")
def server_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A small image whose server answers on 8080 (the python base + http.server)."""
    base = resolve_base_sync(get_runtime("python"), pull=False)
    folder = tmp_path_factory.mktemp("image")
    (folder / "Containerfile").write_text(
        f'FROM {base}\nCMD ["python3", "-m", "http.server", "8080"]\n'
    )
    tag = f"localhost/plat-test/http-server:{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["buildah", "build", "--pull=never", "-t", tag, str(folder)],
        check=True,
        capture_output=True,
    )
    yield tag
    subprocess.run(["podman", "rmi", "-f", tag], capture_output=True)


@pytest.fixture
async def podman_service(tmp_path: Path) -> AsyncIterator[PodmanService]:
    """``podman system service`` on a socket of the test's own."""
    service = PodmanService(tmp_path / "engine.sock")
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[ContainerBackend]:
    """Instances reached by a port published on loopback; standbys' networks held
    ahead, as the daemon's default does."""
    async with engine_backend(tmp_path, "published", standby_networks=4) as backend:
        yield backend


@pytest.fixture
async def direct_backend(tmp_path: Path) -> AsyncIterator[ContainerBackend]:
    """Instances reached at their bridge address (``auto`` picks it for rootful Podman)."""
    async with engine_backend(tmp_path, "auto") as backend:
        assert backend.direct, "the test engine (rootful Podman) should be reachable directly"
        yield backend
