"""Scaling against a real daemon and Podman: concurrency limits, the bounded queue (429),
the autoscaler up and down, scale to zero and back, and `plat scale`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.daemon.serving.e2e import FAST_AUTOSCALER, daemon, deploy_python, running
from tests.fixtures import HttpResult, PlatRunner, wait_for

pytestmark = pytest.mark.container

# Reports the most requests it ever had at once (per instance) and its instance id.
PEAK = """
import os, threading, time

_lock = threading.Lock()
_now = 0
_peak = 0

def handle(event, context):
    global _now, _peak
    with _lock:
        _now += 1
        _peak = max(_peak, _now)
    try:
        time.sleep(float(event.query.get("sleep") or 0.3))
    finally:
        with _lock:
            _now -= 1
    return {"peak": _peak, "host": context.hostname}
"""


@pytest.fixture(scope="module")
def scaled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PlatRunner, Path]]:
    settings = {
        **FAST_AUTOSCALER,
        "PLAT_SCALE_TO_ZERO_AFTER": "2s",
        "PLAT_QUEUE_LIMIT": "4",
        "PLAT_QUEUE_TIMEOUT": "20s",
    }
    with daemon(tmp_path_factory.mktemp("scaling"), settings) as served:
        yield served


def _deploy(plat: PlatRunner, root: Path, name: str, scale: str) -> None:
    deploy_python(plat, root, name, PEAK, f"scale: {scale}\n")


def _burst(plat: PlatRunner, path: str, n: int) -> list[HttpResult]:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: plat.http("GET", path, timeout=60), range(n)))


def test_an_instance_never_sees_more_than_concurrency(scaled: tuple[PlatRunner, Path]) -> None:
    plat, root = scaled
    _deploy(plat, root, "peak", "{min: 1, max: 1, concurrency: 2}")
    results = _burst(plat, "/function/peak?sleep=0.3", 6)
    assert [r.status for r in results] == [200] * 6
    peaks = [r.json()["peak"] for r in results]  # type: ignore[index]
    assert max(peaks) == 2  # the limit was reached and never exceeded


def test_a_full_queue_answers_429_with_retry_after(scaled: tuple[PlatRunner, Path]) -> None:
    plat, root = scaled
    _deploy(plat, root, "narrow", "{min: 1, max: 1, concurrency: 1}")
    results = _burst(plat, "/function/narrow?sleep=1", 10)
    statuses = sorted(r.status for r in results)
    # One runs, four wait (PLAT_QUEUE_LIMIT), the rest are refused at once.
    assert statuses.count(200) == 5
    assert statuses.count(429) == 5
    refused = next(r for r in results if r.status == 429)
    assert refused.headers["Retry-After"] == "1"
    assert refused.json()["error"] == "too_many_requests"  # type: ignore[index]


def test_autoscaler_adds_instances_under_load_and_removes_them(
    scaled: tuple[PlatRunner, Path],
) -> None:
    plat, root = scaled
    _deploy(plat, root, "elastic", "{min: 1, max: 3, concurrency: 1}")
    stop = time.monotonic() + 6
    with ThreadPoolExecutor(4) as pool:
        futures: list[Future[HttpResult]] = []
        while time.monotonic() < stop:
            futures = [f for f in futures if not f.done()]
            while len(futures) < 4:
                futures.append(pool.submit(plat.http, "GET", "/function/elastic?sleep=0.3"))
            time.sleep(0.05)
            if running(plat, "elastic") == 3:
                break
        assert wait_for(lambda: running(plat, "elastic") == 3, timeout=20)
        results = [f.result() for f in futures]
    assert all(r.status == 200 for r in results), [(r.status, r.body[:200]) for r in results]
    described = json.loads(plat.run("describe", "elastic", "--json").stdout)
    assert described["autoscaler"]["desired"] <= 3  # max holds
    # Load gone: back down to min (1), never below.
    assert wait_for(lambda: running(plat, "elastic") == 1, timeout=40)
    time.sleep(3)
    assert running(plat, "elastic") == 1


def test_scale_to_zero_and_a_burst_shares_one_cold_start(
    scaled: tuple[PlatRunner, Path],
) -> None:
    plat, root = scaled
    _deploy(plat, root, "sleepy", "{min: 0, max: 2, concurrency: 8}")
    assert wait_for(lambda: running(plat, "sleepy") == 0, timeout=30)
    results = _burst(plat, "/function/sleepy?sleep=0.1", 6)
    assert [r.status for r in results] == [200] * 6
    assert len({r.json()["host"] for r in results}) == 1  # type: ignore[index]
    stats = json.loads(plat.run("stats", "sleepy", "--json").stdout)["functions"][0]
    # Those that arrived before the one instance was ready waited for it (a pooled
    # cold start takes ~10 ms: a thread of the burst that starts late may find it
    # ready and is rightly not counted); the metrics count the same calls.
    assert 4 <= stats["cold_starts"] <= 6
    metrics = plat.http("GET", "/metrics", auth=False).body.decode()
    counted = (
        f'plat_cold_starts_total{{function="sleepy",tenant="default"}} {stats["cold_starts"]}.0'
    )
    assert counted in metrics
    # The burst shared one cold start; the autoscaler may add one more afterwards
    # (6 in flight exceed 8 x 0.7 target utilization), never one per request.
    assert 1 <= running(plat, "sleepy") <= 2


def test_plat_scale_applies_now_and_survives_a_restart(scaled: tuple[PlatRunner, Path]) -> None:
    plat, root = scaled
    _deploy(plat, root, "manual", "{min: 1, max: 2, concurrency: 4}")
    plat.run("scale", "manual", "--min", "2", "--max", "3")
    assert wait_for(lambda: running(plat, "manual") == 2, timeout=30)
    bad = plat.run("scale", "manual", "--min", "5", "--max", "3", check=False)
    assert bad.returncode == 1
    assert "min" in bad.stderr
    plat.run("daemon", "stop")
    plat.run("daemon", "start")
    assert wait_for(lambda: running(plat, "manual") == 2, timeout=30)
    shown = plat.run("scale", "manual").stdout
    assert "min 2, max 3, concurrency 4" in shown
    # A redeploy keeps what `plat scale` set; --reset goes back to plat.yaml.
    plat.run("deploy", str(root / "manual"))
    assert "min 2" in plat.run("scale", "manual").stdout
    plat.run("scale", "manual", "--reset")
    assert "min 1, max 2, concurrency 4" in plat.run("scale", "manual").stdout


def test_without_the_pool_scale_to_zero_leaves_a_standby_that_the_next_request_starts(
    tmp_path: Path,
) -> None:
    settings = {
        "PLAT_POOL_SIZE": "0",
        "PLAT_AUTOSCALE_TICK": "250ms",
        "PLAT_STABLE_WINDOW": "1s",
        "PLAT_SCALE_TO_ZERO_AFTER": "1s",
    }
    with daemon(tmp_path, settings) as (plat, _):
        _deploy(plat, tmp_path, "standby", "{min: 0, max: 1}")
        assert wait_for(lambda: running(plat, "standby") == 0, timeout=30)
        # The next container is created, not started: no process runs for the function.
        assert wait_for(lambda: len(plat.instances_of("standby", "status=created")) == 1, 10)
        (created,) = plat.instances_of("standby", "status=created")
        first = plat.http("GET", "/function/standby?sleep=0")
        assert first.status == 200
        assert plat.instances_of("standby", "status=running") == [created]
        assert plat.instances_of("standby", "status=created") == []
        # Removing the function removes a standby too (the session fails on leftovers).
        assert wait_for(lambda: running(plat, "standby") == 0, timeout=30)
        assert wait_for(lambda: len(plat.instances_of("standby", "status=created")) == 1, 10)
        plat.run("rm", "standby")
        assert plat.instances_of("standby") == []
