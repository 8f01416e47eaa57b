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
    interval: float = 0.005,
    fast_for: float = 1.0,
    max_interval: float = 0.1,
) -> float:
    """Poll until the instance answers; returns seconds waited.

    Probes every ``interval`` seconds for the first ``fast_for`` seconds, where
    cold starts end (a refused probe costs ~0.4 ms of CPU), then backs off by
    1.5x up to ``max_interval``: a growing delay from the start overshoots the
    moment the instance is ready by up to the delay itself.
    Raises NotReady when ``alive()`` says the instance died or ``timeout`` passes.
    """
    started = time.monotonic()
    deadline = started + timeout
    slow_from = started + fast_for
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
        if now >= slow_from:
            delay = min(delay * 1.5, max_interval)
