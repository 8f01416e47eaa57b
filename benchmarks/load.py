"""A bounded HTTP load generator that records every outcome.

:func:`run_load` runs ``clients`` concurrent clients against a gateway URL for a
bounded time; each client sends its next request as soon as the last one is
answered (keep-alive, aiohttp's client). Every request ends as one
:class:`Outcome`: an HTTP status (with the JSON ``error`` code of an error
answer), or no answer at all (``failure`` names why: a reset, a refused
connection, a timeout). Successes are only counted (their latencies kept in a
compact array), so a run of many minutes stays small in memory; every other
outcome is kept in full, up to :data:`MAX_DETAIL`.

:class:`Background` runs the same load in a thread while the caller injects
faults; :func:`abandon` sends requests and disconnects before their answer.
Used by the chaos tests (``tests/chaos``) and the soak benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
import time
from array import array
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from urllib.parse import urlsplit

import aiohttp

MAX_DETAIL = 10_000  # outcomes other than 2xx kept in full per run


@dataclass(frozen=True)
class Outcome:
    """How one request ended. ``started`` is seconds since the run began (monotonic)."""

    path: str
    started: float
    latency: float
    status: int  # 0: no HTTP answer (see ``failure``)
    error: str = ""  # the ``error`` field of a JSON error answer; "" when there is none
    failure: str = ""  # no answer: the exception's class name, or "timeout"

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def json_error(self) -> bool:
        """An error answer with a JSON body naming the error."""
        return self.status >= 400 and bool(self.error)

    def describe(self) -> str:
        what = self.failure or f"{self.status} {self.error or '(no JSON error)'}"
        return f"{self.path} at {self.started:.2f} s: {what} after {self.latency * 1000:.0f} ms"


@dataclass
class LoadResult:
    """Everything one run recorded."""

    clients: int
    seconds: float = 0.0
    counts: Counter[str] = field(default_factory=Counter)  # "200", "502 bad_gateway", "reset"
    latencies: array[float] = field(default_factory=lambda: array("d"))  # of every answer
    detail: list[Outcome] = field(default_factory=list)  # every non-2xx outcome (bounded)
    dropped: int = 0  # non-2xx outcomes past MAX_DETAIL (counted, not kept)

    def add(self, outcome: Outcome) -> None:
        if outcome.failure:
            key = outcome.failure
        elif outcome.ok:
            key = str(outcome.status)
        else:
            key = f"{outcome.status} {outcome.error}".rstrip()
        self.counts[key] += 1
        if outcome.status:
            self.latencies.append(outcome.latency)
        if not outcome.ok:
            if len(self.detail) < MAX_DETAIL:
                self.detail.append(outcome)
            else:
                self.dropped += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def succeeded(self) -> int:
        return sum(n for key, n in self.counts.items() if key[:1] == "2" and key.isdigit())

    @property
    def failed(self) -> list[Outcome]:
        """The outcomes that were not 2xx (as kept: see ``dropped``)."""
        return self.detail

    @property
    def unanswered(self) -> list[Outcome]:
        """Requests that got no HTTP answer: resets, refused connections, timeouts."""
        return [o for o in self.detail if not o.status]

    def statuses(self) -> Counter[int]:
        out: Counter[int] = Counter()
        for key, n in self.counts.items():
            head = key.split()[0]
            out[int(head) if head.isdigit() else 0] += n
        return out

    def percentile(self, q: float) -> float:
        """The ``q`` (0..100) percentile of the answers' latencies, in seconds."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
        return ordered[index]

    def summary(self, examples: int = 8) -> str:
        """One paragraph for an assertion message: counts, latencies and a few failures."""
        counts = ", ".join(f"{key}: {n}" for key, n in self.counts.most_common())
        text = (
            f"{self.total} requests by {self.clients} clients in {self.seconds:.1f} s "
            f"({counts}); p50 {self.percentile(50) * 1000:.0f} ms, "
            f"p99 {self.percentile(99) * 1000:.0f} ms, "
            f"max {max(self.latencies, default=0.0) * 1000:.0f} ms"
        )
        if self.detail:
            text += "; first failures: " + "; ".join(o.describe() for o in self.detail[:examples])
        return text


def _error_code(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    return str(data.get("error", "")) if isinstance(data, dict) else ""


async def run_load(
    base_url: str,
    *,
    clients: int,
    seconds: float,
    paths: Sequence[str] = ("",),
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    stop: asyncio.Event | None = None,
    result: LoadResult | None = None,
) -> LoadResult:
    """Load ``base_url + path`` with ``clients`` clients for ``seconds`` (or until ``stop``).

    Client ``i`` always asks ``paths[i % len(paths)]``, so a fixed share of the
    clients takes each path. A request unanswered after ``timeout`` seconds is
    abandoned and recorded as ``failure="timeout"``. No request starts after the
    end; those in flight are awaited (each within its timeout). Outcomes are added
    to ``result`` as they happen when one is given (a caller may read it meanwhile).
    """
    result = result or LoadResult(clients)
    stop = stop or asyncio.Event()
    began = time.monotonic()
    end = began + seconds
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    client_timeout = aiohttp.ClientTimeout(total=timeout)

    async def client(index: int, session: aiohttp.ClientSession) -> None:
        path = paths[index % len(paths)]
        url = base_url + path
        while not stop.is_set() and time.monotonic() < end:
            started = time.monotonic()
            try:
                async with session.get(url, timeout=client_timeout) as resp:
                    body = await resp.read()
                    status = resp.status
            except TimeoutError:
                outcome = Outcome(
                    path, started - began, time.monotonic() - started, 0, "", "timeout"
                )
            except (aiohttp.ClientError, OSError) as exc:
                name = type(exc).__name__
                outcome = Outcome(path, started - began, time.monotonic() - started, 0, "", name)
            else:
                error = _error_code(body) if status >= 400 else ""
                outcome = Outcome(path, started - began, time.monotonic() - started, status, error)
            result.add(outcome)

    async with aiohttp.ClientSession(
        connector=connector, headers=dict(headers or {}), auto_decompress=False
    ) as session:
        await asyncio.gather(*(client(i, session) for i in range(clients)))
    result.seconds = time.monotonic() - began
    return result


def load(base_url: str, **kwargs: object) -> LoadResult:
    """:func:`run_load` to its end, from synchronous code."""
    return asyncio.run(run_load(base_url, **kwargs))  # type: ignore[arg-type]


class Background:
    """:func:`run_load` in a thread of its own, while the caller does something else.

    A context manager: entering starts the load; :meth:`stop` (or leaving) ends it
    early and returns the result; ``result`` may be read while it runs.
    """

    def __init__(self, base_url: str, *, clients: int, seconds: float, **kwargs: object) -> None:
        self.result = LoadResult(clients)
        self._args = (base_url, clients, seconds, kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="load", daemon=True)

    def _main(self) -> None:
        base_url, clients, seconds, kwargs = self._args

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            await run_load(
                base_url,
                clients=clients,
                seconds=seconds,
                stop=self._stop,
                result=self.result,
                **kwargs,  # type: ignore[arg-type]
            )

        try:
            asyncio.run(main())
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    def __enter__(self) -> Background:
        self._thread.start()
        self._ready.wait()
        return self

    def stop(self) -> LoadResult:
        """End the load (requests in flight finish first); idempotent. Raises what it raised."""
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.result

    def wait(self) -> LoadResult:
        """Let the load run to its end; returns the result."""
        self._thread.join()
        return self.stop()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass
class Abandoned:
    """What a round of :func:`abandon` saw."""

    answered: Counter[int] = field(default_factory=Counter)  # status of answers that came first
    left: int = 0  # requests given up (the connection closed before an answer)
    failed: int = 0  # connections that could not be made


async def abandon(
    base_url: str,
    *,
    clients: int,
    max_wait: float,
    headers: Mapping[str, str] | None = None,
    seed: int | None = None,
) -> Abandoned:
    """``clients`` requests at once, each over its own connection closed after a random
    0..``max_wait`` seconds unless its answer came first (raw sockets, HTTP/1.1 GET)."""
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{key}: {value}" for key, value in (headers or {}).items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    rng = random.Random(seed)
    seen = Abandoned()

    async def one(wait: float) -> None:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            seen.failed += 1
            return
        try:
            writer.write(request)
            try:
                head = await asyncio.wait_for(reader.readline(), wait)
            except TimeoutError:
                seen.left += 1
                return
            parts = head.split()
            seen.answered[int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0] += 1
        except OSError:
            seen.failed += 1
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    await asyncio.gather(*(one(rng.uniform(0, max_wait)) for _ in range(clients)))
    return seen
