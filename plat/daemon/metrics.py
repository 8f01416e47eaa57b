"""The daemon's Prometheus metrics and the ``GET /metrics`` route.

Everything lives in a ``CollectorRegistry`` of its own (never the library's global
one), so two daemons in one process, as in tests, never share a series. The
gateway calls ``request_started``/``request_finished`` on its hot path: those look
the function's labelled children up in one dict and touch nothing else. The
instance counts are not pushed at all: a collector asks the controller at scrape
time. See docs/metrics.md for every metric and for the cost per call.

Callers pass function *keys* (``hello``, ``hello.acme``: see plat.tenancy); every
per-function series is labelled with the plain name and the tenant instead, so
that ``sum by (tenant)`` works and two tenants' ``hello`` stay two series. A key
is split once, when its series are first made, never per request.

Not thread-safe by design: the daemon is one asyncio loop, and ``render`` reads
the controller's state through the ``instance_states`` callback, so call every
method from the loop's thread.
"""

from __future__ import annotations

import contextlib
import logging
import platform
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from plat import __version__
from plat.api import InstanceCount, PoolState, ScalerState
from plat.credentials import check_basic
from plat.daemon.serving.instance import INSTANCE_STATES
from plat.tenancy import split_key

if TYPE_CHECKING:  # a type only: the metrics read the queue through a callback
    from plat.daemon.asyncq.queue import QueueState

log = logging.getLogger(__name__)

InstanceStates = Callable[[], Iterable[InstanceCount]]

# Proxy hops of a fraction of a millisecond up to the default 30 s timeout.
INVOCATION_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
# A container start plus its readiness probe: ~0.3 s at best, bounded by ready_timeout (30 s).
COLD_START_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0)
# A cached build is a digest lookup; a real one installs dependencies (minutes).
BUILD_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)

BUILD_RESULTS = ("built", "cached", "failed")


# The labels every per-function series starts with: the plain name, then its tenant.
FUNCTION_LABELS = ("function", "tenant")


class _FunctionSeries:
    """One function's labelled children, created once and reused on every request.

    ``labels`` is the key split into (name, tenant), done here once per function.
    """

    __slots__ = ("codes", "duration", "in_flight", "invocations", "labels")

    def __init__(self, metrics: Metrics, key: str) -> None:
        self.labels = split_key(key)
        self.in_flight = metrics.in_flight.labels(*self.labels)
        self.duration = metrics.duration.labels(*self.labels)
        self.invocations = metrics.invocations
        # status code -> counter child; HTTP codes are a small, bounded set.
        self.codes: dict[int, Counter] = {}

    def code(self, status: int) -> Counter:
        child = self.invocations.labels(*self.labels, str(status))
        self.codes[status] = child
        return child


class _InstancesCollector(Collector):
    """``plat_instances{function,tenant,state}``, read from the controller at scrape time."""

    def __init__(self, instance_states: InstanceStates) -> None:
        self._instance_states = instance_states

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "plat_instances",
            "Instances per function and state (starting, ready, draining).",
            labels=(*FUNCTION_LABELS, "state"),
        )

    def describe(self) -> Iterable[Metric]:
        # Declares the name to the registry (duplicate check) without calling the
        # callback, which may not be usable yet when the registry is built.
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        counts: dict[str, dict[str, int]] = {}
        try:
            for function, state, count in self._instance_states():
                per_state = counts.setdefault(function, dict.fromkeys(INSTANCE_STATES, 0))
                per_state[state] = per_state.get(state, 0) + count
        except Exception:
            # One broken source must not fail the whole scrape (and with it every
            # other metric): the family is exported empty and the error logged.
            log.exception("the instance_states callback failed; plat_instances left empty")
            return [family]
        rows = sorted(((split_key(k), v) for k, v in counts.items()), key=lambda row: row[0])
        for labels, per_state in rows:
            # Every known state is exported, zeros included, so that a series does
            # not vanish (and go stale in Prometheus) when its count drops to 0.
            for state, count in per_state.items():
                family.add_metric((*labels, state), count)
        return [family]


ScalerStates = Callable[[], Iterable[ScalerState]]


class _ScalerCollector(Collector):
    """The autoscaler's view per function, read from the controller at scrape time."""

    NAMES = (
        ("plat_autoscaler_desired_instances", "Instances the autoscaler wants."),
        ("plat_autoscaler_actual_instances", "Ready instances."),
        ("plat_autoscaler_observed_concurrency", "Average concurrency over the stable window."),
        ("plat_autoscaler_panic", "1 while the autoscaler is in panic mode."),
    )

    def __init__(self, scaler_states: ScalerStates) -> None:
        self._scaler_states = scaler_states

    def _families(self) -> list[GaugeMetricFamily]:
        return [GaugeMetricFamily(n, h, labels=FUNCTION_LABELS) for n, h in self.NAMES]

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        try:
            rows = list(self._scaler_states())
        except Exception:
            log.exception("the scaler_states callback failed; plat_autoscaler_* left empty")
            return families
        for function, desired, actual, observed, panic in sorted(rows):
            labels = split_key(function)
            for family, value in zip(
                families, (desired, actual, observed, 1.0 if panic else 0.0), strict=True
            ):
                family.add_metric(labels, value)
        return families


PoolStates = Callable[[], Iterable[PoolState]]


class _PoolCollector(Collector):
    """The pre-warmed pool per key (runtime and limits), read from the pool at scrape time."""

    def __init__(self, pool_states: PoolStates) -> None:
        self._pool_states = pool_states

    def _families(self) -> tuple[GaugeMetricFamily, CounterMetricFamily, CounterMetricFamily]:
        return (
            GaugeMetricFamily(
                "plat_pool_instances",
                "Generic pre-started instances per pool (runtime and limits), ready or starting.",
                labels=("pool", "state"),
            ),
            CounterMetricFamily(
                "plat_pool_claims",
                "Cold starts served by specialising a pool instance.",
                labels=("pool",),
            ),
            CounterMetricFamily(
                "plat_pool_misses",
                "Instance starts that found no usable pool instance (none ready, or the version "
                "not unpacked yet, as for the first instance of a new deploy).",
                labels=("pool",),
            ),
        )

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        instances, claims, misses = families = self._families()
        try:
            rows = list(self._pool_states())
        except Exception:
            log.exception("the pool_states callback failed; plat_pool_* left empty")
            return families
        for pool, ready, starting, claimed, missed in sorted(rows):
            instances.add_metric((pool, "ready"), ready)
            instances.add_metric((pool, "starting"), starting)
            claims.add_metric((pool,), claimed)
            misses.add_metric((pool,), missed)
        return families


QueueStates = Callable[[], Iterable["QueueState"]]


class _QueueCollector(Collector):
    """Queued calls per function (while it has some), read from the queue at scrape time."""

    NAMES = (
        ("plat_async_queue_depth", "Queued calls waiting to run, retries included."),
        ("plat_async_running", "Queued calls running now."),
        ("plat_async_queue_oldest_seconds", "Age of the oldest call in the function's queue."),
    )

    def __init__(self, queue_states: QueueStates) -> None:
        self._queue_states = queue_states

    def _families(self) -> list[GaugeMetricFamily]:
        return [GaugeMetricFamily(n, h, labels=FUNCTION_LABELS) for n, h in self.NAMES]

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        try:
            rows = sorted(self._queue_states(), key=lambda row: row.function)
        except Exception:
            log.exception("the queue_states callback failed; plat_async_* left empty")
            return families
        for row in rows:
            values = (row.waiting, row.running, row.oldest)
            for family, value in zip(families, values, strict=True):
                family.add_metric(split_key(row.function), value)
        return families


class Metrics:
    """All of the daemon's Prometheus metrics, in a registry of their own.

    ``instance_states()`` yields ``(function, state, count)`` and is called at
    scrape time (from ``render``), on the loop's thread; states are ``starting``,
    ``ready`` and ``draining``.

    ``function`` arguments are function keys (``hello``, ``hello.acme``), and the
    series carry ``function="hello", tenant="acme"``. They must name deployed
    functions: every distinct key is a set of series kept until
    ``remove_function``, so a caller must not pass names taken from
    unauthenticated URLs of functions that do not exist.
    """

    def __init__(
        self,
        instance_states: InstanceStates,
        scaler_states: ScalerStates | None = None,
        pool_states: PoolStates | None = None,
        queue_states: QueueStates | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.invocations = Counter(
            "plat_invocations",
            "Requests for a deployed function, by the HTTP status code the gateway answered.",
            (*FUNCTION_LABELS, "code"),
            registry=r,
        )
        self.duration = Histogram(
            "plat_invocation_duration_seconds",
            "Time from the gateway receiving a request to the end of its answer, "
            "waiting for an instance included.",
            FUNCTION_LABELS,
            buckets=INVOCATION_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "plat_invocations_in_flight",
            "Requests for a function the gateway is handling right now.",
            FUNCTION_LABELS,
            registry=r,
        )
        self.cold_starts = Counter(
            "plat_cold_starts",
            "Requests that had to wait for an instance of the function to start.",
            FUNCTION_LABELS,
            registry=r,
        )
        self.cold_start_duration = Histogram(
            "plat_cold_start_duration_seconds",
            "How long a request waited for an instance to start and become ready.",
            FUNCTION_LABELS,
            buckets=COLD_START_BUCKETS,
            registry=r,
        )
        self.builds = Counter(
            "plat_builds",
            "Image builds by result: built, cached (the image existed) or failed.",
            ("result",),
            registry=r,
        )
        self.build_duration = Histogram(
            "plat_build_duration_seconds",
            "Wall time of an image build, whatever its result.",
            buckets=BUILD_BUCKETS,
            registry=r,
        )
        # Every result exists from the start, so rate() and the dashboard's stacked
        # panel have a series to work with before the first failure.
        self._build_results = {result: self.builds.labels(result) for result in BUILD_RESULTS}
        info = Info("plat", "The daemon's version and Python; the value is always 1.", registry=r)
        info.info({"version": __version__, "python": platform.python_version()})
        r.register(_InstancesCollector(instance_states))
        if scaler_states is not None:
            r.register(_ScalerCollector(scaler_states))
        if pool_states is not None:
            r.register(_PoolCollector(pool_states))
        if queue_states is not None:
            r.register(_QueueCollector(queue_states))
        # The standard process_* names that every Prometheus client exports: generic
        # dashboards and alerts work unchanged, and job/instance say which process.
        ProcessCollector(registry=r)
        self._functions: dict[str, _FunctionSeries] = {}

    def _series(self, function: str) -> _FunctionSeries:
        series = self._functions.get(function)
        if series is None:
            series = self._functions[function] = _FunctionSeries(self, function)
        return series

    def request_started(self, function: str) -> None:
        """A request for ``function`` entered the gateway: in-flight + 1."""
        series = self._functions.get(function)
        if series is None:
            series = self._series(function)
        series.in_flight.inc()

    def request_finished(self, function: str, status: int, seconds: float, cold: bool) -> None:
        """The request ended with HTTP ``status`` after ``seconds``: in-flight - 1, counted, timed.

        ``seconds`` runs from receipt to the end of the answer. ``cold`` says the
        request waited for an instance start (counted by ``cold_start``); in the
        OpenMetrics format it marks the request's latency bucket with the exemplar
        ``{cold="true"}``, so a slow bucket can be told apart from a cold one.
        Each call must follow one ``request_started`` for the same function.
        """
        series = self._functions.get(function)
        if series is None:
            # The function was removed while this request was in flight: its start
            # was counted on the old series, so nothing is decremented here.
            series = self._series(function)
        else:
            series.in_flight.dec()
        counter = series.codes.get(status)
        if counter is None:
            counter = series.code(status)
        counter.inc()
        if cold:
            series.duration.observe(seconds, {"cold": "true"})
        else:
            series.duration.observe(seconds)

    def cold_start(self, function: str, seconds: float) -> None:
        """A request waited ``seconds`` for an instance of ``function`` to start."""
        labels = self._series(function).labels
        self.cold_starts.labels(*labels).inc()
        self.cold_start_duration.labels(*labels).observe(seconds)

    def build_finished(self, result: str, seconds: float) -> None:
        """An image build ended: ``result`` is ``built``, ``cached`` or ``failed``.

        Raises ValueError for any other result (the label set stays bounded).
        """
        counter = self._build_results.get(result)
        if counter is None:
            raise ValueError(f"build result {result!r} is not one of {', '.join(BUILD_RESULTS)}")
        counter.inc()
        self.build_duration.observe(seconds)

    def remove_function(self, function: str) -> None:
        """Drop every series of ``function`` (after ``plat rm``), so it stops being exported.

        Only that key's: another tenant's function of the same name keeps its series.
        """
        series = self._functions.pop(function, None)
        labels = split_key(function) if series is None else series.labels
        if series is not None:
            for status in series.codes:
                self.invocations.remove(*labels, str(status))
        for metric in (self.in_flight, self.duration, self.cold_starts, self.cold_start_duration):
            # remove() raises KeyError for a label set that was never used.
            with contextlib.suppress(KeyError):
                metric.remove(*labels)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition of every metric and its content type.

        OpenMetrics when ``accept`` asks for ``application/openmetrics-text``
        (Prometheus does), else the text format 0.0.4 (or 1.0.0 when asked).
        """
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


def metrics_routes(metrics: Metrics, *, auth_header: str | None) -> list[web.RouteDef]:
    """``GET /metrics`` (and HEAD). With ``auth_header`` (``basic_header(password)``),
    a request without those basic-auth credentials gets a JSON 401; without it,
    the route is open.
    """

    async def serve(request: web.Request) -> web.Response:
        if auth_header is not None and not check_basic(
            request.headers.get("Authorization"), auth_header
        ):
            return web.json_response(
                {
                    "error": "unauthorized",
                    "message": "/metrics needs basic auth: user admin, "
                    "password from `plat auth password`",
                },
                status=401,
                headers={"WWW-Authenticate": 'Basic realm="plat"'},
            )
        body, content_type = metrics.render(request.headers.get("Accept"))
        # aiohttp's content_type argument refuses parameters; the header takes them whole.
        return web.Response(body=body, headers={"Content-Type": content_type})

    return [web.get("/metrics", serve)]
