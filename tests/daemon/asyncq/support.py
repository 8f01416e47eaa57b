"""What the queued-call tests share: a real callback receiver on loopback and a
read-only view of a daemon's store.

The receiver is a small aiohttp server in its own thread (so synchronous tests
and the daemon's event loop never share a loop): it records every POST it gets
(headers, body, arrival time) and answers 200, or a status chosen per call id
(``fail``) to make the daemon retry its delivery.

The store is read with the sqlite3 module, read-only, next to the running daemon
(WAL lets a reader in while it writes): counting rows is the only way to see
that an accepted call was committed and that a refused one left nothing.
"""

from __future__ import annotations

import asyncio
import base64
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web


@dataclass(frozen=True)
class Delivery:
    """One POST the receiver got (header names in lower case)."""

    call_id: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class CallbackReceiver:
    """Records callbacks; ``fail[call_id] = [503, 500]`` answers those first."""

    deliveries: list[Delivery] = field(default_factory=list)
    fail: dict[str, list[int]] = field(default_factory=dict)
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/results"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        call_id = request.headers.get("X-Call-Id", "")
        with self._lock:
            self.deliveries.append(
                Delivery(
                    call_id, {k.lower(): v for k, v in request.headers.items()}, body, time.time()
                )
            )
            planned = self.fail.get(call_id)
            status = planned.pop(0) if planned else 200
        return web.Response(status=status, text="thanks")

    def snapshot(self) -> list[Delivery]:
        with self._lock:
            return list(self.deliveries)

    def counts(self) -> Counter[str]:
        """Deliveries per call id."""
        return Counter(d.call_id for d in self.snapshot())

    def by_id(self) -> dict[str, list[Delivery]]:
        out: dict[str, list[Delivery]] = {}
        for delivery in self.snapshot():
            out.setdefault(delivery.call_id, []).append(delivery)
        return out

    def wait_for(self, ids: set[str], timeout: float) -> bool:
        """Whether every id in ``ids`` was delivered within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ids <= set(self.counts()):
                return True
            time.sleep(0.05)
        return ids <= set(self.counts())


class ReceiverThread:
    """``with ReceiverThread() as receiver:`` serves a :class:`CallbackReceiver`."""

    def __init__(self) -> None:
        self.receiver = CallbackReceiver()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def __enter__(self) -> CallbackReceiver:
        self._thread.start()
        self._call(self._start())
        return self.receiver

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            self._call(self._runner.cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.receiver._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.receiver.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)


# --- the store, read only


def _connect(home: Path) -> sqlite3.Connection:
    db = sqlite3.connect(f"file:{home / 'plat.db'}?mode=ro", uri=True, timeout=10)
    db.row_factory = sqlite3.Row
    return db


def stored_calls(home: Path, where: str = "", *args: object) -> list[dict[str, Any]]:
    """Rows of the ``calls`` table (``where``: an SQL condition), oldest first."""
    clause = f"WHERE {where}" if where else ""
    with closing(_connect(home)) as db:
        rows = db.execute(f"SELECT * FROM calls {clause} ORDER BY created_at", args).fetchall()
    return [dict(r) for r in rows]


def stored_attempts(home: Path) -> dict[str, list[dict[str, Any]]]:
    """Each call's attempts, in order."""
    with closing(_connect(home)) as db:
        rows = db.execute("SELECT * FROM call_attempts ORDER BY call_id, attempt").fetchall()
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(row["call_id"], []).append(dict(row))
    return out


def count_calls(home: Path) -> int:
    with closing(_connect(home)) as db:
        return int(db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])


def wait_states(
    home: Path, want: Callable[[list[dict[str, Any]]], bool], timeout: float
) -> list[dict[str, Any]]:
    """The calls once ``want(calls)`` holds; AssertionError (with a summary) past ``timeout``."""
    deadline = time.monotonic() + timeout
    calls = stored_calls(home)
    while not want(calls):
        if time.monotonic() > deadline:
            states = Counter(c["state"] for c in calls)
            raise AssertionError(f"calls not as wanted after {timeout:.0f} s: {dict(states)}")
        time.sleep(0.1)
        calls = stored_calls(home)
    return calls


# --- clients


def basic_auth(password: str) -> dict[str, str]:
    token = base64.b64encode(f"admin:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@dataclass(frozen=True)
class Accepted:
    status: int
    call_id: str
    body: bytes


async def post_many(
    url: str,
    count: int,
    *,
    concurrency: int,
    headers: dict[str, str] | None = None,
    body: Callable[[int], bytes] = lambda n: b"%d" % n,
) -> list[Accepted]:
    """``count`` POSTs to ``url``, ``concurrency`` at a time; every answer, in order."""
    out: list[Accepted | None] = [None] * count
    numbers = iter(range(count))
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency), timeout=aiohttp.ClientTimeout(total=60)
    ) as session:

        async def worker() -> None:
            for n in numbers:
                async with session.post(url, data=body(n), headers=headers or {}) as resp:
                    data = await resp.read()
                    out[n] = Accepted(resp.status, resp.headers.get("X-Call-Id", ""), data)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return [a for a in out if a is not None]
