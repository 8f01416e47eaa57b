"""plat.engine: endpoint discovery (pure) and a real Podman API service (container)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from plat.engine import (
    EngineInfo,
    PodmanService,
    _info_from_headers,
    candidate_endpoints,
    find_engine,
    normalize_endpoint,
    ping,
    resolve_engine,
)
from plat.errors import EngineError
from plat.paths import Home

ROOTFUL = "unix:///run/podman/podman.sock"
DOCKER = "unix:///var/run/docker.sock"


@pytest.mark.parametrize(
    ("env", "configured", "expected"),
    [
        ({}, None, [ROOTFUL, DOCKER]),
        (
            {"XDG_RUNTIME_DIR": "/run/user/1000"},
            None,
            [ROOTFUL, "unix:///run/user/1000/podman/podman.sock", DOCKER],
        ),
        (
            {"XDG_RUNTIME_DIR": "/run/user/1000/"},
            None,
            [ROOTFUL, "unix:///run/user/1000/podman/podman.sock", DOCKER],
        ),
        ({"DOCKER_HOST": "unix:///tmp/d.sock"}, None, ["unix:///tmp/d.sock", ROOTFUL, DOCKER]),
        ({"DOCKER_HOST": "/tmp/d.sock"}, None, ["unix:///tmp/d.sock", ROOTFUL, DOCKER]),
        ({"DOCKER_HOST": "tcp://10.0.0.1:2375"}, None, ["tcp://10.0.0.1:2375", ROOTFUL, DOCKER]),
        ({"DOCKER_HOST": "", "CONTAINER_HOST": "  "}, None, [ROOTFUL, DOCKER]),
        (
            {"DOCKER_HOST": "unix:///a.sock", "CONTAINER_HOST": "unix:///b.sock"},
            "/c.sock",
            ["unix:///c.sock", "unix:///a.sock", "unix:///b.sock", ROOTFUL, DOCKER],
        ),
        (
            {"PLAT_ENGINE_HOST": "unix:///p.sock", "DOCKER_HOST": "unix:///d.sock"},
            None,
            ["unix:///p.sock", "unix:///d.sock", ROOTFUL, DOCKER],
        ),
        # configured wins over the environment's PLAT_ENGINE_HOST; duplicates collapse
        (
            {"PLAT_ENGINE_HOST": "unix:///p.sock"},
            "unix:///c.sock",
            ["unix:///c.sock", "unix:///p.sock", ROOTFUL, DOCKER],
        ),
        (
            {"DOCKER_HOST": DOCKER, "CONTAINER_HOST": "/run/podman/podman.sock"},
            DOCKER,
            [DOCKER, ROOTFUL],
        ),
    ],
)
def test_candidate_endpoints(
    env: dict[str, str], configured: str | None, expected: list[str]
) -> None:
    assert candidate_endpoints(env, configured) == expected


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, [ROOTFUL]),
        # named, Docker's socket stays a candidate
        ({"DOCKER_HOST": DOCKER}, [DOCKER, ROOTFUL]),
        ({"PLAT_ENGINE_HOST": "/var/run/docker.sock"}, [DOCKER, ROOTFUL]),
    ],
)
def test_docker_default_socket_left_out_when_podman_is_there(
    env: dict[str, str], expected: list[str]
) -> None:
    assert candidate_endpoints(env, docker_default=False) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/run/x.sock", "unix:///run/x.sock"),
        ("unix:///run/x.sock", "unix:///run/x.sock"),
        ("unix:/run/x.sock", "unix:///run/x.sock"),
        (" unix:///run/x.sock ", "unix:///run/x.sock"),
        ("tcp://127.0.0.1:2375", "tcp://127.0.0.1:2375"),
        ("ssh://me@host", "ssh://me@host"),
    ],
)
def test_normalize_endpoint(raw: str, expected: str) -> None:
    assert normalize_endpoint(raw) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (
            {
                "Api-Version": "1.41",
                "Libpod-Api-Version": "4.3.1",
                "Server": "Libpod/4.3.1 (linux)",
            },
            EngineInfo("e", "podman", "4.3.1", "1.41"),
        ),
        (
            {"Api-Version": "1.43", "Server": "Docker/24.0.7 (linux)"},
            EngineInfo("e", "docker", "24.0.7", "1.43"),
        ),
        ({"Server": "nginx"}, None),
        ({}, None),
    ],
)
def test_info_from_ping_headers(headers: dict[str, str], expected: EngineInfo | None) -> None:
    assert _info_from_headers("e", headers) == expected


def test_ping_missing_socket_is_none_at_once(tmp_path: Path) -> None:
    started = time.monotonic()
    assert ping(f"unix://{tmp_path}/nothing.sock") is None
    assert time.monotonic() - started < 5


def test_ping_socket_nobody_listens_on(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "dead.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))  # bound, never listening: connect is refused
    try:
        assert ping(f"unix://{path}", timeout=0.5) is None
    finally:
        sock.close()


async def test_service_without_podman_binary_raises(tmp_path: Path) -> None:
    service = PodmanService(tmp_path / "p.sock", podman="plat-no-such-podman")
    with pytest.raises(EngineError, match="podman is not installed"):
        await service.start()
    await service.stop()  # nothing started: a no-op


@pytest.mark.container
async def test_podman_service_start_ping_stop(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    home.ensure()
    service = PodmanService.for_home(home)
    started = time.monotonic()
    info = await service.start()
    elapsed = time.monotonic() - started
    assert info.name == "podman"
    assert info.endpoint == f"unix://{home.run_dir / 'podman.sock'}"
    assert elapsed < 10
    assert (service.socket.stat().st_mode & 0o777) == 0o600
    assert await service.start() == info  # idempotent while running

    found = find_engine({}, service.endpoint)
    assert found is not None and found.endpoint == service.endpoint
    assert ping(service.endpoint) == info

    pid = service.pid
    assert pid is not None
    await service.stop()
    await service.stop()  # idempotent
    assert not service.socket.exists()
    assert ping(service.endpoint) is None
    assert not Path(f"/proc/{pid}").exists()  # terminated and reaped
    with pytest.raises(EngineError):
        await service.start()


@pytest.mark.container
async def test_a_kept_service_that_dies_is_started_again(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    home.ensure()
    service = PodmanService.for_home(home)
    await service.start()
    keeper = asyncio.create_task(service.keep_running())
    try:
        first = service.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if service.pid not in (None, first) and ping(service.endpoint) is not None:
                break
            await asyncio.sleep(0.1)
        assert service.pid not in (None, first), "the service was not started again"
        assert ping(service.endpoint) is not None
    finally:
        await service.stop()
        keeper_done = await asyncio.wait_for(keeper, 10)  # returns on its own after stop()
    assert keeper_done is None
    assert ping(service.endpoint) is None


@pytest.mark.container
async def test_resolve_engine_starts_and_owns_a_service(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    home.ensure()
    # No DOCKER_HOST etc.: only the well-known sockets, which may or may not answer here.
    info, service = await resolve_engine(home, {}, None)
    try:
        if service is not None:
            assert info.endpoint == service.endpoint
            assert service.socket.parent == home.run_dir
        assert ping(info.endpoint) is not None
    finally:
        if service is not None:
            await service.stop()


@pytest.mark.container
async def test_resolve_engine_prefers_the_configured_endpoint(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    home.ensure()
    service = PodmanService(tmp_path / "other.sock")
    await service.start()
    try:
        info, started = await resolve_engine(home, {}, service.endpoint)
        assert started is None
        assert info.endpoint == service.endpoint
    finally:
        await service.stop()
