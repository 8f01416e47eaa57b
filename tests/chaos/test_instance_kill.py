"""SIGKILL of random instances, under load and while idle.

Under load the gateway notices a dead instance on the first failed exchange (a 502
suspects it and the controller's check replaces it); while idle the controller's
watchdog notices it, every ``watch_interval`` (2 s, not a setting). Bounds:

* under load, a ready replacement within :data:`REPLACED_UNDER_LOAD` of the kill
  (measured here: 0.3-0.5 s; the pool specialises the replacement);
* idle, within :data:`REPLACED_IDLE`: one watchdog interval plus the same start.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from tests.chaos.support import (
    Chaos,
    assert_only_json_errors,
    kill_random_instance,
    wait_calls,
)

pytestmark = pytest.mark.container

NAME = "chaos-kill"
INSTANCES, CONCURRENCY = 2, 8
MANIFEST = f"scale: {{min: {INSTANCES}, max: {INSTANCES}, concurrency: {CONCURRENCY}}}\n"
FUNCTIONS = {NAME: MANIFEST}  # deployed by the `chaos` fixture (conftest.py)
KILLS = 3
REPLACED_UNDER_LOAD = 2.0
WATCH_INTERVAL = 2.0  # the controller's default; plat has no setting for it
REPLACED_IDLE = WATCH_INTERVAL + 2.0


@pytest.mark.timeout(120)
def test_killed_instances_fail_only_their_calls_and_are_replaced(
    chaos: Chaos, record_property: Callable[[str, object], None]
) -> None:
    rng = random.Random(7)
    chaos.wait_ready(NAME, INSTANCES)
    replaced: list[float] = []
    # 16 clients, each call 20 ms in the handler: both instances always have calls in flight.
    with chaos.load(NAME, clients=16, seconds=30, paths=("?s=0.02",)) as load:
        for _ in range(KILLS):
            chaos.wait_ready(NAME, INSTANCES)
            wait_calls(load, 100)  # calls flow on both instances
            before = load.result.succeeded
            victim = kill_random_instance(chaos, NAME, rng)
            replaced.append(chaos.wait_ready(NAME, INSTANCES, without=(victim,), timeout=30))
            assert load.result.succeeded > before, "no call succeeded while an instance was down"
        result = load.stop()

    record_property("replaced_s", " ".join(f"{s:.2f}" for s in replaced))
    record_property("failed_calls", len(result.failed))
    assert result.succeeded > 500, result.summary()
    assert_only_json_errors(result, allowed=(502, 503, 504))
    # Only the calls in flight on a killed instance may fail: at most `concurrency` each.
    assert len(result.failed) <= KILLS * CONCURRENCY, (
        f"{len(result.failed)} calls failed for {KILLS} kills of instances taking "
        f"{CONCURRENCY} calls at once: " + result.summary()
    )
    assert max(result.latencies) < 10, "a call hung: " + result.summary()
    assert max(replaced) <= REPLACED_UNDER_LOAD, (
        f"replacements took {[round(s, 2) for s in replaced]} s after the kill "
        f"(bound {REPLACED_UNDER_LOAD} s)"
    )
    chaos.assert_admission_settled(NAME)
    chaos.assert_no_orphans()


@pytest.mark.timeout(60)
def test_an_idle_killed_instance_is_replaced_by_the_watchdog(
    chaos: Chaos, record_property: Callable[[str, object], None]
) -> None:
    chaos.wait_ready(NAME, INSTANCES)
    victim = kill_random_instance(chaos, NAME, random.Random(11))
    seconds = chaos.wait_ready(NAME, INSTANCES, without=(victim,), timeout=30)
    record_property("replaced_s", f"{seconds:.2f}")
    assert seconds <= REPLACED_IDLE, (
        f"the idle instance was replaced {seconds:.2f} s after its kill (bound {REPLACED_IDLE} s)"
    )
    assert chaos.plat.http("GET", f"/function/{NAME}").status == 200
    chaos.assert_admission_settled(NAME)
    chaos.assert_no_orphans()
