"""Readiness probing of instances over HTTP.

Template shims answer a request carrying ``X-Plat-Probe: 1`` themselves; for a
user's Dockerfile server any HTTP answer means it is listening and ready.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp

PROBE_HEADER = "X-Plat-Probe"


class NotReady(Exception):
    pass


async def probe_once(session: aiohttp.ClientSession, host: str, port: int, timeout: float) -> bool:
    try:
        async with session.get(
            f"http://{host}:{port}/",
            headers={PROBE_HEADER: "1"},
            timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=timeout),
            allow_redirects=False,
        ) as resp:
            await resp.read()
            return True  # any HTTP answer: the server is up and listening
    except (TimeoutError, aiohttp.ClientError, OSError):
        return False


async def wait_ready(
    session: aiohttp.ClientSession,
    host: str,
    port: int,
    *,
    timeout: float,
    alive: Callable[[], Awaitable[bool]],
    interval: float = 0.01,
) -> float:
    """Poll until the instance answers; returns seconds waited.

    Raises NotReady when ``alive()`` says the instance died or ``timeout`` passes.
    """
    started = time.monotonic()
    deadline = started + timeout
    next_alive_check = started + 0.5
    delay = interval
    while True:
        if await probe_once(session, host, port, timeout=min(1.0, timeout)):
            return time.monotonic() - started
        now = time.monotonic()
        if now >= next_alive_check:
            if not await alive():
                raise NotReady("the instance exited before it became ready")
            next_alive_check = now + 0.5
        if now >= deadline:
            raise NotReady(f"the instance did not become ready within {timeout:.0f} s")
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.1)
