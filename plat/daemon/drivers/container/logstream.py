"""The Engine API's log stream format: 8-byte frame headers, timestamped lines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime

import aiohttp

from plat.daemon.drivers.base import OutputLine

STREAMS = {1: "stdout", 2: "stderr"}


async def demultiplex(content: aiohttp.StreamReader) -> AsyncIterator[tuple[str, bytes]]:
    """Frames of the Docker API's multiplexed log stream: (stream name, payload)."""
    while True:
        try:
            header = await content.readexactly(8)
        except asyncio.IncompleteReadError:
            return
        size = int.from_bytes(header[4:8], "big")
        try:
            payload = await content.readexactly(size)
        except asyncio.IncompleteReadError as exc:
            payload = exc.partial
        yield STREAMS.get(header[0], "stdout"), payload


async def timestamped_lines(
    frames: AsyncIterator[tuple[str, bytes]],
) -> AsyncIterator[OutputLine]:
    """Lines from frames that each start with a timestamp; a line may span frames
    (engines log a partial line as its own entry, timestamp included)."""
    partial: dict[str, tuple[float, str]] = {}
    async for stream, payload in frames:
        stamp, _, text = payload.decode(errors="replace").partition(" ")
        first_ts, head = partial.pop(stream, (parse_timestamp(stamp), ""))
        pieces = (head + text).split("\n")
        for line in pieces[:-1]:
            yield OutputLine(first_ts, stream, line)
        if pieces[-1]:
            partial[stream] = (first_ts if len(pieces) == 1 else parse_timestamp(stamp), pieces[-1])
    for stream, (ts, rest) in partial.items():
        yield OutputLine(ts, stream, rest)


def parse_timestamp(value: str) -> float:
    """Seconds since the epoch from an RFC 3339 time with up to nanoseconds."""
    try:
        if "." in value:
            head, _, frac = value.partition(".")
            digits = "".join(ch for ch in frac if ch.isdigit())
            zone = frac[len(digits) :]
            value = f"{head}.{digits[:6]:0<6}{zone}"
        if value.endswith("Z"):
            value = value[:-1] + "+00:00"
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return time.time()
