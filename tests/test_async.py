"""Queued calls end to end in real containers: retries that end ``done`` with one
callback each, a queue that survives ``kill -9`` of the daemon (a call cut off
runs again under its id, a finished one never does), and a ``* * * * *`` schedule
that fires once a minute across a restart (one call for the tick it missed).

What the function did is read from three places that do not depend on the
queue's own account: the callbacks a loopback receiver got, the function's log
lines (each run prints its call id and attempt), and the store's rows.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.support import sigkill
from tests.daemon.asyncq.support import (
    CallbackReceiver,
    ReceiverThread,
    post_many,
    stored_attempts,
    stored_calls,
    wait_states,
)
from tests.fixtures import PlatRunner, daemon_session, make_runner, wait_for
from tests.functions import write_python_function

pytestmark = pytest.mark.container

# 500 until the third attempt; every run prints its call id and attempt.
FLAKY = """
def handle(event, context):
    call_id = event.headers.get("x-call-id")
    attempt = int(event.headers.get("x-plat-attempt", "0"))
    print("run", call_id, attempt, event.headers.get("x-plat-trigger"), flush=True)
    if attempt < 3:
        return {"statusCode": 500, "body": "not yet"}
    return {"id": call_id, "attempt": attempt, "body": event.body.decode()}
"""

SLOW = """
import time

def handle(event, context):
    call_id = event.headers.get("x-call-id")
    attempt = int(event.headers.get("x-plat-attempt", "0"))
    print("run", call_id, attempt, flush=True)
    time.sleep(0.3)
    return {"id": call_id, "attempt": attempt}
"""

TICKER = """
import json

def handle(event, context):
    tick = json.loads(event.body)
    print("tick", event.headers.get("x-plat-trigger"), tick["tick"], flush=True)
    return {"trigger": event.headers.get("x-plat-trigger"), **tick}
"""


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    with ReceiverThread() as running:
        yield running


def runs(plat: PlatRunner, name: str) -> list[tuple[str, int, float]]:
    """(call id, attempt, time) of every ``run`` line the function logged."""
    out = plat.run("logs", name, "--json", "--tail", "100000").stdout
    found = []
    for line in out.splitlines():
        record = json.loads(line)
        words = str(record["line"]).split()
        if len(words) >= 3 and words[0] == "run":
            found.append((words[1], int(words[2]), float(record["ts"])))
    return found


def post(plat: PlatRunner, name: str, count: int, **headers: str) -> list[str]:
    """``count`` async calls of ``name`` (32 at a time); their ids, all 202."""
    url = f"{plat.gateway}/async-function/{name}"
    got = asyncio.run(post_many(url, count, concurrency=32, headers=headers))
    assert [a.status for a in got] == [202] * count, Counter(a.status for a in got)
    return [a.call_id for a in got]


def test_calls_that_fail_twice_end_done_after_three_attempts_with_one_callback_each(
    tmp_path: Path, receiver: CallbackReceiver
) -> None:
    with daemon_session(make_runner(tmp_path)) as plat:
        folder = write_python_function(
            tmp_path / "fn",
            "flaky",
            FLAKY,
            extra_manifest="""\
            auth: public
            async: {retries: 3, backoff: 200ms, max_backoff: 1s}
            """,
        )
        plat.run("deploy", str(folder))
        ids = post(plat, "flaky", 100, **{"X-Callback-Url": receiver.url})
        assert len(set(ids)) == 100
        assert receiver.wait_for(set(ids), 120), f"{len(receiver.counts())} of 100 called back"
        time.sleep(1.0)  # a second delivery of any of them would arrive by now

        deliveries = receiver.by_id()
        assert set(deliveries) == set(ids)
        twice = {i: len(d) for i, d in deliveries.items() if len(d) != 1}
        assert not twice, f"calls called back more than once: {twice}"
        for call_id, [delivery] in deliveries.items():
            h = delivery.headers
            assert (h["x-plat-status"], h["x-plat-state"], h["x-plat-attempts"]) == (
                "200",
                "done",
                "3",
            ), h
            assert h["x-plat-trigger"] == "async" and h["x-plat-function"] == "flaky"
            answer = json.loads(delivery.body)
            assert answer["id"] == call_id and answer["attempt"] == 3
            assert answer["body"] == str(ids.index(call_id))

        calls = {c["id"]: c for c in stored_calls(plat.home)}
        attempts = stored_attempts(plat.home)
        for call_id in ids:
            call = calls[call_id]
            assert (call["state"], call["attempts"], call["status"]) == ("done", 3, 200)
            assert call["callback_state"] == "delivered" and call["callback_attempts"] == 1
            assert [a["status"] for a in attempts[call_id]] == [500, 500, 200]
            started = [a["started_at"] for a in attempts[call_id]]
            assert started[1] - started[0] >= 0.09, "retried before its backoff"

        # The function saw each call three times under one id: attempts 1, 2, 3.
        def all_logged() -> bool:
            seen: dict[str, list[int]] = {}
            for call_id, attempt, _ in runs(plat, "flaky"):
                seen.setdefault(call_id, []).append(attempt)
            return all(sorted(seen.get(i, [])) == [1, 2, 3] for i in ids)

        assert wait_for(all_logged, timeout=30, interval=1.0), runs(plat, "flaky")[:20]


def test_a_queue_killed_with_the_daemon_resumes_and_runs_no_finished_call_again(
    tmp_path: Path, receiver: CallbackReceiver
) -> None:
    with daemon_session(make_runner(tmp_path)) as plat:
        folder = write_python_function(
            tmp_path / "fn",
            "slow",
            SLOW,
            extra_manifest="""\
            auth: public
            scale: {min: 1, max: 1, concurrency: 1}
            """,
        )
        plat.run("deploy", str(folder))
        ids = post(plat, "slow", 50, **{"X-Callback-Url": receiver.url})
        # Kill between two callbacks, in the middle of the next call's 0.3 s.
        assert wait_for(lambda: len(receiver.counts()) >= 12, timeout=60)
        last = len(receiver.counts())
        while True:
            time.sleep(0.12)
            now = len(receiver.counts())
            if now == last:
                break
            last = now
        called_back = set(receiver.counts())
        pid = plat.daemon_pid()
        assert pid is not None
        sigkill(pid)
        killed_at = time.time()
        assert called_back < set(ids)

        # What the killed daemon left: finished calls (their callbacks went out after
        # their state was committed), the one it was running, the rest queued.
        left = {c["id"]: c for c in stored_calls(plat.home)}
        running = {i for i, c in left.items() if c["state"] == "running"}
        assert len(running) == 1, Counter(c["state"] for c in left.values())
        [cut] = running
        assert cut not in called_back
        for call_id in called_back:
            assert left[call_id]["state"] == "done", left[call_id]

        plat.run("daemon", "start", timeout=120)
        assert receiver.wait_for(set(ids), 120), f"{len(receiver.counts())} of 50 called back"
        calls = wait_states(plat.home, lambda calls: all(c["state"] == "done" for c in calls), 30)
        assert {c["id"] for c in calls} == set(ids)

        # The call cut off ran again under its id: its second attempt answered.
        attempts = stored_attempts(plat.home)
        assert [a["status"] for a in attempts[cut]] == [None, 200]
        assert "interrupted" in str(attempts[cut][0]["error"])
        answer = json.loads(receiver.by_id()[cut][-1].body)
        assert answer == {"id": cut, "attempt": 2}
        assert receiver.by_id()[cut][-1].headers["x-plat-attempts"] == "2"
        # No finished call ran again: one attempt in the store, no run after the kill.
        for call_id in called_back:
            assert len(attempts[call_id]) == 1, (call_id, attempts[call_id])
        after: list[tuple[str, int, float]] = []

        def rerun_logged() -> bool:
            after[:] = [r for r in runs(plat, "slow") if r[2] > killed_at]
            return (cut, 2) in {(i, a) for i, a, _ in after}

        assert wait_for(rerun_logged, timeout=30, interval=1.0), after
        again = {i for i, _, _ in after} & called_back
        assert not again, f"calls finished before the kill ran again: {again}"
        # Its second attempt ran once (the first one's line may be read from the old
        # instance after the restart).
        assert [a for i, a, _ in after if i == cut and a > 1] == [2], after
        # Only the cut-off call may be called back twice (the same id both times).
        twice = {i for i, n in receiver.counts().items() if n > 1}
        assert twice <= {cut}, twice
        # The restarted daemon took over or removed the instance the killed one left.
        assert wait_for(lambda: len(plat.instances_of("slow", "status=running")) <= 1, 30)


@pytest.mark.timeout(480)
def test_a_schedule_fires_once_a_minute_across_a_restart(tmp_path: Path) -> None:
    with daemon_session(make_runner(tmp_path)) as plat:
        folder = write_python_function(
            tmp_path / "fn",
            "ticker",
            TICKER,
            extra_manifest="""\
            auth: public
            schedule: ["* * * * *"]
            """,
        )
        plat.run("deploy", str(folder))

        def ticks() -> list[dict[str, Any]]:
            return stored_calls(plat.home, "trigger = 'cron'")

        assert wait_for(lambda: len(ticks()) >= 1, timeout=130, interval=0.5), "no tick"
        [first] = ticks()
        first_tick = datetime.fromisoformat(json.loads(first["body"])["tick"]).timestamp()
        assert first_tick % 60 == 0 and first["created_at"] - first_tick < 10
        plat.run("daemon", "stop", timeout=60)
        boundary = first_tick + 60
        assert time.time() < boundary - 1, "the daemon stopped too late to miss a tick"
        time.sleep(max(0.0, boundary + 3 - time.time()))
        plat.run("daemon", "start", timeout=120)
        started = time.time()

        # The tick missed while the daemon was down: one call, at once.
        assert wait_for(lambda: len(ticks()) >= 2, timeout=20, interval=0.5), ticks()
        time.sleep(2)
        assert len(ticks()) == 2, ticks()
        missed = ticks()[1]
        assert (
            json.loads(missed["body"])["tick"] == datetime.fromtimestamp(boundary, UTC).isoformat()
        )
        assert missed["created_at"] >= started - 5

        # Then the next minute's, on time, and nothing else.
        assert wait_for(lambda: len(ticks()) >= 3, timeout=boundary + 60 + 20 - time.time()), (
            ticks()
        )
        third = ticks()[2]
        assert datetime.fromisoformat(json.loads(third["body"])["tick"]).timestamp() == (
            boundary + 60
        )
        assert 0 <= third["created_at"] - (boundary + 60) < 10
        calls = wait_states(plat.home, lambda calls: all(c["state"] == "done" for c in calls), 60)
        assert len(calls) == 3
        for call in calls:
            answer = json.loads(call["response_body"])
            assert answer["trigger"] == "cron" and answer["schedule"] == "* * * * *"
            assert call["trigger"] == "cron" and call["attempts"] == 1
        lines = plat.run("logs", "ticker").stdout
        assert lines.count("tick cron ") == 3, lines
