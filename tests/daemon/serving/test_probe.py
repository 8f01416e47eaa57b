"""plat.daemon.serving.probe: readiness polling against real loopback servers."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from plat.daemon.serving.probe import PROBE_HEADER, NotReady, probe_once, wait_ready


class Server:
    """A loopback server that drops connections until ``ready``, then answers HTTP 200."""

    def __init__(self) -> None:
        self.ready = False
        self.ready_at = 0.0
        self.attempts = 0
        self.probe_headers: list[str | None] = []
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    def make_ready(self) -> None:
        self.ready = True
        self.ready_at = time.monotonic()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.attempts += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if self.ready:
                headers = dict(
                    line.split(": ", 1) for line in head.decode().split("\r\n")[1:] if line
                )
                self.probe_headers.append(headers.get(PROBE_HEADER))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    srv.server = await asyncio.start_server(srv.handle, "127.0.0.1", 0)
    try:
        yield srv
    finally:
        srv.server.close()
        await srv.server.wait_closed()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        yield s


async def always_alive() -> bool:
    return True


async def test_probe_once_sends_the_probe_header(
    server: Server, session: aiohttp.ClientSession
) -> None:
    assert not await probe_once(session, "127.0.0.1", server.port, timeout=1.0)
    server.make_ready()
    assert await probe_once(session, "127.0.0.1", server.port, timeout=1.0)
    assert server.probe_headers == ["1"]


async def test_probe_once_refused_is_false(session: aiohttp.ClientSession) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
        assert not await probe_once(session, "127.0.0.1", port, timeout=1.0)


async def test_polls_fast_at_first_and_notices_readiness_promptly(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """Cold starts end within the first second: probes there are a few ms apart, so
    the wait ends soon after the instance is ready, not one growing delay later."""
    loop = asyncio.get_running_loop()
    loop.call_later(0.3, server.make_ready)
    waited = await wait_ready(session, "127.0.0.1", server.port, timeout=10, alive=always_alive)
    late = time.monotonic() - server.ready_at
    assert 0.3 <= waited < 1.0
    # A 1.5x backoff from 10 ms had ~50 ms between probes here and found readiness
    # up to that late; a 5 ms cadence makes dozens of attempts in 0.3 s even on a busy
    # host (connections, not probes: aiohttp retries once on a dropped connection).
    assert server.attempts >= 30
    assert late < 0.08


async def test_backs_off_after_the_fast_phase(
    server: Server, session: aiohttp.ClientSession
) -> None:
    task = asyncio.create_task(
        wait_ready(
            session,
            "127.0.0.1",
            server.port,
            timeout=10,
            alive=always_alive,
            interval=0.005,
            fast_for=0.2,
            max_interval=0.1,
        )
    )
    await asyncio.sleep(0.2)
    fast = server.attempts
    await asyncio.sleep(1.0)
    slow = server.attempts - fast
    server.make_ready()
    await task
    # Connections, not probes: aiohttp retries a request once on a dropped connection.
    assert fast >= 30
    # Backed off: ~15 probes in that second (the ramp-up to 100 ms), not ~200.
    assert slow <= 60


async def test_not_ready_when_the_instance_dies(session: aiohttp.ClientSession) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

        async def dead() -> bool:
            return False

        with pytest.raises(NotReady, match="exited"):
            await wait_ready(session, "127.0.0.1", port, timeout=10, alive=dead)


async def test_not_ready_after_the_timeout(session: aiohttp.ClientSession) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(NotReady, match="within"):
            await wait_ready(session, "127.0.0.1", port, timeout=0.3, alive=always_alive)
        assert time.monotonic() - started < 2
