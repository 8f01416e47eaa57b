"""plat.daemon.drivers.container.engine: the one Engine API client, against a real Podman."""

from __future__ import annotations

import asyncio
import os
import tarfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.base_protocol import BaseProtocol

from plat.daemon.drivers.container.engine import (
    KEEPALIVE_SECONDS,
    POOL_LIMIT,
    Engine,
    EngineAPIError,
    json_objects,
)
from plat.engine import PodmanService
from plat.errors import EngineError


async def decoded(*chunks: bytes) -> list[object]:
    reader = aiohttp.StreamReader(BaseProtocol(asyncio.get_running_loop()), 2**16)
    for chunk in chunks:
        reader.feed_data(chunk)
    reader.feed_eof()
    return [value async for value in json_objects(reader)]


async def test_json_values_split_anywhere_are_decoded_whole() -> None:
    text = '{"stream": "STEP 1/2: FROM x\\n"}\r\n{"a": "caf\u00e9"}\n{"b": [1, 2]}{"c": 3}\n'
    data = text.encode()
    whole = [{"stream": "STEP 1/2: FROM x\n"}, {"a": "caf\u00e9"}, {"b": [1, 2]}, {"c": 3}]
    assert await decoded(data) == whole
    for cut in range(1, len(data)):  # also inside the two bytes of "é"
        assert await decoded(data[:cut], data[cut:]) == whole, cut


async def test_a_line_that_is_not_json_is_skipped() -> None:
    assert await decoded(b'not json\n{"a": 1}\n', b"{truncated") == [{"a": 1}]


async def test_an_engine_that_is_not_there_is_an_engine_error_naming_it(tmp_path: Path) -> None:
    endpoint = f"unix://{tmp_path}/missing.sock"
    async with Engine(endpoint) as engine:
        with pytest.raises(EngineError, match=f"container engine at {endpoint} failed") as info:
            await engine.inspect("anything")
        assert info.value.hint is not None and "plat doctor" in info.value.hint
        with pytest.raises(EngineError, match="failed"):
            async for _event in engine.events({"type": ["container"]}):
                pass


async def test_a_call_the_engine_never_answers_times_out(tmp_path: Path) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def swallow(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # and never answers

    server = await asyncio.start_unix_server(swallow, path=str(tmp_path / "mute.sock"))
    try:
        async with Engine(f"unix://{tmp_path}/mute.sock", timeout=0.5) as engine:
            started = time.monotonic()
            with pytest.raises(EngineError, match="failed"):
                await engine.inspect("anything")
            assert time.monotonic() - started < 5
    finally:
        server.close()
        for writer in accepted:
            writer.close()
            await writer.wait_closed()
        await server.wait_closed()


@pytest.fixture
async def engine(podman_service: PodmanService) -> AsyncIterator[Engine]:
    async with Engine(podman_service.endpoint) as client:
        yield client


def our_sockets() -> int:
    return sum(
        os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        for fd in os.listdir("/proc/self/fd")
        if os.path.exists(f"/proc/self/fd/{fd}")
    )


@pytest.mark.container
async def test_a_container_through_its_life(engine: Engine, server_image: str) -> None:
    name = f"plat-engine-test-{uuid.uuid4().hex[:8]}"
    command = ["sh", "-c", "echo to-out; echo to-err >&2; exec sleep 60"]
    body = {"Image": server_image, "Cmd": command, "Labels": {"plat.test": name}}
    ref = await engine.create(body, name)
    try:
        await engine.start(ref)
        await engine.start(ref)  # already started: no error
        state = await engine.inspect(ref)
        assert state is not None and state["State"]["Status"] == "running"
        (listed,) = await engine.containers({"label": [f"plat.test={name}"]})
        assert listed["Id"] == ref
        await engine.rename(ref, f"{name}-renamed")
        assert (await engine.inspect(ref) or {})["Name"].lstrip("/") == f"{name}-renamed"
        for _ in range(100):
            if "to-err" in await engine.logs(ref, tail=5):
                break
            await asyncio.sleep(0.1)
        assert await engine.logs(ref, tail=5) == "to-out\nto-err\n"
        assert await engine.logs(ref, tail=1) == "to-err\n"
        await engine.stop(ref, timeout=0)
        await engine.stop(ref, timeout=0)  # stopped already: no error
        assert (await engine.inspect(ref) or {})["State"]["Status"] == "exited"
    finally:
        await engine.remove(ref)
    await engine.remove(ref)  # gone already: no error
    assert await engine.inspect(ref) is None
    assert await engine.containers({"label": [f"plat.test={name}"]}) == []
    await engine.rename(ref, "nobody")  # nothing to rename: no error
    assert await engine.logs(ref, tail=5) == ""


@pytest.mark.container
async def test_an_error_the_engine_answers_carries_its_message(engine: Engine) -> None:
    with pytest.raises(EngineAPIError, match=r"container engine error: .*no-such-image") as info:
        await engine.create({"Image": "localhost/plat-test/no-such-image:v0"})
    assert info.value.http_status == 404


@pytest.mark.container
async def test_archive_export_of_a_created_container(
    engine: Engine, server_image: str, tmp_path: Path
) -> None:
    ref = await engine.create({"Image": server_image, "Cmd": ["true"]})
    try:
        assert await engine.get_archive(ref, "/etc", tmp_path / "etc.tar")
        with tarfile.open(tmp_path / "etc.tar") as tar:
            assert "etc/os-release" in tar.getnames()
        assert not await engine.get_archive(ref, "/no/such/folder", tmp_path / "none.tar")
    finally:
        await engine.remove(ref)


@pytest.mark.container
async def test_images_and_a_build_from_a_folder(
    engine: Engine, server_image: str, tmp_path: Path
) -> None:
    assert await engine.image_exists(server_image)
    assert not await engine.image_exists("localhost/plat-test/no-such-image:v0")
    await engine.remove_image("localhost/plat-test/no-such-image:v0")  # no error
    context = tmp_path / "context"
    context.mkdir()
    (context / "greeting.txt").write_text("hello\n")
    (context / "Containerfile").write_text(
        f"FROM {server_image}\nCOPY greeting.txt /greeting.txt\nRUN cat /greeting.txt\n"
    )
    tag = f"localhost/plat-test/engine-build:{uuid.uuid4().hex[:8]}"
    params = {"t": tag, "dockerfile": "Containerfile", "rm": "1", "pull": "0"}
    messages = [m async for m in engine.build(context, params)]
    output = "".join(str(m.get("stream", "")) for m in messages)
    assert "hello" in output and not any("error" in m for m in messages)
    try:
        assert await engine.image_exists(tag)
    finally:
        await engine.remove_image(tag)
    assert not await engine.image_exists(tag)


@pytest.mark.container
async def test_short_calls_share_a_bounded_pool_that_lets_idle_sockets_go(
    engine: Engine,
) -> None:
    await engine.inspect("warm-up")
    await asyncio.sleep(2 * KEEPALIVE_SECONDS + 1.5)
    before = our_sockets()
    await asyncio.gather(*(engine.inspect(f"missing-{n}") for n in range(POOL_LIMIT * 4)))
    assert our_sockets() - before <= POOL_LIMIT
    # Idle sockets are looked at every KEEPALIVE_SECONDS: each goes within two rounds.
    await asyncio.sleep(2 * KEEPALIVE_SECONDS + 1.5)
    assert our_sockets() - before <= 0
