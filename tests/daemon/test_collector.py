"""Log capture: call-id tags, timestamps, rate limiting, demultiplexing, streams that break."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from plat.daemon.collector import LogCollector, TokenBucket, line_time, split_call_id
from plat.daemon.drivers.base import OutputLine, RunningInstance
from plat.daemon.drivers.container.logstream import demultiplex, parse_timestamp, timestamped_lines
from plat.daemon.journal import Journal
from plat.daemon.store import Store


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[call:abc-123] hello", ("abc-123", None, "hello")),
        ("[call:a.b_c]no space", ("a.b_c", None, "no space")),
        ("plain line", (None, None, "plain line")),
        ("[call:bad id] x", (None, None, "[call:bad id] x")),
        (" [call:abc] indented", (None, None, " [call:abc] indented")),
        ("", (None, None, "")),
        (f"[call:c1 trace:{'ab' * 16}] traced", ("c1", "ab" * 16, "traced")),
        # Not a trace id: upper case, short, or long; the tag is then not recognised.
        (f"[call:c1 trace:{'AB' * 16}] x", (None, None, f"[call:c1 trace:{'AB' * 16}] x")),
        ("[call:c1 trace:abc] x", (None, None, "[call:c1 trace:abc] x")),
        (f"[call:c1 trace:{'a' * 33}] x", (None, None, f"[call:c1 trace:{'a' * 33}] x")),
    ],
)
def test_split_call_id(text: str, expected: tuple[str | None, str | None, str]) -> None:
    assert split_call_id(text) == expected


def test_line_time_prefers_arrival_for_whole_second_recent_stamps() -> None:
    assert line_time(1000.0, 1000.4) == 1000.4
    assert line_time(1000.25, 1000.4) == 1000.25  # precise stamps are kept
    assert line_time(1000.0, 1100.0) == 1000.0  # history read later keeps its stamp


BASE = datetime(2026, 11, 27, 8, 51, 27, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("stamp", "offset"),
    [
        ("2026-11-27T08:51:27Z", 0.0),
        ("2026-11-27T08:51:27.123456789Z", 0.123457),
        ("2026-11-27T08:51:27.5+00:00", 0.5),
        ("2026-11-27T09:51:27+01:00", 0.0),
    ],
)
def test_parse_timestamp(stamp: str, offset: float) -> None:
    assert parse_timestamp(stamp) == pytest.approx(BASE + offset, abs=1e-5)


def test_token_bucket_allows_bursts_then_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=20)
    now = bucket.stamp
    assert sum(bucket.take(now) for _ in range(50)) == 20
    assert sum(bucket.take(now + 1.0) for _ in range(50)) == 10


def _frame(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


async def test_frames_become_lines_across_partial_entries() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(_frame(1, b"2026-11-27T08:51:27Z one\n"))
    reader.feed_data(_frame(1, b"2026-11-27T08:51:27Z serving on :80"))
    reader.feed_data(_frame(2, b"2026-11-27T08:51:28Z err line\n"))
    reader.feed_data(_frame(1, b"2026-11-27T08:51:28Z 80\n"))
    reader.feed_data(_frame(1, b"2026-11-27T08:51:29Z a\nb\nc"))
    reader.feed_eof()
    lines = [
        (x.stream, x.text, x.ts - BASE)
        async for x in timestamped_lines(demultiplex(reader))  # type: ignore[arg-type]
    ]
    assert lines == [
        ("stdout", "one", 0.0),
        ("stderr", "err line", 1.0),
        ("stdout", "serving on :8080", 0.0),
        ("stdout", "a", 2.0),
        ("stdout", "b", 2.0),
        ("stdout", "c", 2.0),
    ]


class BrokenStreams:
    """The collector's seam to a backend: log streams that break while the instance
    runs (an engine restart), given as lists of (ts, text); then the instance ends."""

    def __init__(self, streams: list[list[tuple[float, str]]]) -> None:
        self.streams = streams
        self.since: list[float | None] = []

    async def output(
        self, instance: RunningInstance, since: float | None = None
    ) -> AsyncIterator[OutputLine]:
        self.since.append(since)
        for ts, text in self.streams.pop(0) if self.streams else []:
            yield OutputLine(ts, "stdout", text)

    async def is_alive(self, instance: RunningInstance) -> bool:
        return bool(self.streams)


async def test_a_stream_that_breaks_while_the_instance_runs_is_followed_again(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "plat.db")
    await store.open()
    try:
        journal = Journal(store, flush_interval=3600)
        await journal.start()
        # Engine stamps can be coarse: "two-b" shares its stamp with "two".
        backend = BrokenStreams([[(1.0, "one"), (2.0, "two")], [(2.0, "two-b"), (3.0, "three")]])
        collector = LogCollector(backend, journal)  # type: ignore[arg-type]
        running = RunningInstance("i1", "fn", "v1", "127.0.0.1", 1, "ref")
        collector.attach(running)
        await collector.detach("i1", timeout=5.0)  # returns once the instance has ended
        await journal.close()
        lines = [line.line for line in await store.query_logs("fn")]
        assert lines == ["one", "two", "two-b", "three"]
        assert backend.since == [None, 2.0]  # again from the last line seen
    finally:
        await store.close()
