"""The autoscaler's decisions, as tables over synthetic load."""

from __future__ import annotations

import random

from plat.daemon.serving.autoscaler import Autoscaler, ScalerSettings, Window

FAST = ScalerSettings(
    target_utilization=1.0,
    stable_window=10.0,
    panic_window=2.0,
    panic_threshold=2.0,
    scale_down_rate=2.0,
    scale_to_zero_after=5.0,
)


def feed(scaler: Autoscaler, start: float, end: float, concurrency: float) -> float:
    t = start
    while t < end:
        scaler.observe(t, concurrency)
        t += 0.5
    return t


def test_steady_load_sizes_to_concurrency_target() -> None:
    scaler = Autoscaler(FAST)
    now = feed(scaler, 0, 12, 8.0)
    d = scaler.decide(now, 4, minimum=1, maximum=10, concurrency=2)
    assert d.desired == 4
    assert not d.panicking


def test_burst_panics_scales_up_at_once_and_holds() -> None:
    scaler = Autoscaler(FAST)
    now = feed(scaler, 0, 10, 1.0)
    assert scaler.decide(now, 1, minimum=1, maximum=10, concurrency=1).desired == 1
    now = feed(scaler, now, now + 2, 6.0)  # the short window sees 6x one instance
    d = scaler.decide(now, 1, minimum=1, maximum=10, concurrency=1)
    assert d.panicking
    assert d.desired >= 5
    # The burst ends, but no scale-down while panicking.
    now = feed(scaler, now, now + 3, 0.0)
    d = scaler.decide(now, d.desired, minimum=1, maximum=10, concurrency=1)
    assert d.panicking
    assert d.desired >= 5


def test_scale_down_is_rate_limited_and_respects_min() -> None:
    scaler = Autoscaler(FAST)
    now = feed(scaler, 0, 12, 0.5)
    d = scaler.decide(now, 8, minimum=1, maximum=10, concurrency=1)
    assert d.desired == 4  # at most halved per decision
    d = scaler.decide(now, 4, minimum=3, maximum=10, concurrency=1)
    assert d.desired == 3


def test_max_caps_even_a_panic() -> None:
    scaler = Autoscaler(FAST)
    now = feed(scaler, 0, 3, 50.0)
    assert scaler.decide(now, 1, minimum=0, maximum=3, concurrency=1).desired == 3


def test_scale_to_zero_only_after_idle_period() -> None:
    scaler = Autoscaler(FAST)
    now = feed(scaler, 0, 2, 1.0)
    now = feed(scaler, now, now + 3, 0.0)
    assert scaler.decide(now, 1, minimum=0, maximum=4, concurrency=1).desired == 1
    now = feed(scaler, now, now + 20, 0.0)
    assert scaler.decide(now, 1, minimum=0, maximum=4, concurrency=1).desired == 0
    # min 1 never goes to zero.
    assert scaler.decide(now, 1, minimum=1, maximum=4, concurrency=1).desired == 1


def test_from_zero_any_demand_wants_an_instance() -> None:
    scaler = Autoscaler(FAST)
    scaler.observe(0.0, 1.0)
    d = scaler.decide(0.0, 0, minimum=0, maximum=4, concurrency=8)
    assert d.desired == 1


def test_a_request_no_sample_saw_still_defers_scale_to_zero() -> None:
    scaler = Autoscaler(FAST)
    now = feed(scaler, 0, 20, 0.0)  # idle for long: zero is due
    assert scaler.decide(now, 1, minimum=0, maximum=4, concurrency=1).desired == 0
    scaler.active_at(now - 0.1)  # a quick request between two ticks
    assert scaler.decide(now, 1, minimum=0, maximum=4, concurrency=1).desired == 1
    scaler.active_at(now - 30)  # an older time never moves it back
    now = feed(scaler, now, now + 6, 0.0)
    assert scaler.decide(now, 1, minimum=0, maximum=4, concurrency=1).desired == 0


DEFAULTS = ScalerSettings()


def test_no_scale_down_under_steady_load_that_on_demand_starts_met() -> None:
    """An idle minute, then c=64 on concurrency 8, max 4: the requests themselves
    started 3 more instances. The stable average still lags; the autoscaler must
    not take instances away while the demand exceeds what they serve."""
    scaler = Autoscaler(DEFAULTS)
    now = feed(scaler, 0, 60, 0.0)
    scaler.burst(now)  # the controller started instances for queued demand
    for _ in range(16):  # 8 s of ticks at c=64
        now = feed(scaler, now, now + 0.5, 64.0)
        d = scaler.decide(now, 4, minimum=0, maximum=4, concurrency=8)
        assert d.desired == 4, d


def test_demand_now_is_a_floor_even_without_a_burst() -> None:
    scaler = Autoscaler(DEFAULTS)
    now = feed(scaler, 0, 60, 0.0)
    now = feed(scaler, now, now + 1, 40.0)
    d = scaler.decide(now, 4, minimum=0, maximum=4, concurrency=8)
    assert d.desired == 4, d  # 40 in flight or queued need 5 instances of 8; 4 is max


def test_after_a_burst_the_scale_down_waits_a_stable_window() -> None:
    scaler = Autoscaler(FAST)
    now = feed(scaler, 0, 10, 0.0)
    scaler.burst(now)
    now = feed(scaler, now, now + 2, 4.0)
    now = feed(scaler, now, now + 5, 0.0)
    assert scaler.decide(now, 4, minimum=0, maximum=4, concurrency=1).desired == 4
    now = feed(scaler, now, now + 10, 0.0)
    assert scaler.decide(now, 4, minimum=0, maximum=4, concurrency=1).desired < 4


def test_window_averages_match_a_pass_over_the_samples() -> None:
    """The running sums give what summing the window's samples gives, as samples
    come and go (irregular ticks, bursts, idle gaps, an average asked later than the
    last sample; time never goes back)."""
    rng = random.Random(7)
    window = Window(6.0)
    seen: list[tuple[float, float]] = []
    now = 0.0
    for _ in range(5000):
        now += rng.choice([0.1, 0.5, 1.0, 1.0, 3.0, 9.0])
        value = float(rng.choice([0, 0, 0, 1, 2, 8, 64]))
        window.add(now, value)
        seen.append((now, value))
        later = now + rng.choice([0.0, 0.0, 2.0, 7.0])
        inside = [v for t, v in seen if t >= later - 6.0]
        expected = sum(inside) / len(inside) if inside else 0.0
        assert window.average(later) == expected
        now = later
    assert window.average(now + 100) == 0.0 and window.total == 0.0
