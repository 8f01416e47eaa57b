"""The queue's decisions with the real store and ledger and a scripted invoker:
what is retried and what ends a call, the attempt budget, backoff, each
function's share, the queue limit, a restart, a removed function, a manual retry."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from plat.daemon.asyncq.invoker import Outcome
from plat.daemon.asyncq.ledger import Ledger
from plat.daemon.asyncq.queue import AsyncQueue, CallExists, QueueFull
from plat.daemon.serving.function_state import FunctionState
from plat.daemon.store import Store
from plat.daemon.store.calls import QueuedCall
from plat.manifest import Manifest
from tests.daemon.asyncq.inproc import (
    ScriptedInvoker,
    as_invoker,
    call,
    functions,
    manifest,
    store_fixture,
    stored,
    until,
)

__all__ = ["store_fixture"]

FAST = {"retries": 3, "backoff": "10ms", "max_backoff": "40ms"}
AUTH = "Basic YWRtaW46cHc="


@dataclass
class Rig:
    store: Store
    ledger: Ledger
    invoker: ScriptedInvoker
    fns: dict[str, FunctionState]
    finished: list[tuple[str, str]]  # (id, state when on_finished ran)
    queue: AsyncQueue = field(init=False)

    async def accept(self, *calls: QueuedCall) -> None:
        for one in calls:
            await self.queue.accept(one, self.fns[one.function].manifest)

    async def done(self, *ids: str, timeout: float = 5.0) -> list[QueuedCall]:
        """The calls once all are finished. A call whose caller left before its 202
        is committed by the ledger's own connection a moment later: not found yet
        is not finished yet."""
        deadline = time.monotonic() + timeout
        while True:
            got = [await self.store.get_call(i) for i in ids]
            if all(c is not None and c.state in ("done", "failed", "dead") for c in got):
                return [c for c in got if c is not None]
            if time.monotonic() > deadline:
                raise AssertionError(
                    [(i, c and c.state, c and c.attempts) for i, c in zip(ids, got, strict=True)]
                )
            await asyncio.sleep(0.01)

    async def restart(self) -> None:
        await self.queue.close()
        await self.ledger.close()
        self.ledger = Ledger(self.store)
        self.ledger.start()
        self.queue = make_queue(self)
        await self.queue.start()


def make_queue(rig: Rig) -> AsyncQueue:
    def on_finished(finished: QueuedCall) -> None:
        rig.finished.append((finished.id, finished.state))

    return AsyncQueue(
        rig.store,
        rig.ledger,
        as_invoker(rig.invoker),
        rig.fns,
        auth_header=AUTH,
        on_finished=on_finished,
    )


MakeRig = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def rigs(store: Store) -> AsyncIterator[MakeRig]:
    made: list[Rig] = []

    async def make(*manifests: Manifest, invoker: ScriptedInvoker | None = None) -> Rig:
        ledger = Ledger(store)
        ledger.start()
        rig = Rig(store, ledger, invoker or ScriptedInvoker(), functions(*manifests), [])
        rig.queue = make_queue(rig)
        await rig.queue.start()
        made.append(rig)
        return rig

    yield make
    for rig in made:
        await rig.queue.close()
        await rig.ledger.close()


def answers(*statuses: int) -> ScriptedInvoker:
    """Attempt N answers statuses[N-1] (the last one from then on)."""

    def script(headers: dict[str, str], attempt: int) -> Outcome:
        status = statuses[min(attempt, len(statuses)) - 1]
        if status == 0:
            return Outcome(error="no answer")
        return Outcome(status=status, headers=[("X-Answer", str(attempt))], body=b"a%d" % attempt)

    return ScriptedInvoker(script)


async def test_5xx_429_and_no_answer_are_retried_with_the_same_id_until_done(rigs: MakeRig) -> None:
    rig = await rigs(manifest(async_=FAST), invoker=answers(500, 429, 0, 200))
    one = call(callback="http://127.0.0.1:1/cb")
    await rig.accept(one)
    [done] = await rig.done(one.id)
    assert (done.state, done.attempts, done.status) == ("done", 4, 200)
    assert done.response_body == b"a4" and ("X-Answer", "4") in done.response_headers
    assert done.callback_state == "pending" and rig.finished == [(one.id, "done")]
    heads = [h for h in rig.invoker.heads if h["x-call-id"] == one.id]
    assert [h["x-plat-attempt"] for h in heads] == ["1", "2", "3", "4"]
    for head in heads:
        assert head["_request"] == "POST /function/fn/p?q=1 HTTP/1.1"
        assert head["x-plat-trigger"] == "async" and head["x-test"] == "t"
        assert head["authorization"] == AUTH and head["_body"] == "body"
        assert "content-length" not in head  # the in-memory request frames the body
    attempts = await rig.store.attempts_of(one.id)
    assert [(a.attempt, a.status) for a in attempts] == [(1, 500), (2, 429), (3, None), (4, 200)]
    assert attempts[2].error == "no answer"
    # Backoff: 10 ms doubling (with jitter, half to all of it) before each retry.
    gaps = [b.started_at - a.started_at for a, b in itertools.pairwise(attempts)]
    assert all(g >= 0.005 for g in gaps), gaps


async def test_a_4xx_fails_at_once_and_a_public_function_gets_no_credentials(rigs: MakeRig) -> None:
    rig = await rigs(manifest(auth="public", async_=FAST), invoker=answers(404))
    one = call()
    await rig.accept(one)
    [failed] = await rig.done(one.id)
    assert (failed.state, failed.attempts, failed.status) == ("failed", 1, 404)
    assert "authorization" not in rig.invoker.heads[0]
    assert rig.finished == []  # no callback asked for


async def test_retries_spent_dead_letter_the_call_with_its_last_answer(rigs: MakeRig) -> None:
    rig = await rigs(manifest(async_={**FAST, "retries": 2}), invoker=answers(503))
    one = call()
    await rig.accept(one)
    [dead] = await rig.done(one.id)
    assert (dead.state, dead.attempts, dead.budget, dead.status) == ("dead", 3, 3, 503)
    assert dead.response_body == b"a3"
    assert rig.invoker.attempts_of(one.id) == [1, 2, 3]
    # A manual retry gives it a fresh set of attempts.
    rig.invoker.script = answers(200).script
    await rig.queue.retry(dead)
    [again] = await rig.done(one.id)
    assert (again.state, again.attempts, again.budget) == ("done", 4, 6)
    assert again.error is None and again.finished_at is not None


async def test_an_attempt_is_timed_by_the_async_timeout_never_past_the_functions(
    rigs: MakeRig,
) -> None:
    rig = await rigs(
        manifest("short", timeout="2s", async_={"timeout": "1s"}),
        manifest("capped", timeout="2s", async_={"timeout": "60s"}),
    )
    await rig.accept(call("short"), call("capped"))
    await until(lambda: len(rig.invoker.timeouts) == 2)
    assert sorted(rig.invoker.timeouts) == [6.0, 7.0]  # + the margin the gateway times out in


async def test_a_function_runs_its_share_of_calls_at_once_and_others_are_not_held(
    rigs: MakeRig,
) -> None:
    gate = asyncio.Event()
    invoker = ScriptedInvoker(gate=gate)
    rig = await rigs(
        manifest("busy", scale={"min": 0, "max": 3, "concurrency": 2}),
        manifest("other", scale={"min": 0, "max": 1, "concurrency": 1}),
        invoker=invoker,
    )
    busy = [call("busy") for _ in range(10)]
    await rig.accept(*busy)
    await until(lambda: invoker.running == 3)  # 3 x 2 // 2
    await asyncio.sleep(0.05)
    assert invoker.running == 3
    states = {s.function: s for s in rig.queue.states()}
    assert (states["busy"].running, states["busy"].waiting) == (3, 7)
    await rig.accept(call("other"))
    await until(lambda: invoker.running == 4)  # its own share: max(1, 1 // 2)
    gate.set()
    await rig.done(*(c.id for c in busy))
    assert invoker.most == 4
    # The oldest first.
    order = [
        h["x-call-id"] for h in invoker.heads if h["_request"].startswith("POST /function/busy")
    ]
    assert order[:3] == [c.id for c in busy[:3]]


async def test_the_queue_limit_counts_waiting_and_running_calls(rigs: MakeRig) -> None:
    gate = asyncio.Event()
    rig = await rigs(
        manifest(scale={"min": 0, "max": 1, "concurrency": 1}, async_={"queue_limit": 3}),
        invoker=ScriptedInvoker(gate=gate),
    )
    first = [call() for _ in range(3)]
    await rig.accept(*first)
    with pytest.raises(QueueFull) as refused:
        await rig.accept(call())
    assert refused.value.status == 429 and "queue_limit" in str(refused.value.hint)
    assert rig.queue.depth("fn") == 3
    gate.set()
    await rig.done(*(c.id for c in first))
    await rig.accept(call())  # room again


async def test_an_id_in_the_queue_cannot_be_accepted_twice(rigs: MakeRig) -> None:
    gate = asyncio.Event()
    rig = await rigs(manifest(), invoker=ScriptedInvoker(gate=gate))
    one = call()
    twin = call(id=one.id)
    results = await asyncio.gather(rig.accept(one), rig.accept(twin), return_exceptions=True)
    assert results[0] is None and isinstance(results[1], CallExists)
    with pytest.raises(CallExists):
        await rig.accept(call(id=one.id))  # waiting in the queue
    assert rig.queue.depth("fn") == 1
    gate.set()
    await rig.done(one.id)


async def test_a_restart_runs_interrupted_calls_again_and_keeps_retry_times(rigs: MakeRig) -> None:
    gate = asyncio.Event()
    invoker = ScriptedInvoker(gate=gate)
    rig = await rigs(
        manifest(scale={"min": 0, "max": 1, "concurrency": 1}, async_=FAST), invoker=invoker
    )
    calls = [call() for _ in range(3)]
    await rig.accept(*calls)
    await until(lambda: invoker.running == 1)
    await asyncio.sleep(0.05)  # the 'running' write rides the next commit
    assert (await stored(rig.store, calls[0].id)).state == "running"
    await rig.restart()  # close() cancels the attempt; the store still says running
    assert (await stored(rig.store, calls[0].id)).state in ("running", "queued")
    gate.set()
    done = await rig.done(*(c.id for c in calls))
    assert [c.state for c in done] == ["done"] * 3
    assert rig.invoker.attempts_of(calls[0].id) == [1, 2]
    assert rig.invoker.attempts_of(calls[1].id) == [1]
    attempts = await rig.store.attempts_of(calls[0].id)
    assert "interrupted" in str(attempts[0].error) and attempts[1].status == 200


async def test_the_running_attempt_is_listed_from_the_call_row_until_it_ends(
    rigs: MakeRig,
) -> None:
    """No row is written when an attempt begins: the call's row (running, its
    attempt count, when it began) stands for it, once, and not after it ended."""
    gate = asyncio.Event()
    invoker = ScriptedInvoker(gate=gate)
    rig = await rigs(manifest(), invoker=invoker)
    one = call()
    await rig.accept(one)
    await until(lambda: invoker.running == 1)
    await asyncio.sleep(0.05)  # the 'running' write rides the next commit
    [running] = await rig.store.attempts_of(one.id)
    assert (running.attempt, running.duration, running.status, running.error) == (
        1,
        None,
        None,
        None,
    )
    assert running.started_at == (await stored(rig.store, one.id)).updated_at
    gate.set()
    await rig.done(one.id)
    [ended] = await rig.store.attempts_of(one.id)
    assert (ended.attempt, ended.status) == (1, 200) and ended.started_at == running.started_at


async def test_a_call_waiting_for_its_retry_waits_after_a_restart(rigs: MakeRig) -> None:
    invoker = answers(500, 200)
    rig = await rigs(manifest(async_={"retries": 1, "backoff": "1s"}), invoker=invoker)
    one = call()
    await rig.accept(one)
    await until(lambda: len(invoker.heads) == 1)
    await asyncio.sleep(0.05)
    waiting = await stored(rig.store, one.id)
    assert waiting.state == "queued" and waiting.next_at > time.time()
    await rig.restart()
    await asyncio.sleep(0.2)
    assert len(invoker.heads) == 1, "retried before its backoff after a restart"
    [done] = await rig.done(one.id, timeout=5)
    assert done.state == "done" and done.attempts == 2


async def test_a_call_of_a_removed_function_is_dead_letter(rigs: MakeRig) -> None:
    gate = asyncio.Event()
    rig = await rigs(
        manifest(scale={"min": 0, "max": 1, "concurrency": 1}), invoker=ScriptedInvoker(gate=gate)
    )
    first, second = call(callback="http://127.0.0.1:1/"), call(callback="http://127.0.0.1:1/")
    await rig.accept(first, second)
    await until(lambda: rig.invoker.running == 1)
    del rig.fns["fn"]
    gate.set()
    [_, dead] = await rig.done(first.id, second.id)
    assert dead.state == "dead" and "removed" in str(dead.error) and dead.attempts == 0
    assert (second.id, "dead") in rig.finished


async def test_after_a_manual_retry_backoff_starts_again_from_the_first_delay(
    rigs: MakeRig,
) -> None:
    """The delays double from ``backoff`` for the attempts since the call was
    requeued, not for every attempt it ever made."""
    slow = {"retries": 1, "backoff": "200ms", "max_backoff": "60s"}
    rig = await rigs(manifest(async_=slow), invoker=answers(503))
    one = call()
    await rig.accept(one)
    [dead] = await rig.done(one.id)
    assert dead.attempts == 2
    rig.invoker.script = answers(503).script  # fails once more, then it is retried
    await rig.queue.retry(dead)
    [again] = await rig.done(one.id)
    attempts = await rig.store.attempts_of(one.id)
    assert again.attempts == 4 and len(attempts) == 4
    # Attempt 4 follows attempt 3 after the first delay (100-200 ms), not 2**2 x 200 ms.
    gap = attempts[3].started_at - attempts[2].started_at
    assert 0.09 <= gap < 0.5, gap


async def test_an_accept_whose_caller_left_mid_commit_still_runs(rigs: MakeRig) -> None:
    rig = await rigs(manifest())
    left = [call() for _ in range(20)]
    tasks = [asyncio.ensure_future(rig.accept(one)) for one in left]
    await asyncio.sleep(0)  # each has handed its row to the ledger
    for task in tasks:
        task.cancel()  # as the gateway cancels a handler whose client hung up
    await asyncio.gather(*tasks, return_exceptions=True)
    done = await rig.done(*(c.id for c in left))
    assert [c.state for c in done] == ["done"] * 20
    assert rig.queue.depth("fn") == 0
