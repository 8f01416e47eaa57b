"""Unit tests of the load generator and of the soak, fuzz and chaos benchmarks' pure parts.

The load generator runs against a real aiohttp server on loopback; the parsers read
samples of pytest's and Hypothesis' real output. (``test_quick.py`` runs the three
benchmarks themselves in quick mode.)
"""

from __future__ import annotations

import asyncio
import itertools
import json

from aiohttp import web
from aiohttp.test_utils import TestServer

from benchmarks.fuzz import parse_statistics
from benchmarks.load import LoadResult, Outcome, abandon, run_load
from benchmarks.pytest_run import parse_junit
from benchmarks.report import fmt
from benchmarks.soak import FULL, QUICK, Plan


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _busy(request: web.Request) -> web.Response:
    body = json.dumps({"error": "no_capacity", "message": "full"})
    return web.Response(status=503, text=body, content_type="application/json")


async def _reset(request: web.Request) -> web.Response:
    assert request.transport is not None
    request.transport.close()
    await asyncio.sleep(1)
    return web.Response(text="never sent")


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(2)
    return web.Response(text="late")


def _app() -> web.Application:
    app = web.Application()
    app.router.add_get("/ok", _ok)
    app.router.add_get("/busy", _busy)
    app.router.add_get("/reset", _reset)
    app.router.add_get("/slow", _slow)
    return app


async def test_run_load_records_every_outcome_by_kind() -> None:
    async with TestServer(_app()) as server:
        base = str(server.make_url(""))
        result = await run_load(
            base, clients=4, seconds=0.5, paths=("/ok", "/ok", "/busy", "/reset"), timeout=5
        )
    statuses = result.statuses()
    assert statuses[200] > 10 and statuses[503] > 0 and statuses[0] > 0
    assert result.succeeded == statuses[200]
    assert result.total == sum(statuses.values())
    assert result.counts["503 no_capacity"] == statuses[503]
    assert all(o.json_error for o in result.failed if o.status == 503)
    assert {o.path for o in result.unanswered} == {"/reset"}
    assert all(o.failure for o in result.unanswered)
    assert result.seconds >= 0.5
    assert "/reset" in result.summary()


async def test_a_call_past_the_client_timeout_is_a_timeout_not_a_hang() -> None:
    async with TestServer(_app()) as server:
        result = await run_load(
            str(server.make_url("")), clients=2, seconds=0.1, paths=("/slow",), timeout=0.3
        )
    assert result.counts["timeout"] == 2
    assert all(0.3 <= o.latency < 1.5 for o in result.failed)


async def test_abandon_leaves_before_slow_answers_and_reads_fast_ones() -> None:
    async with TestServer(_app()) as server:
        left = await abandon(str(server.make_url("/slow")), clients=20, max_wait=0.1, seed=1)
        answered = await abandon(str(server.make_url("/ok")), clients=5, max_wait=5.0, seed=1)
    assert left.left == 20 and not left.answered and not left.failed
    assert answered.answered[200] == 5 and not answered.left


def test_load_result_keeps_failures_and_counts_successes() -> None:
    result = LoadResult(clients=1)
    for i in range(100):
        result.add(Outcome("/", i * 0.01, 0.001 * (i + 1), 200))
    result.add(Outcome("/", 1.0, 0.5, 502, "instance_failed"))
    result.add(Outcome("/", 1.1, 2.0, 0, "", "ServerDisconnectedError"))
    assert result.total == 102 and result.succeeded == 100
    assert [o.status for o in result.failed] == [502, 0]
    assert result.statuses() == {200: 100, 502: 1, 0: 1}
    assert result.percentile(50) == 0.05
    assert result.percentile(100) == 0.5  # unanswered calls have no latency sample


def test_counts_are_whole_numbers_however_large() -> None:
    assert fmt(1_137_280, "count") == "1,137,280"
    assert fmt(0, "count") == "0"


def test_plan_spreads_redeploys_among_scale_events() -> None:
    for plan in (QUICK, FULL):
        events = list(plan.events())
        kinds = [kind for _, kind in events]
        assert kinds.count("deploy") == plan.redeploys
        assert kinds.count("scale") == plan.scale_events
        offsets = [at for at, _ in events]
        assert offsets == sorted(offsets) and offsets[0] > 0 and offsets[-1] < plan.seconds
    # Not bunched: the scale events between consecutive redeploys differ by one at most.
    kinds = [kind for _, kind in Plan(600, 30, 20, 100).events()]
    positions = [i for i, kind in enumerate(kinds) if kind == "deploy"]
    gaps = {b - a for a, b in itertools.pairwise(positions)}
    assert max(gaps) - min(gaps) <= 1


HYPOTHESIS_STATISTICS = """\
.....                                                                    [100%]
============================ Hypothesis Statistics =============================
tests/test_manifest_fuzz.py::test_any_bytes:

  - during reuse phase (0.01 seconds):
    - Typical runtimes: ~ 1ms, of which < 1ms in data generation
    - 2 passing, 0 failing, and 0 invalid test cases

  - during generate phase (0.45 seconds):
    - Typical runtimes: ~ 0-4 ms, of which < 1ms in data generation
    - 148 passing, 0 failing, and 3 invalid test cases

  - Stopped because settings.max_examples=150


tests/daemon/http/test_fuzz.py::test_any_request_head:

  - during generate phase (1.76 seconds):
    - 90 passing examples, 1 failing examples, 25 invalid examples
    - Events:
      * 14.29%, Retried draw from one_of(sampled_from(['name'])) to satisfy filter

  - during shrink phase (0.20 seconds):
    - 10 passing, 4 failing, and 0 invalid test cases
"""


def test_parse_statistics_sums_the_phases_of_each_property() -> None:
    stats = parse_statistics(HYPOTHESIS_STATISTICS)
    assert set(stats) == {
        "test_manifest_fuzz.py::test_any_bytes",
        "daemon/http/test_fuzz.py::test_any_request_head",
    }
    bytes_ = stats["test_manifest_fuzz.py::test_any_bytes"]
    assert (bytes_.passing, bytes_.failing, bytes_.invalid, bytes_.total) == (150, 0, 3, 153)
    head = stats["daemon/http/test_fuzz.py::test_any_request_head"]
    assert (head.passing, head.failing, head.invalid) == (100, 5, 25)


JUNIT = """\
<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="4">
<testcase classname="tests.chaos.test_instance_kill" name="test_killed" time="9.5">
  <properties><property name="replaced_s" value="0.31 0.40"/></properties>
</testcase>
<testcase classname="tests.chaos.test_disk_full" name="test_full" time="12.0">
  <failure message="AssertionError: containers left: [a, b]&#10;second line">trace</failure>
</testcase>
<testcase classname="tests.chaos.test_engine_restart" name="test_engine" time="1.0">
  <error message="failed on setup with &quot;boom&quot;">trace</error>
</testcase>
<testcase classname="tests.test_manifest_fuzz" name="test_any_bytes" time="0.4">
  <skipped message="no tmpfs" type="pytest.skip">skipped</skipped>
</testcase>
</testsuite></testsuites>
"""


def test_parse_junit_reads_outcomes_messages_and_properties() -> None:
    cases = {c.name: c for c in parse_junit(JUNIT)}
    killed = cases["chaos/test_instance_kill.py::test_killed"]
    assert (killed.outcome, killed.seconds, killed.properties) == (
        "pass",
        9.5,
        {"replaced_s": "0.31 0.40"},
    )
    full = cases["chaos/test_disk_full.py::test_full"]
    assert (full.outcome, full.message) == ("fail", "AssertionError: containers left: [a, b]")
    assert cases["chaos/test_engine_restart.py::test_engine"].outcome == "error"
    assert cases["test_manifest_fuzz.py::test_any_bytes"].outcome == "skip"
