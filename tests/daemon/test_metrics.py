"""The Metrics class, rendered and parsed back; /metrics over HTTP; the monitoring kit.

The exposition is checked by two independent readers: prometheus_client's parsers
and the real ``promtool check metrics`` (Debian's prometheus package, installed by
scripts/setup.sh).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import timeit
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from plat import __version__
from plat.api import InstanceCount, ScalerState
from plat.credentials import basic_header
from plat.daemon.metrics import (
    BUILD_RESULTS,
    INSTANCE_STATES,
    INVOCATION_BUCKETS,
    Metrics,
    metrics_routes,
)
from plat.tenancy import DEFAULT_TENANT, split_key

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "monitoring" / "grafana-dashboard.json"
PROMETHEUS_YML = REPO / "monitoring" / "prometheus.yml"
OPENMETRICS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)  # what Prometheus 2.x sends

AiohttpClient = Any  # pytest-aiohttp's factory fixture


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (scripts/setup.sh installs Debian's prometheus)")
    return path


def samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(text: str, name: str, **labels: str) -> float | None:
    """The value of the one sample called ``name`` with exactly ``labels``, or None.

    ``function`` without ``tenant`` means the default tenant's function.
    """
    if "function" in labels:
        labels.setdefault("tenant", DEFAULT_TENANT)
    found = [s.value for s in samples(text) if s.name == name and s.labels == labels]
    assert len(found) <= 1, f"{name}{labels} appears {len(found)} times"
    return found[0] if found else None


def render_text(metrics: Metrics) -> str:
    body, content_type = metrics.render()
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    return body.decode()


class States:
    """A stand-in for the controller: the instance counts, and how often they were read."""

    def __init__(self, rows: Iterable[tuple[str, str, int]] = ()) -> None:
        self.rows = [InstanceCount(*row) for row in rows]
        self.calls = 0

    def __call__(self) -> Iterator[InstanceCount]:
        self.calls += 1
        return iter(self.rows)


def exercised() -> Metrics:
    """A Metrics with every method called at least once."""
    metrics = Metrics(States([("hello", "ready", 2), ("hello", "starting", 1)]))
    for _ in range(3):
        metrics.request_started("hello")
        metrics.request_finished("hello", 200, 0.004, cold=False)
    metrics.request_started("hello")
    metrics.request_finished("hello", 500, 0.2, cold=False)
    metrics.request_started("other")
    metrics.request_finished("other", 502, 2.0, cold=True)
    metrics.cold_start("other", 1.5)
    metrics.build_finished("built", 42.0)
    metrics.build_finished("cached", 0.05)
    return metrics


# --- the exposition -------------------------------------------------------------


def test_invocations_are_counted_by_function_and_code() -> None:
    text = render_text(exercised())
    assert value(text, "plat_invocations_total", function="hello", code="200") == 3
    assert value(text, "plat_invocations_total", function="hello", code="500") == 1
    assert value(text, "plat_invocations_total", function="other", code="502") == 1
    assert value(text, "plat_invocations_total", function="other", code="200") is None


def test_invocation_duration_is_a_histogram_per_function() -> None:
    text = render_text(exercised())
    name = "plat_invocation_duration_seconds"
    assert value(text, name + "_count", function="hello") == 4
    assert value(text, name + "_sum", function="hello") == pytest.approx(3 * 0.004 + 0.2)
    assert value(text, name + "_bucket", function="hello", le="0.0025") == 0
    assert value(text, name + "_bucket", function="hello", le="0.005") == 3
    assert value(text, name + "_bucket", function="hello", le="0.25") == 4
    assert value(text, name + "_bucket", function="hello", le="+Inf") == 4
    les = [s.labels["le"] for s in samples(text) if s.name == name + "_bucket"]
    assert les[: len(INVOCATION_BUCKETS) + 1] == [
        *(prometheus_client.utils.floatToGoString(b) for b in INVOCATION_BUCKETS),
        "+Inf",
    ]
    # 0.5 ms .. 30 s, as the brief for the gateway's latencies asks.
    assert INVOCATION_BUCKETS[0] == 0.0005 and INVOCATION_BUCKETS[-1] == 30.0


def test_in_flight_goes_up_and_back_down() -> None:
    metrics = Metrics(States())
    metrics.request_started("hello")
    metrics.request_started("hello")
    metrics.request_started("other")
    text = render_text(metrics)
    assert value(text, "plat_invocations_in_flight", function="hello") == 2
    assert value(text, "plat_invocations_in_flight", function="other") == 1
    metrics.request_finished("hello", 200, 0.01, cold=False)
    metrics.request_finished("hello", 404, 0.01, cold=False)
    metrics.request_finished("other", 200, 0.01, cold=False)
    text = render_text(metrics)
    assert value(text, "plat_invocations_in_flight", function="hello") == 0
    assert value(text, "plat_invocations_in_flight", function="other") == 0


def test_cold_starts_are_counted_and_timed() -> None:
    text = render_text(exercised())
    assert value(text, "plat_cold_starts_total", function="other") == 1
    assert value(text, "plat_cold_starts_total", function="hello") is None
    name = "plat_cold_start_duration_seconds"
    assert value(text, name + "_count", function="other") == 1
    assert value(text, name + "_sum", function="other") == 1.5
    assert value(text, name + "_bucket", function="other", le="1.0") == 0
    assert value(text, name + "_bucket", function="other", le="2.0") == 1


def test_a_cold_request_marks_its_latency_bucket_with_an_exemplar() -> None:
    body, content_type = exercised().render(OPENMETRICS_ACCEPT)
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    text = body.decode()
    assert text.endswith("# EOF\n")
    buckets = [
        s
        for family in openmetrics_families(text)
        for s in family.samples
        if s.name == "plat_invocation_duration_seconds_bucket"
    ]
    marked = [s for s in buckets if s.exemplar is not None]
    assert len(marked) == 1
    (sample,) = marked
    assert sample.labels == {"function": "other", "tenant": "default", "le": "2.5"}
    assert sample.exemplar is not None
    assert sample.exemplar.labels == {"cold": "true"}
    assert sample.exemplar.value == 2.0


def test_builds_are_counted_by_result_and_every_result_exists_from_the_start() -> None:
    text = render_text(Metrics(States()))
    for result in BUILD_RESULTS:
        assert value(text, "plat_builds_total", result=result) == 0
    text = render_text(exercised())
    assert value(text, "plat_builds_total", result="built") == 1
    assert value(text, "plat_builds_total", result="cached") == 1
    assert value(text, "plat_builds_total", result="failed") == 0
    assert value(text, "plat_build_duration_seconds_count") == 2
    assert value(text, "plat_build_duration_seconds_sum") == pytest.approx(42.05)
    assert value(text, "plat_build_duration_seconds_bucket", le="0.1") == 1
    assert value(text, "plat_build_duration_seconds_bucket", le="60.0") == 2


def test_an_unknown_build_result_is_refused() -> None:
    metrics = Metrics(States())
    with pytest.raises(ValueError, match="'weird'"):
        metrics.build_finished("weird", 1.0)
    text = render_text(metrics)
    assert value(text, "plat_build_duration_seconds_count") == 0


def test_instances_come_from_the_callback_at_scrape_time_with_every_state() -> None:
    states = States([("hello", "ready", 2), ("hello", "starting", 1), ("b", "draining", 1)])
    metrics = Metrics(states)
    assert states.calls == 0  # building the registry does not read the controller
    text = render_text(metrics)
    assert states.calls == 1
    got = {
        (s.labels["function"], s.labels["state"]): s.value
        for s in samples(text)
        if s.name == "plat_instances"
    }
    assert {s.labels["tenant"] for s in samples(text) if s.name == "plat_instances"} == {"default"}
    # Zeros for the states a function has no instance in: series never vanish.
    assert got == {
        ("b", "starting"): 0,
        ("b", "ready"): 0,
        ("b", "suspect"): 0,
        ("b", "draining"): 1,
        ("hello", "starting"): 1,
        ("hello", "ready"): 2,
        ("hello", "suspect"): 0,
        ("hello", "draining"): 0,
    }
    assert set(INSTANCE_STATES) == {"starting", "ready", "suspect", "draining"}
    states.rows = [InstanceCount("hello", "ready", 1)]
    text = render_text(metrics)
    assert value(text, "plat_instances", function="hello", state="ready") == 1
    assert value(text, "plat_instances", function="b", state="draining") is None


def test_a_failing_instance_callback_does_not_fail_the_scrape(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken() -> list[InstanceCount]:
        raise RuntimeError("controller exploded")

    metrics = exercised()
    metrics_broken = Metrics(broken)
    metrics_broken.request_started("hello")
    with caplog.at_level(logging.ERROR, logger="plat.daemon.metrics"):
        text = render_text(metrics_broken)
    assert "controller exploded" in caplog.text
    assert "# TYPE plat_instances gauge" in text
    assert not [s for s in samples(text) if s.name == "plat_instances"]
    assert value(text, "plat_invocations_in_flight", function="hello") == 1
    assert value(render_text(metrics), "plat_instances", function="hello", state="ready") == 2


def test_info_and_process_metrics() -> None:
    text = render_text(Metrics(States()))
    info = [s for s in samples(text) if s.name == "plat_info"]
    assert len(info) == 1
    assert info[0].value == 1
    assert info[0].labels["version"] == __version__
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", info[0].labels["python"])
    rss = value(text, "process_resident_memory_bytes")
    assert rss is not None and rss > 1_000_000
    assert value(text, "process_cpu_seconds_total") is not None
    assert value(text, "process_open_fds") is not None


def test_remove_function_drops_its_series_and_late_requests_do_not_go_negative() -> None:
    metrics = exercised()
    metrics.request_started("other")  # still in flight when the function is removed
    metrics.remove_function("other")
    metrics.remove_function("never-seen")  # harmless
    text = render_text(metrics)
    assert not [s for s in samples(text) if s.labels.get("function") == "other"]
    assert value(text, "plat_invocations_total", function="hello", code="200") == 3
    metrics.request_finished("other", 200, 0.01, cold=False)
    text = render_text(metrics)
    assert value(text, "plat_invocations_in_flight", function="other") == 0
    assert value(text, "plat_invocations_total", function="other", code="200") == 1


def test_each_instance_has_its_own_registry() -> None:
    one, two = Metrics(States()), Metrics(States())
    one.request_started("solo")
    one.request_finished("solo", 200, 0.01, cold=False)
    assert value(render_text(two), "plat_invocations_total", function="solo", code="200") is None
    assert (
        prometheus_client.REGISTRY.get_sample_value(
            "plat_invocations_total", {"function": "solo", "tenant": "default", "code": "200"}
        )
        is None
    )
    assert one.registry is not two.registry


def test_promtool_accepts_the_exposition_without_lint_problems() -> None:
    body, _ = exercised().render()
    proc = subprocess.run(
        [promtool(), "check", "metrics"], input=body, capture_output=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    assert proc.stdout.decode().strip() == ""
    assert proc.stderr.decode().strip() == ""


@pytest.mark.parametrize("key", ["hello", "hello.acme"])
def test_the_hot_path_reuses_its_labelled_children(
    key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    metrics = Metrics(States())
    metrics.request_started(key)
    metrics.request_finished(key, 200, 0.004, cold=False)

    def no_lookup(*args: object, **kwargs: object) -> None:
        raise AssertionError("a label lookup on the hot path")

    def no_split(key: str) -> tuple[str, str]:
        raise AssertionError(f"{key!r} split again on the hot path")

    # Every labelled metric's labels() goes through this one base-class method,
    # and every key is split by the one split_key the module imported.
    monkeypatch.setattr(MetricWrapperBase, "labels", no_lookup)
    monkeypatch.setattr("plat.daemon.metrics.split_key", no_split)
    for _ in range(3):
        metrics.request_started(key)
        metrics.request_finished(key, 200, 0.004, cold=False)
        metrics.request_started(key)
        metrics.request_finished(key, 200, 1.0, cold=True)
    monkeypatch.undo()
    text = render_text(metrics)
    name, tenant = split_key(key)
    assert value(text, "plat_invocations_total", function=name, tenant=tenant, code="200") == 7


def test_the_hot_path_stays_cheap() -> None:
    """A loose bound (~10-20x what docs/metrics.md reports) against pathological costs."""
    metrics = Metrics(States())

    def pair() -> None:
        metrics.request_started("hello")
        metrics.request_finished("hello", 200, 0.004, cold=False)

    number = 20_000
    best = min(timeit.repeat(pair, number=number, repeat=5)) / number
    assert best < 100e-6, f"{best * 1e6:.1f} us per request_started+request_finished"


# --- tenants ------------------------------------------------------------------------

# Every family with per-function series; each must carry both labels.
PER_FUNCTION = frozenset(
    {
        "plat_invocations_total",
        "plat_invocations_created",
        "plat_invocation_duration_seconds_bucket",
        "plat_invocation_duration_seconds_count",
        "plat_invocation_duration_seconds_sum",
        "plat_invocation_duration_seconds_created",
        "plat_invocations_in_flight",
        "plat_cold_starts_total",
        "plat_cold_starts_created",
        "plat_cold_start_duration_seconds_bucket",
        "plat_cold_start_duration_seconds_count",
        "plat_cold_start_duration_seconds_sum",
        "plat_cold_start_duration_seconds_created",
        "plat_instances",
        "plat_autoscaler_desired_instances",
        "plat_autoscaler_actual_instances",
        "plat_autoscaler_observed_concurrency",
        "plat_autoscaler_panic",
    }
)
BOTH = {("hello", "default"), ("hello", "acme")}


class Scalers:
    """A stand-in for the controller's autoscaler view."""

    def __init__(self, rows: Iterable[ScalerState]) -> None:
        self.rows = list(rows)

    def __call__(self) -> Iterator[ScalerState]:
        return iter(self.rows)


def two_tenants(states: States | None = None, scalers: Scalers | None = None) -> Metrics:
    """``hello`` of the default tenant and ``hello`` of acme (key ``hello.acme``),
    each with its own traffic, cold start, instances and autoscaler view."""
    if states is None:
        states = States(
            [("hello", "ready", 1), ("hello.acme", "ready", 3), ("hello.acme", "starting", 1)]
        )
    if scalers is None:
        scalers = Scalers(
            [ScalerState("hello", 1, 1, 0.5, False), ScalerState("hello.acme", 4, 3, 7.0, True)]
        )
    metrics = Metrics(states, scalers)
    for key, calls, code in (("hello", 2, 200), ("hello.acme", 5, 201)):
        for _ in range(calls):
            metrics.request_started(key)
            metrics.request_finished(key, code, 0.004, cold=False)
    for key, waited in (("hello", 0.3), ("hello.acme", 1.5)):
        metrics.request_started(key)
        metrics.request_finished(key, 200, waited + 0.01, cold=True)
        metrics.cold_start(key, waited)
    metrics.request_started("hello.acme")  # still in flight
    return metrics


def stamped(openmetrics: str, stamp: str = "1700000000") -> str:
    """OpenMetrics text with a timestamp on every sample (before any exemplar), which
    ``promtool tsdb create-blocks-from openmetrics`` wants."""
    lines = []
    for line in openmetrics.splitlines():
        if line.startswith("#"):
            lines.append(line)
        else:
            sample, sep, exemplar = line.partition(" # ")
            lines.append(f"{sample} {stamp}{sep}{exemplar}")
    return "\n".join(lines) + "\n"


DUMP_LABEL = re.compile(r'(\w+)="((?:\\.|[^"\\])*)"')


def promtool_series(metrics: Metrics, workdir: Path) -> list[dict[str, str]]:
    """The series a real Prometheus TSDB stores for one scrape, as promtool dumps them.

    The OpenMetrics exposition is written into blocks by ``promtool tsdb
    create-blocks-from openmetrics`` and read back with ``promtool tsdb dump``:
    series that collide are one series there, whatever the text looked like.
    """
    body, _ = metrics.render(OPENMETRICS_ACCEPT)
    source, db = workdir / "scrape.om", workdir / "tsdb"
    source.write_text(stamped(body.decode()))
    for args in (["create-blocks-from", "openmetrics", str(source), str(db)], ["dump", str(db)]):
        (db / "wal").mkdir(parents=True, exist_ok=True)  # dump opens the (empty) WAL too
        proc = subprocess.run(
            [promtool(), "tsdb", *args], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    series = [
        dict(DUMP_LABEL.findall(line.partition("}")[0]))
        for line in proc.stdout.splitlines()
        if line.startswith("{")
    ]
    assert series, proc.stdout
    return series


def function_tenants(series: Iterable[dict[str, str]], name: str) -> set[tuple[str, str]]:
    return {(s["function"], s["tenant"]) for s in series if s["__name__"] == name}


def test_every_per_function_series_has_the_plain_name_and_a_tenant() -> None:
    text = render_text(two_tenants())
    labelled = [s for s in samples(text) if "function" in s.labels]
    assert {s.name for s in labelled} == PER_FUNCTION
    for sample in labelled:
        assert sample.labels["function"] == "hello", sample
        assert sample.labels["tenant"] in {"default", "acme"}, sample
    assert not [s for s in samples(text) if "tenant" in s.labels and "function" not in s.labels]


def test_two_tenants_functions_of_one_name_are_two_series() -> None:
    text = render_text(two_tenants())
    default, acme = (
        {"function": "hello", "tenant": "default"},
        {"function": "hello", "tenant": "acme"},
    )
    assert value(text, "plat_invocations_total", **default, code="200") == 3
    assert value(text, "plat_invocations_total", **default, code="201") is None
    assert value(text, "plat_invocations_total", **acme, code="201") == 5
    assert value(text, "plat_invocations_total", **acme, code="200") == 1
    assert value(text, "plat_invocations_in_flight", **default) == 0
    assert value(text, "plat_invocations_in_flight", **acme) == 1
    assert value(text, "plat_invocation_duration_seconds_count", **default) == 3
    assert value(text, "plat_invocation_duration_seconds_count", **acme) == 6
    assert value(text, "plat_cold_starts_total", **default) == 1
    assert value(text, "plat_cold_starts_total", **acme) == 1
    assert value(text, "plat_cold_start_duration_seconds_sum", **default) == 0.3
    assert value(text, "plat_cold_start_duration_seconds_sum", **acme) == 1.5
    assert value(text, "plat_instances", **default, state="ready") == 1
    assert value(text, "plat_instances", **acme, state="ready") == 3
    assert value(text, "plat_instances", **acme, state="starting") == 1
    assert value(text, "plat_autoscaler_desired_instances", **default) == 1
    assert value(text, "plat_autoscaler_desired_instances", **acme) == 4
    assert value(text, "plat_autoscaler_panic", **default) == 0
    assert value(text, "plat_autoscaler_panic", **acme) == 1
    # No sample carries the key itself.
    assert not [s for s in samples(text) if s.labels.get("function") == "hello.acme"]


def test_promtool_sees_two_tenants_hello_as_two_series(tmp_path: Path) -> None:
    metrics = two_tenants()
    body, _ = metrics.render()
    proc = subprocess.run(
        [promtool(), "check", "metrics"], input=body, capture_output=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    assert proc.stdout.decode().strip() == "" and proc.stderr.decode().strip() == ""
    series = promtool_series(metrics, tmp_path)
    stored = {s["__name__"] for s in series if "function" in s}
    assert stored == PER_FUNCTION  # _created too: the OpenMetrics import stores those
    for name in stored:
        assert function_tenants(series, name) == BOTH, name
    codes = {(s["tenant"], s["code"]) for s in series if s["__name__"] == "plat_invocations_total"}
    assert codes == {("default", "200"), ("acme", "201"), ("acme", "200")}


@pytest.mark.parametrize(("removed", "kept"), [("hello.acme", "default"), ("hello", "acme")])
def test_removing_one_tenants_function_removes_only_its_series(
    removed: str, kept: str, tmp_path: Path
) -> None:
    # No instance or autoscaler rows: those come from the controller, which stops
    # reporting a removed function; what remove_function drops is the rest.
    metrics = two_tenants(States(), Scalers([]))
    before = render_text(metrics)
    metrics.remove_function(removed)
    metrics.remove_function("never-seen.acme")  # harmless
    text = render_text(metrics)

    def of(tenant: str, text: str) -> list[Sample]:
        return [s for s in samples(text) if s.labels.get("tenant") == tenant]

    # The other tenant's hello is untouched, sample for sample; the removed one is gone.
    assert of(kept, text) == of(kept, before) != []
    assert not [s for s in samples(text) if "function" in s.labels and s.labels["tenant"] != kept]
    series = promtool_series(metrics, tmp_path)
    assert {s["__name__"] for s in series if "function" in s} == {
        name for name in PER_FUNCTION if name.startswith(("plat_invocation", "plat_cold_start"))
    }
    for name in {s["__name__"] for s in series if "function" in s}:
        assert function_tenants(series, name) == {("hello", kept)}, name


# --- GET /metrics -----------------------------------------------------------------


async def metrics_client(aiohttp_client: AiohttpClient, auth_header: str | None) -> TestClient:
    app = web.Application()
    app.add_routes(metrics_routes(exercised(), auth_header=auth_header))
    client: TestClient = await aiohttp_client(app)
    return client


async def test_route_serves_the_text_format_openly(aiohttp_client: AiohttpClient) -> None:
    client = await metrics_client(aiohttp_client, auth_header=None)
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = await resp.text()
    assert value(text, "plat_invocations_total", function="hello", code="200") == 3
    head = await client.head("/metrics")
    assert head.status == 200


async def test_route_honours_openmetrics(aiohttp_client: AiohttpClient) -> None:
    client = await metrics_client(aiohttp_client, auth_header=None)
    resp = await client.get("/metrics", headers={"Accept": OPENMETRICS_ACCEPT})
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    text = await resp.text()
    names = {f.name for f in openmetrics_families(text)}
    # Info families are named without _info in OpenMetrics.
    assert {"plat_invocations", "plat_instances", "plat"} <= names


async def test_route_with_auth_wants_the_credentials(aiohttp_client: AiohttpClient) -> None:
    header = basic_header("s3cret")
    client = await metrics_client(aiohttp_client, auth_header=header)
    resp = await client.get("/metrics")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == 'Basic realm="plat"'
    body = await resp.json()
    assert body["error"] == "unauthorized"
    assert "plat auth password" in body["message"]
    wrong = await client.get("/metrics", headers={"Authorization": basic_header("nope")})
    assert wrong.status == 401
    ok = await client.get("/metrics", headers={"Authorization": header})
    assert ok.status == 200
    assert ok.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "plat_invocations_total" in await ok.text()


# --- the monitoring kit -------------------------------------------------------------

PROMQL_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
PROMQL_IDENTIFIER = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
PROMQL_KEYWORDS = frozenset({"and", "or", "unless", "offset", "bool", "inf", "nan"})


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels, keywords dropped)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = PROMQL_GROUPING.sub(" ", text)
    return {name for name in PROMQL_IDENTIFIER.findall(text) if name.lower() not in PROMQL_KEYWORDS}


def grafana_to_promql(expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced by plain PromQL."""
    expr = re.sub(r"\$__\w+", "1m", expr)  # $__rate_interval, $__interval, $__range
    return re.sub(r"\$\w+", ".*", expr)  # the dashboard's own variables (regex matchers)


def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def dashboard_exprs() -> list[str]:
    exprs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, item in node.items():
                if key == "expr" and isinstance(item, str):
                    exprs.append(item)
                else:
                    walk(item)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(dashboard()["panels"])
    return exprs


def exported_names() -> set[str]:
    return {s.name for s in samples(render_text(exercised()))}


def test_promql_name_extraction_is_not_vacuous() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (function, le) (rate(a_bucket{code=~"5.."}[1m]))) '
        "/ sum without (x) (b_total) and on (job, instance) plat_info > bool 1e3"
    )
    assert promql_metric_names(expr) == {"a_bucket", "b_total", "plat_info"}


def test_dashboard_is_an_importable_grafana_dashboard() -> None:
    data = dashboard()
    assert 36 <= data["schemaVersion"] <= 41
    assert [i["name"] for i in data["__inputs"]] == ["DS_PROMETHEUS"]
    assert data["__inputs"][0]["pluginId"] == "prometheus"
    panels = [p for p in data["panels"] if p["type"] != "row"]
    assert len(panels) >= 10
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
    for variable in data["templating"]["list"]:
        assert variable["datasource"]["uid"] == "${DS_PROMETHEUS}"


def test_dashboard_queries_name_only_exported_metrics() -> None:
    exported = exported_names()
    used: set[str] = set()
    for expr in dashboard_exprs():
        names = promql_metric_names(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= exported, f"{expr!r} names {sorted(names - exported)}"
        used |= names
    for variable in dashboard()["templating"]["list"]:
        match = re.match(r"label_values\(\s*([A-Za-z_:][\w:]*)", variable["definition"])
        assert match, variable["definition"]
        assert match.group(1) in exported
    # Every panel the brief asks for has its metric.
    assert {
        "plat_invocations_total",
        "plat_invocation_duration_seconds_bucket",
        "plat_invocations_in_flight",
        "plat_cold_starts_total",
        "plat_cold_start_duration_seconds_bucket",
        "plat_instances",
        "plat_builds_total",
        "plat_build_duration_seconds_bucket",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    } <= used


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": grafana_to_promql(expr)}
                    for i, expr in enumerate(dashboard_exprs())
                ],
            }
        ]
    }
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    proc = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def panel_exprs(title: str) -> list[str]:
    (panel,) = [p for p in dashboard()["panels"] if p["title"] == title]
    return [target["expr"] for target in panel["targets"]]


def test_dashboard_filters_and_splits_every_per_function_query_by_tenant() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert list(variables) == ["instance", "tenant", "function"]
    assert (
        variables["tenant"]["definition"]
        == 'label_values(plat_invocations_total{instance=~"$instance"}, tenant)'
    )
    # Picking a tenant narrows the function list to that tenant's functions.
    assert 'tenant=~"$tenant"' in variables["function"]["definition"]
    per_function = {s.name for s in samples(render_text(two_tenants())) if "function" in s.labels}
    checked = 0
    for expr in dashboard_exprs():
        if not promql_metric_names(expr) & per_function:
            continue
        checked += 1
        for matchers in re.findall(r"\{([^}]*)\}", expr):
            assert 'tenant=~"$tenant"' in matchers, expr
        for grouping in re.findall(r"\bby\s*\(([^)]*)\)", expr):
            labels = {label.strip() for label in grouping.split(",")}
            # Two tenants' hello must never be summed into one line.
            assert "function" not in labels or "tenant" in labels, expr
    assert checked >= 10


def test_dashboard_queries_keep_two_tenants_apart(tmp_path: Path) -> None:
    """``promtool test rules`` evaluates the dashboard's queries over two tenants'
    ``hello`` (default: 1 request/s, acme: 2/s of which 0.5/s are 502s)."""
    target = 'job="plat", instance="127.0.0.1:8080"'
    series = [
        (f'plat_invocations_total{{{target}, function="hello", tenant="default", code="200"}}', 15),
        (f'plat_invocations_total{{{target}, function="hello", tenant="acme", code="200"}}', 22.5),
        (f'plat_invocations_total{{{target}, function="hello", tenant="acme", code="502"}}', 7.5),
    ]
    instances = {("default", "ready"): 1, ("acme", "ready"): 3, ("acme", "starting"): 1}
    instances[("acme", "draining")] = 2

    def sample(labels: str, value: float) -> dict[str, Any]:
        return {"labels": labels, "value": value}

    def promql(expr: str, tenant: str = ".*") -> str:
        return grafana_to_promql(expr.replace("$tenant", tenant))

    (by_function,) = panel_exprs("Request rate by function")
    (by_tenant,) = panel_exprs("Request rate by tenant")
    (errors_by_tenant,) = panel_exprs("5xx answers by tenant")
    (quota_use,) = panel_exprs("Instances by tenant (quota use)")
    (by_state,) = panel_exprs("Instances by state")
    tests = [
        (
            promql(by_function),
            [
                sample('{function="hello", tenant="default"}', 1),
                sample('{function="hello", tenant="acme"}', 2),
            ],
        ),
        (promql(by_function, "acme"), [sample('{function="hello", tenant="acme"}', 2)]),
        (promql(by_tenant), [sample('{tenant="default"}', 1), sample('{tenant="acme"}', 2)]),
        (promql(errors_by_tenant), [sample('{tenant="acme"}', 0.5)]),
        (promql(quota_use), [sample('{tenant="default"}', 1), sample('{tenant="acme"}', 4)]),
        (
            promql(by_state, "acme"),
            [
                sample('{state="ready"}', 3),
                sample('{state="starting"}', 1),
                sample('{state="draining"}', 2),
            ],
        ),
    ]
    unit = {
        "rule_files": [],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": [
                    *({"series": name, "values": f"0+{step}x40"} for name, step in series),
                    *(
                        {
                            "series": f'plat_instances{{{target}, function="hello", '
                            f'tenant="{tenant}", state="{state}"}}',
                            "values": f"{count}x40",
                        }
                        for (tenant, state), count in instances.items()
                    ),
                ],
                "promql_expr_test": [
                    {"expr": expr, "eval_time": "5m", "exp_samples": expected}
                    for expr, expected in tests
                ],
            }
        ],
    }
    path = tmp_path / "dashboard_test.yml"
    path.write_text(yaml.safe_dump(unit))
    proc = subprocess.run(
        [promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def with_basic_auth(config: str, password_file: Path) -> str:
    """monitoring/prometheus.yml's text with its commented basic_auth block switched on."""
    lines = config.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "# basic_auth:")
    block = [re.sub(r"^(\s*)# ?", r"\1", line) for line in lines[start : start + 3]]
    block[2] = re.sub(r"password_file: .*", f"password_file: {password_file}", block[2])
    return "\n".join([*lines[:start], *block, *lines[start + 3 :]]) + "\n"


def test_prometheus_config_is_valid_with_and_without_basic_auth(tmp_path: Path) -> None:
    text = PROMETHEUS_YML.read_text()
    config = yaml.safe_load(text)
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "plat"
    assert job["scrape_interval"] == "5s"
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job["static_configs"] == [{"targets": ["127.0.0.1:8080"]}]
    assert "basic_auth" not in job
    plain = tmp_path / "plain.yml"
    plain.write_text(text)
    # The commented block, uncommented, is valid too (with a password file that exists).
    password = tmp_path / "metrics-password"
    password.write_text("s3cret\n")
    with_auth = tmp_path / "auth.yml"
    with_auth.write_text(with_basic_auth(text, password))
    auth = yaml.safe_load(with_auth.read_text())["scrape_configs"][0]["basic_auth"]
    assert auth == {"username": "admin", "password_file": str(password)}
    for path in (plain, with_auth):
        proc = subprocess.run(
            [promtool(), "check", "config", str(path)], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
