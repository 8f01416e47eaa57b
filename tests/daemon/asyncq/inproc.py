"""Pieces for in-process tests of the queue: the real store in a fresh SQLite file,
calls and function states to feed it, and an invoker that answers from a script.

The invoker is the narrow seam: the queue's decisions (retries, backoff, budget,
share, restart) are what these tests check; that an attempt really goes through
the gateway is checked by tests/test_async.py in real containers.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from plat.daemon.asyncq.invoker import Invoker, Outcome
from plat.daemon.serving.function_state import FunctionState
from plat.daemon.store import Store
from plat.daemon.store.calls import QueuedCall
from plat.manifest import Manifest

_ids = itertools.count(1)


@pytest.fixture(name="store")
async def store_fixture(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store(tmp_path / "plat.db")
    await store.open()
    yield store
    await store.close()


def manifest(name: str = "fn", **fields: Any) -> Manifest:
    return Manifest.model_validate({"name": name, "runtime": "python", **fields})


@dataclass
class Fn:
    """What the queue and cron read of a FunctionState: its key and manifest."""

    name: str
    manifest: Manifest


def functions(*manifests: Manifest) -> dict[str, FunctionState]:
    return {m.name: cast(FunctionState, Fn(m.name, m)) for m in manifests}


def call(function: str = "fn", *, callback: str | None = None, **fields: Any) -> QueuedCall:
    now = time.time()
    data: dict[str, Any] = {
        "id": f"call-{next(_ids):06d}",
        "function": function,
        "trigger": "async",
        "method": "POST",
        "target": "/p?q=1",
        "headers": [("X-Test", "t")],
        "body": b"body",
        "callback_url": callback,
        "created_at": now,
        "next_at": now,
        "updated_at": now,
    }
    data.update(fields)
    return QueuedCall(**data)


Script = Callable[[dict[str, str], int], Outcome]


@dataclass
class ScriptedInvoker:
    """Answers each attempt with ``script(headers, attempt)``; records the heads,
    how many attempts ran at once, and may hold them (``gate``) until released."""

    script: Script = lambda headers, attempt: Outcome(status=200, body=b"ok")
    heads: list[dict[str, str]] = field(default_factory=list)
    timeouts: list[float] = field(default_factory=list)
    gate: asyncio.Event | None = None
    running: int = 0
    most: int = 0

    async def attempt(
        self,
        function: str,
        method: bytes,
        target: bytes,
        request_headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        timeout: float,
    ) -> Outcome:
        request = f"{method.decode()} /function/{function}{target.decode()} HTTP/1.1"
        headers = {"_request": request, "_body": body.decode("latin-1")}
        for name, value in request_headers:
            headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        self.heads.append(headers)
        self.timeouts.append(timeout)
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            if self.gate is not None:
                await self.gate.wait()
            else:
                await asyncio.sleep(0)
            return self.script(headers, int(headers["x-plat-attempt"]))
        finally:
            self.running -= 1

    async def close(self) -> None:
        pass

    def attempts_of(self, call_id: str) -> list[int]:
        return [int(h["x-plat-attempt"]) for h in self.heads if h["x-call-id"] == call_id]


def as_invoker(scripted: ScriptedInvoker) -> Invoker:
    return cast(Invoker, scripted)


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (on the loop) until ``predicate()``; AssertionError past ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


async def stored(store: Store, call_id: str) -> QueuedCall:
    found = await store.get_call(call_id)
    assert found is not None, call_id
    return found
