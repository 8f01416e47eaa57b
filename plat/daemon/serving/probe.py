"""Readiness probing of instances over HTTP.

Template shims answer a request carrying ``X-Plat-Probe: 1`` themselves; for a
user's Dockerfile server any HTTP answer means it is listening and ready. A shim
whose every worker is stuck in a handler answers with ``X-Plat-Status: busy``:
it is listening, but no call it is given can run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Literal

import aiohttp

PROBE_HEADER = "X-Plat-Probe"
STATUS_HEADER = "X-Plat-Status"

Health = Literal["ready", "busy", "down"]


class NotReady(Exception):
    pass


async def probe_health(
    session: aiohttp.ClientSession, host: str, port: int, timeout: float
) -> Health:
    """ "ready" (any HTTP answer), "busy" (a shim with no free worker) or "down"."""
    try:
        async with session.get(
            f"http://{host}:{port}/",
            headers={PROBE_HEADER: "1"},
            timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=timeout),
            allow_redirects=False,
        ) as resp:
            await resp.read()
            if resp.headers.get(STATUS_HEADER) == "busy":
                return "busy"
            return "ready"
    except (TimeoutError, aiohttp.ClientError, OSError):
        return "down"


async def probe_once(session: aiohttp.ClientSession, host: str, port: int, timeout: float) -> bool:
    """Whether the instance answers HTTP at all (busy or not): it is up and listening."""
    return await probe_health(session, host, port, timeout) != "down"


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
