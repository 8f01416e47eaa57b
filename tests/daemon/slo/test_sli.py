"""plat.daemon.slo.sli: SLIs, error budget, burn rates and alert state from invocation
records, over tables of calls at known times (no daemon: the math alone)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from plat.daemon.journal import Retention
from plat.daemon.slo.sli import human, slo_report
from plat.daemon.store import Invocation
from plat.slo import Slo, SloReport, WindowReport

NOW = 1_800_000_000.0
DAY = 86400.0
LONG = Retention(invocations=10**9, invocation_age=400 * DAY)  # keeps everything


def call(age: float, status: int = 200, duration: float = 0.01, key: str = "hello") -> Invocation:
    """A call that ended ``age`` seconds before NOW."""
    return Invocation(NOW - age, key, "v1", status, duration, 0, 0, False, "c")


def calls(n: int, age: float, spread: float, **kw: object) -> list[Invocation]:
    """``n`` calls evenly over ``spread`` seconds, the newest ``age`` seconds old."""
    return [call(age + i * spread / n, **kw) for i in range(n)]  # type: ignore[arg-type]


def report(
    records: list[Invocation], slo: Mapping[str, object], retention: Retention = LONG
) -> SloReport:
    return slo_report("hello", Slo.model_validate(slo), records, now=NOW, retention=retention)


def window(rep: SloReport, sli: str, name: str) -> WindowReport:
    (one,) = [s for s in rep["slis"] if s["sli"] == sli]
    (found,) = [w for w in one["windows"] if w["window"] == name]
    return found


def test_only_5xx_count_against_availability() -> None:
    records = [call(10, status) for status in (200, 201, 301, 401, 404, 413, 429, 499)]
    records += [call(10, status) for status in (500, 502, 503, 504)]
    rep = report(records, {"availability": 99})
    five = window(rep, "availability", "5m")
    assert (five["calls"], five["good"]) == (12, 8)
    assert five["sli"] == pytest.approx(8 / 12)
    assert five["burn_rate"] == pytest.approx((4 / 12) / 0.01)


def test_latency_counts_calls_at_or_under_the_exact_threshold() -> None:
    records = [call(10, duration=d) for d in (0.1, 0.3, 0.30000001, 0.5, 2.0)]
    records.append(call(10, 500, duration=0.01))  # a fast 5xx is fast
    rep = report(records, {"latency": {"p90": "300ms"}})
    (latency,) = rep["slis"]
    assert (latency["percentile"], latency["threshold"], latency["objective"]) == ("p90", 0.3, 90)
    assert latency["rules_threshold"] == 0.5
    five = window(rep, "latency", "5m")
    assert (five["calls"], five["good"]) == (6, 3)
    assert five["burn_rate"] == pytest.approx(0.5 / 0.1)
    # The rules round 300 ms up; the report says so.
    assert any('le="0.5"' in note and "300 ms" in note for note in rep["notes"])


def test_windows_see_only_their_calls_and_the_budget_is_counted_over_30_days() -> None:
    records = [
        *calls(10, age=60, spread=60, status=500),  # the last 2 minutes: 10 errors
        *calls(990, age=2 * 3600, spread=3600),  # 2-3 h ago: fine
        *calls(9000, age=2 * DAY, spread=DAY),  # 2-3 days ago: fine
        *calls(5, age=31 * DAY, spread=60, status=500),  # before the 30 days: not counted
    ]
    rep = report(records, {"availability": 99.9})
    counts = {w["window"]: (w["calls"], w["good"]) for w in rep["slis"][0]["windows"]}
    assert counts == {
        "5m": (10, 0),
        "1h": (10, 0),
        "6h": (1000, 990),
        "1d": (1000, 990),
        "30d": (10000, 9990),
    }
    (availability,) = rep["slis"]
    # 10 errors in 10000 calls is exactly the budget of 99.9 %: all of it is spent.
    assert window(rep, "availability", "30d")["burn_rate"] == pytest.approx(1.0)
    assert availability["budget_left"] == pytest.approx(0.0, abs=1e-9)
    assert rep["notes"] == []


def test_an_overspent_budget_is_negative_and_no_calls_leave_it_whole() -> None:
    rep = report(calls(100, age=DAY, spread=60, status=503), {"availability": 99})
    assert rep["slis"][0]["budget_left"] == pytest.approx(1 - 100.0)
    empty = report([], {"availability": 99, "latency": {"p95": "1s"}})
    for sli in empty["slis"]:
        assert sli["budget_left"] == 1.0 and sli["alert"] is None
        assert all(w["sli"] is None and w["burn_rate"] is None for w in sli["windows"])
        assert all(w["calls"] == 0 for w in sli["windows"])


def test_a_fast_burn_pages_only_when_the_long_and_the_short_window_agree() -> None:
    slo = {"availability": 99.9}
    # 2 % errors for the last hour: 20x, over both 1h and 5m.
    burning = calls(980, age=0, spread=3600) + calls(20, age=0, spread=3600, status=500)
    assert report(burning, slo)["slis"][0]["alert"] == "page"
    # The same errors an hour ago, fine since: the 5m window says it is over.
    recovered = [call(NOW - r.ts + 3700, r.status) for r in burning]
    recovered += calls(1000, age=0, spread=300)
    assert report(recovered, slo)["slis"][0]["alert"] != "page"
    # A burst in the last 5 minutes of three healthy days: the 1h window is not past
    # 14.4x (1.44 % errors), nor the 6h one past 6x, so no page (nor a ticket).
    burst = calls(10_000, age=300, spread=3300) + calls(100, age=0, spread=300, status=500)
    burst += calls(200_000, age=3600, spread=3 * DAY)
    rep = report(burst, slo)
    assert (window(rep, "availability", "5m")["burn_rate"] or 0) > 14.4
    assert (window(rep, "availability", "1h")["burn_rate"] or 0) < 14.4
    assert rep["slis"][0]["alert"] is None


def test_a_slow_burn_opens_a_ticket_and_does_not_page() -> None:
    # 0.5 % errors for the last day: 5x, over 1d and 2h, below 6x and 14.4x.
    records = calls(9950, age=0, spread=DAY) + calls(50, age=0, spread=DAY, status=500)
    rep = report(records, {"availability": 99.9})
    assert rep["slis"][0]["alert"] == "ticket"
    assert window(rep, "availability", "1d")["burn_rate"] == pytest.approx(5.0, rel=0.01)


def test_latency_and_availability_alert_apart() -> None:
    slow = calls(100, age=0, spread=3600, duration=2.0)
    rep = report(slow, {"availability": 99.9, "latency": {"p95": "1s"}})
    alerts = {s["sli"]: s["alert"] for s in rep["slis"]}
    assert alerts == {"availability": None, "latency": "page"}


def test_a_retention_shorter_than_a_window_is_said() -> None:
    records = calls(100, age=0, spread=DAY)
    rep = report(records, {"availability": 99.9}, Retention(invocation_age=7 * DAY))
    assert rep["notes"] == [
        "the 30d window covers only the last 7d: invocation records are kept 7d (invocation_age)"
    ]
    assert window(rep, "availability", "30d")["covered"] == 7 * DAY
    assert window(rep, "availability", "1d")["covered"] == DAY

    # Kept by count: the last 50 records reach back 30 minutes.
    by_count = Retention(invocations=50, invocation_age=400 * DAY)
    rep = report(calls(50, age=0, spread=1800), {"availability": 99.9}, by_count)
    (note,) = rep["notes"]
    assert note.startswith("the 1h, 6h, 1d, 30d windows cover only the last 29.")
    assert "last 50 invocation records (invocation_records)" in note
    # Fewer records than the limit: nothing was trimmed by count.
    assert report(calls(49, age=0, spread=1800), {"availability": 99.9}, by_count)["notes"] == []


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(7 * DAY, "7d"), (1.5 * DAY, "1.5d"), (3600, "1h"), (5400, "1.5h"), (300, "5m"), (12, "12s")],
)
def test_human_spans(seconds: float, text: str) -> None:
    assert human(seconds) == text
