"""/metrics of a real daemon, checked by promtool and scraped by a real Prometheus server.

One daemon; two functions deployed (real builds); a few successful calls, a handler
error (500), an instance that dies (502) and the cold start that follows. Then the
exposition is read three ways: prometheus_client's parsers, ``promtool check
metrics``, and a Prometheus server run with monitoring/prometheus.yml that must
scrape it and answer queries, including every query of the Grafana dashboard.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from plat import __version__
from tests.daemon.test_metrics import (
    OPENMETRICS_ACCEPT,
    dashboard_exprs,
    grafana_to_promql,
    with_basic_auth,
)
from tests.fixtures import PlatRunner, free_port, make_runner, stop_daemon, wait_for
from tests.functions import CRASH, ECHO, write_python_function

pytestmark = pytest.mark.container

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_YML = REPO / "monitoring" / "prometheus.yml"
TEXT_ACCEPT = "text/plain;version=0.0.4"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatRunner]:
    root = tmp_path_factory.mktemp("metrics")
    runner = make_runner(root)
    runner.run("daemon", "start")
    fns = root / "fns"
    # try/finally: a failed deploy must not leave the daemon running.
    try:
        runner.run(
            "deploy",
            str(write_python_function(fns, "echo", ECHO, extra_manifest="auth: public\n")),
        )
        runner.run("deploy", str(write_python_function(fns, "crash", CRASH)))
        yield runner
    finally:
        stop_daemon(runner)
        left = runner.containers()
        if left:
            subprocess.run(["podman", "rm", "-f", *left], capture_output=True)
    assert not left, f"containers left behind: {left}"


def scrape(plat: PlatRunner, accept: str = TEXT_ACCEPT) -> tuple[str, str]:
    """(body, content type) of the gateway's /metrics, fetched without credentials."""
    res = plat.http("GET", "/metrics", headers={"Accept": accept}, auth=False)
    assert res.status == 200, res.body[:500]
    return res.body.decode(), res.headers["Content-Type"]


def samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(text: str, name: str, **labels: str) -> float | None:
    found = [s.value for s in samples(text) if s.name == name and s.labels == labels]
    assert len(found) <= 1, f"{name}{labels} appears {len(found)} times"
    return found[0] if found else None


@pytest.fixture(scope="module")
def traffic(daemon: PlatRunner) -> PlatRunner:
    """The scenario's requests, made once for every test of the module."""
    plat = daemon
    for i in range(3):
        res = plat.http("POST", f"/function/echo/n{i}", b"hi", auth=False)
        assert res.status == 200, res.body
    res = plat.http("GET", "/function/crash/raise")
    assert res.status == 500, res.body
    res = plat.http("GET", "/function/crash")
    assert res.status == 200 and res.body == b"alive", res.body
    # The instance exits mid-request (502). The controller checks it asynchronously,
    # so a request sent at once could still be routed to the dead instance: wait
    # until it has left the pool (as plat_instances shows), and the next request
    # has to wait for the replacement, a cold start.
    res = plat.http("GET", "/function/crash/die")
    assert res.status == 502, res.body

    def dead_one_gone() -> bool:
        text, _ = scrape(plat)
        return not value(text, "plat_instances", function="crash", tenant="default", state="ready")

    assert wait_for(dead_one_gone, timeout=30, interval=0.05)
    res = plat.http("GET", "/function/crash", timeout=120)
    assert res.status == 200 and res.body == b"alive", res.body
    return plat


def test_metrics_are_open_by_default_and_in_the_text_format(traffic: PlatRunner) -> None:
    text, content_type = scrape(traffic)
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    info = [s for s in samples(text) if s.name == "plat_info"]
    assert [s.labels["version"] for s in info] == [__version__]


def test_invocations_latency_and_in_flight(traffic: PlatRunner) -> None:
    text, _ = scrape(traffic)
    assert value(text, "plat_invocations_total", function="echo", tenant="default", code="200") == 3
    assert (
        value(text, "plat_invocations_total", function="crash", tenant="default", code="500") == 1
    )
    assert (
        value(text, "plat_invocations_total", function="crash", tenant="default", code="502") == 1
    )
    assert (
        value(text, "plat_invocations_total", function="crash", tenant="default", code="200") == 2
    )
    duration = "plat_invocation_duration_seconds"
    assert value(text, duration + "_count", function="echo", tenant="default") == 3
    assert value(text, duration + "_count", function="crash", tenant="default") == 4
    echo_sum = value(text, duration + "_sum", function="echo", tenant="default")
    assert echo_sum is not None and 0 < echo_sum < 30
    assert value(text, duration + "_bucket", function="echo", tenant="default", le="+Inf") == 3
    for function in ("echo", "crash"):
        assert value(text, "plat_invocations_in_flight", function=function, tenant="default") == 0
    # Unknown functions are not counted: their names come from unauthenticated URLs.
    assert traffic.http("GET", "/function/nope", auth=False).status == 404
    text, _ = scrape(traffic)
    assert not [s for s in samples(text) if s.labels.get("function") == "nope"]


def test_the_request_after_a_crash_is_a_cold_start(traffic: PlatRunner) -> None:
    text, _ = scrape(traffic)
    cold = value(text, "plat_cold_starts_total", function="crash", tenant="default")
    assert cold is not None and cold >= 1
    count = value(
        text, "plat_cold_start_duration_seconds_count", function="crash", tenant="default"
    )
    waited = value(text, "plat_cold_start_duration_seconds_sum", function="crash", tenant="default")
    assert count == cold
    assert waited is not None and 0 < waited < 120
    # The cold request's latency bucket carries the {cold="true"} exemplar.
    body, content_type = scrape(traffic, OPENMETRICS_ACCEPT)
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    exemplars = [
        s.exemplar.labels
        for family in openmetrics_families(body)
        for s in family.samples
        if s.name == "plat_invocation_duration_seconds_bucket"
        and s.labels["function"] == "crash"
        and s.exemplar is not None
    ]
    assert {"cold": "true"} in exemplars


def test_builds_and_instances(traffic: PlatRunner) -> None:
    text, _ = scrape(traffic)
    builds = {s.labels["result"]: s.value for s in samples(text) if s.name == "plat_builds_total"}
    assert set(builds) == {"built", "cached", "failed"}
    # Two deploys; an image left by an earlier run is a cache hit, not a build.
    assert builds["built"] + builds["cached"] == 2
    assert builds["failed"] == 0
    assert value(text, "plat_build_duration_seconds_count") == 2

    def instances() -> dict[tuple[str, str], float]:
        text, _ = scrape(traffic)
        return {
            (s.labels["function"], s.labels["state"]): s.value
            for s in samples(text)
            if s.name == "plat_instances"
        }

    # The crashed instance's replacement is ready; nothing is left starting or draining.
    settled = {
        (f, state): 1.0 if state == "ready" else 0.0
        for f in ("echo", "crash")
        for state in ("starting", "ready", "suspect", "draining")
    }
    assert wait_for(lambda: instances() == settled, timeout=30), instances()
    rss = value(text, "process_resident_memory_bytes")
    assert rss is not None and rss > 10_000_000


def test_promtool_accepts_the_daemons_exposition(traffic: PlatRunner) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: scripts/setup.sh installs Debian's prometheus"
    text, _ = scrape(traffic)
    proc = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "" and proc.stderr.strip() == ""


def query(port: int, promql: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as resp:
        data = json.loads(resp.read())
    assert isinstance(data, dict)
    return data


def api_get(port: int, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        data = json.loads(resp.read())
    assert isinstance(data, dict)
    return data


@contextmanager
def run_prometheus(config: str, gateway_port: int, workdir: Path) -> Iterator[int]:
    """A real Prometheus server with ``config`` aimed at ``gateway_port``; yields its port."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: scripts/setup.sh installs Debian's prometheus"
    assert "127.0.0.1:8080" in config
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "prometheus.yml"
    config_path.write_text(config.replace("127.0.0.1:8080", f"127.0.0.1:{gateway_port}"))
    port = free_port()
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def ready() -> bool:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        assert wait_for(ready, timeout=30, interval=0.25), log_path.read_text()[-3000:]
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def prometheus(traffic: PlatRunner, tmp_path: Path) -> Iterator[int]:
    """A real Prometheus server scraping the daemon with monitoring/prometheus.yml."""
    with run_prometheus(PROMETHEUS_YML.read_text(), traffic.port, tmp_path) as port:
        yield port


def test_prometheus_scrapes_the_daemon(traffic: PlatRunner, prometheus: int) -> None:
    def scraped() -> bool:
        result = query(
            prometheus, 'plat_invocations_total{function="echo",tenant="default",code="200"}'
        )
        series = result["data"]["result"]
        return bool(series) and float(series[0]["value"][1]) > 0

    assert wait_for(scraped, timeout=30, interval=0.5), api_get(prometheus, "/api/v1/targets")
    result = query(
        prometheus, 'plat_invocations_total{function="echo",tenant="default",code="200"}'
    )
    series = result["data"]["result"]
    assert len(series) == 1
    assert float(series[0]["value"][1]) == 3
    assert series[0]["metric"]["job"] == "plat"
    # Prometheus negotiated OpenMetrics and parsed it without complaint.
    targets = api_get(prometheus, "/api/v1/targets")["data"]["activeTargets"]
    assert [(t["health"], t["lastError"]) for t in targets] == [("up", "")]
    # Every dashboard query is valid PromQL that Prometheus can evaluate.
    for expr in dashboard_exprs():
        answer = query(prometheus, grafana_to_promql(expr))
        assert answer["status"] == "success", (expr, answer)
    gauge = query(prometheus, 'plat_instances{function="crash",tenant="default",state="ready"}')
    assert [float(s["value"][1]) for s in gauge["data"]["result"]] == [1]
    rss = query(prometheus, "process_resident_memory_bytes and on (job, instance) plat_info")
    assert len(rss["data"]["result"]) == 1


def test_metrics_auth_setting_and_the_configs_basic_auth_block(fresh_plat: PlatRunner) -> None:
    """With metrics_auth on, /metrics wants the password; Prometheus, given it, scrapes."""
    plat = fresh_plat
    plat.env["PLAT_METRICS_AUTH"] = "true"
    plat.run("daemon", "start")
    res = plat.http("GET", "/metrics", auth=False)
    assert res.status == 401
    assert res.json()["error"] == "unauthorized"  # type: ignore[index]
    assert plat.http("GET", "/metrics").status == 200
    # What monitoring/README.md says to do: the password alone, in a file.
    password_file = plat.home.parent / "metrics-password"
    password_file.write_text(plat.run("auth", "password").stdout)
    config = with_basic_auth(PROMETHEUS_YML.read_text(), password_file)
    with run_prometheus(config, plat.port, plat.home.parent / "prometheus") as port:

        def scraped() -> bool:
            series = query(port, 'up{job="plat"}')["data"]["result"]
            return bool(series) and series[0]["value"][1] == "1"

        assert wait_for(scraped, timeout=30, interval=0.5), api_get(port, "/api/v1/targets")
        info = query(port, "plat_info")["data"]["result"]
        assert [s["metric"]["version"] for s in info] == [__version__]
