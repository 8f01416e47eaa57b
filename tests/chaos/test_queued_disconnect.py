"""Clients that give up while their call waits in the queue.

One instance taking one call at a time (``scale: {max: 1, concurrency: 1}``), each
call 100 ms in the handler; :data:`ROUNDS` rounds of :data:`CLIENTS` clients that each
send a call and close their connection after a random 0-500 ms unless answered first.
Nearly all of them leave while queued, some while their call runs. Afterwards no slot
may have leaked: a normal call answers 200 within :data:`PROMPT`, and admission is at
rest.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from benchmarks.load import Abandoned, abandon
from tests.chaos.support import Chaos

pytestmark = pytest.mark.container

NAME = "chaos-queue"
MANIFEST = "scale: {min: 1, max: 1, concurrency: 1}\n"
FUNCTIONS = {NAME: MANIFEST}  # deployed by the `chaos` fixture (conftest.py)
ROUNDS, CLIENTS, MAX_WAIT = 10, 200, 0.5
PROMPT = 2.0


@pytest.mark.timeout(120)
def test_clients_leaving_the_queue_leak_no_slot(
    chaos: Chaos, record_property: Callable[[str, object], None]
) -> None:
    chaos.wait_ready(NAME, 1)
    url = chaos.url(NAME) + "?s=0.1"
    rounds: list[Abandoned] = []
    for i in range(ROUNDS):
        rounds.append(
            asyncio.run(
                abandon(url, clients=CLIENTS, max_wait=MAX_WAIT, headers=chaos.auth(), seed=i)
            )
        )
    left = sum(r.left for r in rounds)
    assert left > ROUNDS * CLIENTS // 2, f"most clients should have left before an answer: {rounds}"
    assert not sum(r.failed for r in rounds), f"connections failed: {rounds}"
    answered = [s for r in rounds for s in r.answered.elements()]
    assert set(answered) <= {200}, f"answers to clients that waited: {sorted(set(answered))}"

    started = time.monotonic()
    reply = chaos.plat.http("GET", f"/function/{NAME}", timeout=30)
    took = time.monotonic() - started
    record_property("left", left)
    record_property("call_after_s", f"{took:.2f}")
    assert reply.status == 200 and took <= PROMPT, (
        f"a call after the rounds answered {reply.status} in {took:.2f} s "
        f"(want 200 within {PROMPT:g} s): {reply.body[:300]!r}"
    )
    chaos.assert_admission_settled(NAME)
    chaos.assert_no_orphans()
