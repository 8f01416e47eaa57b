"""Results of queued calls POSTed to their ``X-Callback-Url``.

The POST carries the function's answer: its body (up to what the store keeps) and
headers, with ``X-Call-Id``, ``X-Plat-Status``, ``X-Plat-State``,
``X-Plat-Attempts``, ``X-Plat-Duration``, ``X-Plat-Function`` and
``X-Plat-Trigger``. A 2xx answer delivers it; a 5xx, 408, 429 or no answer is
tried again (``ATTEMPTS`` in all, backing off), any other answer gives up. A
delivery still pending when the daemon stops is made after the restart, so a
receiver may see a result twice: ``X-Call-Id`` lets it drop the second.

Where results may go (the daemon makes the request, so this is a question of
what a caller may make it reach): loopback addresses and ``localhost`` always;
other hosts only when listed in ``PLAT_CALLBACK_HOSTS`` (comma-separated, shell
patterns such as ``*.example.com``). Only ``http`` and ``https``.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
from dataclasses import dataclass

import aiohttp
from yarl import URL

from plat.daemon.asyncq.ledger import Ledger
from plat.daemon.hosts import is_loopback
from plat.daemon.http.relay import HOP_BY_HOP
from plat.daemon.store import Store
from plat.daemon.store.calls import QueuedCall, Statement, call_saved
from plat.tenancy import split_key

log = logging.getLogger(__name__)

ATTEMPTS = 5
FIRST_DELAY = 1.0
MAX_DELAY = 30.0
TIMEOUT = 10.0
CONCURRENT = 64
# The function's Date and Server describe its answer, not this request.
_NOT_PASSED = {name.decode() for name in HOP_BY_HOP} | {"x-call-id", "date", "server"}


@dataclass(frozen=True)
class CallbackPolicy:
    """Hosts a callback may name besides loopback (shell patterns, lower case)."""

    hosts: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> CallbackPolicy:
        return cls(tuple(p.strip().lower() for p in text.split(",") if p.strip()))

    def problem(self, url: str) -> str | None:
        """What is wrong with ``url`` as a callback, or None. The host checked is the
        one the request will reach: parsed as aiohttp parses it (yarl, IDNA)."""
        if not url.isascii() or not url.isprintable() or " " in url:
            return (
                f"X-Callback-Url {url[:100]!r} must be printable ASCII with no spaces "
                "(percent-encode the rest)"
            )
        try:
            parts = URL(url)
            host = (parts.host or "").lower()
            parts.port  # noqa: B018 -- raises ValueError on a bad port
        except (ValueError, TypeError) as exc:
            return f"X-Callback-Url {url[:100]!r} is not a URL: {exc}"
        if parts.scheme not in ("http", "https") or not host:
            return f"X-Callback-Url {url[:100]!r} must be an http:// or https:// URL with a host"
        if is_loopback(host) or any(fnmatch.fnmatchcase(host, p) for p in self.hosts):
            return None
        return (
            f"callbacks to {host} are not allowed: only loopback addresses, localhost and "
            "the hosts in the daemon's PLAT_CALLBACK_HOSTS"
        )


class Callbacks:
    def __init__(self, store: Store, ledger: Ledger, policy: CallbackPolicy) -> None:
        self.store = store
        self.ledger = ledger
        self.policy = policy
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(CONCURRENT)

    def check_url(self, url: str) -> str | None:
        return self.policy.problem(url)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=TIMEOUT), auto_decompress=False
        )
        for call_id in await self.store.pending_callbacks():
            call = await self.store.get_call(call_id)
            if call is not None:
                self.deliver(call)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def deliver(self, call: QueuedCall) -> None:
        """Start delivering a finished call's result (its state is committed)."""
        task = asyncio.get_running_loop().create_task(
            self._deliver(call), name=f"callback-{call.id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, call: QueuedCall) -> None:
        url = call.callback_url
        if url is None or self._session is None:
            return
        if (problem := self.policy.problem(url)) is not None:  # the policy changed since
            log.warning("not delivering the result of call %s: %s", call.id, problem)
            call.callback_state = "failed"
            self.ledger.write(_save(call))
            return
        delay = FIRST_DELAY
        while True:
            call.callback_attempts += 1
            async with self._slots:  # not held while backing off: others go meanwhile
                status = await self._post(call, url)
            call.callback_status = status or None
            if 200 <= status < 300:
                call.callback_state = "delivered"
            elif call.callback_attempts >= ATTEMPTS or not _retryable(status):
                call.callback_state = "failed"
                log.warning(
                    "the result of call %s could not be delivered to %s (%s after %d tries)",
                    call.id,
                    url,
                    status or "no answer",
                    call.callback_attempts,
                )
            self.ledger.write(_save(call))
            if call.callback_state != "pending":
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)

    async def _post(self, call: QueuedCall, url: str) -> int:
        """One try: the receiver's status, 0 when it did not answer."""
        assert self._session is not None
        headers = [(k, v) for k, v in call.response_headers if k.lower() not in _NOT_PASSED]
        headers += [
            ("X-Call-Id", call.id),
            ("X-Plat-Status", str(call.status or 0)),
            ("X-Plat-State", call.state),
            ("X-Plat-Attempts", str(call.attempts)),
            ("X-Plat-Duration", f"{call.duration or 0.0:.6f}"),
            ("X-Plat-Function", split_key(call.function)[0]),
            ("X-Plat-Trigger", call.trigger),
        ]
        if call.error:
            headers.append(("X-Plat-Error", call.error.replace("\r", " ").replace("\n", " ")))
        try:
            async with self._session.post(
                url, data=call.response_body or b"", headers=headers, allow_redirects=False
            ) as resp:
                await resp.read()
                return resp.status
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            log.debug("callback of %s to %s: %s", call.id, url, exc)
            return 0


def _retryable(status: int) -> bool:
    return status == 0 or status >= 500 or status in (408, 429)


def _save(call: QueuedCall) -> Statement:
    call.updated_at = max(call.updated_at, time.time())
    return call_saved(call)
