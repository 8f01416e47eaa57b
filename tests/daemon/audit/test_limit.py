"""Failed authentications per origin: a share of records each window, the rest summed."""

from __future__ import annotations

import pytest

from plat.daemon.audit.limit import OTHERS, FailureLimit, host_of


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        ("127.0.0.1:5000", "127.0.0.1"),
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]:80", "::1"),
        ("::1", "::1"),
        ("localhost:8080", "localhost"),
        ("", ""),
    ],
)
def test_the_host_of_an_origin(origin: str, host: str) -> None:
    assert host_of(origin) == host


def test_an_origin_gets_its_share_then_one_summary_when_its_window_ends() -> None:
    limit = FailureLimit(per_origin=3, window=60)
    admitted = [limit.admit(f"10.0.0.1:{port}", 100.0) for port in range(1000, 1100)]
    assert admitted.count(True) == 3 and admitted[:3] == [True] * 3
    assert limit.admit("10.0.0.2:1", 100.0)  # another origin has its own share
    assert limit.expired(159.0) == []  # not over yet
    (gone,) = limit.expired(160.0)
    assert (gone.host, gone.count, gone.start) == ("10.0.0.1", 97, 100.0)
    assert limit.admit("10.0.0.1:1", 161.0)  # a new window


def test_many_origins_share_one_bucket_past_the_cap() -> None:
    limit = FailureLimit(per_origin=2, window=60, max_origins=4)
    admitted = sum(limit.admit(f"10.0.0.{i % 200}:{i}", 0.0) for i in range(10_000))
    assert admitted == 4 * 2 + 2  # four followed hosts and the shared bucket
    summaries = limit.expired(0.0, every=True)
    assert len(summaries) == 5
    assert {s.host for s in summaries} >= {OTHERS}
    assert sum(s.count for s in summaries) == 10_000 - admitted
    assert limit.expired(0.0, every=True) == []
