"""Local ports and HTTP probes: a free port, one GET, waiting for a 200."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Mapping

from benchmarks.context import BenchError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, headers: Mapping[str, str] | None = None, timeout: float = 5.0) -> int:
    """The status of one GET (0 when nothing answered)."""
    req = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return 0


def wait_http_ok(url: str, timeout: float, interval: float = 0.01) -> float:
    """Poll ``url`` every ``interval`` s until it answers 200; returns the seconds waited."""
    started = time.perf_counter()
    deadline = started + timeout
    while time.perf_counter() < deadline:
        if http_get(url, timeout=1.0) == 200:
            return time.perf_counter() - started
        time.sleep(interval)
    raise BenchError(f"{url} did not answer 200 within {timeout:.0f} s")
