"""An instance's secrets on a real Podman: files it reads at both paths, never in the
container's configuration (``podman inspect``), environment or root filesystem, and
gone from the host when the container goes."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from plat.daemon.drivers.base import InstanceSpec, RunningInstance
from plat.daemon.drivers.container.backend import ContainerBackend
from plat.daemon.drivers.secretfiles import SecretFiles
from plat.daemon.drivers.secretvalue import SecretValue
from plat.daemon.serving.probe import wait_ready
from plat.errors import PlatError
from tests.daemon.drivers.container.podman import engine_backend

pytestmark = pytest.mark.container


@pytest.fixture
async def files(tmp_path: Path) -> AsyncIterator[SecretFiles]:
    """Secret files where the daemon keeps them: on tmpfs (/dev/shm here)."""
    root = SecretFiles.default_root(tmp_path, f"test-{uuid.uuid4().hex[:8]}", env={})
    assert root.parent == Path("/dev/shm"), "the test expects a tmpfs for secret files"
    yield SecretFiles(root)
    assert not root.exists(), "the backend's close leaves no empty secret root behind"
    subprocess.run(["rm", "-rf", str(root)], check=True)


@pytest.fixture
async def backend(tmp_path: Path, files: SecretFiles) -> AsyncIterator[ContainerBackend]:
    async with engine_backend(tmp_path, "published", files) as backend:
        yield backend


def spec_with(image: str, value: bytes) -> InstanceSpec:
    secrets = {"db-password": SecretValue(value), "api-key": SecretValue(b"k-" + value)}
    return InstanceSpec(function="vault", version="v1", image=image, secrets=secrets)


def exec_in(running: RunningInstance, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", "exec", running.backend_ref, *command], capture_output=True, text=True
    )


async def started(
    backend: ContainerBackend, spec: InstanceSpec, instance_id: str
) -> RunningInstance:
    running = await backend.start(spec, instance_id)

    async def alive() -> bool:
        return await backend.is_alive(running)

    async with aiohttp.ClientSession() as session:
        await wait_ready(session, running.host, running.port, timeout=20, alive=alive)
    return running


async def test_secrets_are_readable_files_at_both_paths_and_nowhere_else(
    backend: ContainerBackend, files: SecretFiles, server_image: str
) -> None:
    value = f"s3cr3t-{uuid.uuid4().hex}"
    running = await started(backend, spec_with(server_image, value.encode()), "i-sec")

    for folder in ("/var/plat/secrets", "/var/openfaas/secrets"):
        read = exec_in(running, "cat", f"{folder}/db-password")
        assert (read.returncode, read.stdout) == (0, value), read.stderr
        assert exec_in(running, "cat", f"{folder}/api-key").stdout == f"k-{value}"
        # Read-only, owned by the instance's user, on the host's tmpfs (a mount, not
        # a file of the container's root filesystem).
        mode = exec_in(running, "stat", "-c", "%a %u:%g", f"{folder}/db-password").stdout
        assert mode.split() == ["400", "10001:10001"]
        assert exec_in(running, "stat", "-f", "-c", "%T", folder).stdout.strip() == "tmpfs"
        write = exec_in(running, "python3", "-c", f"open('{folder}/db-password', 'w')")
        assert write.returncode != 0 and "Read-only file system" in write.stderr
    env = exec_in(running, "env").stdout
    assert "PLAT_SECRETS_DIR=/var/plat/secrets" in env.splitlines()
    assert value not in env

    inspected = subprocess.run(
        ["podman", "inspect", running.backend_ref], capture_output=True, text=True, check=True
    ).stdout
    assert value not in inspected
    mounts = {m["Destination"]: m for m in json.loads(inspected)[0]["Mounts"]}
    for folder in ("/var/plat/secrets", "/var/openfaas/secrets"):
        assert mounts[folder]["Source"] == str(files.path("i-sec"))
        assert mounts[folder]["RW"] is False
    diff = subprocess.run(
        ["podman", "diff", running.backend_ref], capture_output=True, text=True, check=True
    ).stdout
    assert "db-password" not in diff and value not in diff  # not in the container's layer

    assert files.path("i-sec").is_dir()
    await backend.stop(running)
    await backend.remove(running)
    assert not files.path("i-sec").exists()


async def test_a_standby_with_secrets_is_made_with_them_and_its_files_go_with_it(
    backend: ContainerBackend, files: SecretFiles, server_image: str
) -> None:
    spec = spec_with(server_image, b"first")
    await backend.prepare(spec, "i-ahead")
    assert sorted(os.listdir(files.path("i-ahead"))) == ["api-key", "db-password"]
    # A new value makes another spec: the standby is dropped, not started with the old one.
    rotated = dataclasses.replace(spec, secrets={"db-password": SecretValue(b"second")})
    running = await started(backend, rotated, "i-rotated")
    assert running.id == "i-rotated"
    assert not files.path("i-ahead").exists()
    assert exec_in(running, "cat", "/var/plat/secrets/db-password").stdout == "second"
    await backend.prepare(spec, "i-again")
    await backend.unprepare("vault")
    assert not files.path("i-again").exists()


async def test_sweep_removes_the_secret_folders_no_container_uses(
    backend: ContainerBackend, files: SecretFiles, server_image: str
) -> None:
    running = await backend.start(spec_with(server_image, b"kept"), "i-live")
    files.write("i-dead", {"x": SecretValue(b"left by a daemon that died")}, uid=None, gid=None)
    await backend.sweep()
    assert files.path("i-live").is_dir()
    assert not files.path("i-dead").exists()
    # The daemon dies; its container is removed (`plat daemon stop` cleaned up by force);
    # the next daemon's sweep finds the folder no container uses.
    subprocess.run(["podman", "rm", "-f", running.backend_ref], check=True, capture_output=True)
    await backend.sweep()
    assert files.path("i-live").is_dir()  # the folder of a start in progress looks the same
    restarted = ContainerBackend(backend.endpoint, backend.daemon_id, secret_files=files)
    try:
        await restarted.sweep()
    finally:
        await restarted.close()
    assert not files.path("i-live").exists()


async def test_only_the_first_sweep_lists_the_daemons_containers(
    backend: ContainerBackend, files: SecretFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watchdog sweeps every 2 s: a listing each time cost the engine and the
    daemon CPU in proportion to the standby containers of functions at zero."""
    engine = backend._engine
    listings: list[object] = []
    real = engine.containers

    async def counted(filters: dict[str, list[str]]) -> list[dict[str, object]]:
        if "label" in filters:
            listings.append(filters)
        return await real(filters)

    monkeypatch.setattr(engine, "containers", counted)
    files.write("i-dead", {"x": SecretValue(b"left")}, uid=None, gid=None)
    await backend.sweep()
    first = list(listings)  # the instances, and the holders of their networks
    assert [f["label"][0].split("=")[0] for f in first] == ["plat.daemon", "plat.holder"]
    for _ in range(2):
        await backend.sweep()
    assert listings == first
    assert not files.path("i-dead").exists()


async def test_an_instance_with_secrets_does_not_start_without_a_place_for_them(
    tmp_path: Path, server_image: str
) -> None:
    async with engine_backend(tmp_path, "published") as backend:
        with pytest.raises(PlatError, match="no place for them"):
            await backend.start(spec_with(server_image, b"nowhere"), "i-none")
        assert await backend.list() == []


async def test_a_bad_secret_name_starts_nothing_and_leaves_no_files(
    backend: ContainerBackend, files: SecretFiles, server_image: str
) -> None:
    spec = InstanceSpec(
        function="vault", version="v1", image=server_image, secrets={"../x": SecretValue(b"v")}
    )
    with pytest.raises(PlatError, match="not a valid secret name"):
        await backend.start(spec, "i-bad")
    await backend.prepare(spec, "i-ahead")  # best effort: no standby, no error
    assert await backend.list() == []
    assert os.listdir(files.root) == []
