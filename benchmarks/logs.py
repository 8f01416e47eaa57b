"""The cost of capturing function logs, and how big the store gets.

1. Gateway latency and throughput for a chatty function (it prints two lines per
   call) with log capture on versus off (``PLAT_LOG_CAPTURE``), wrk at 16
   connections against the same function on two daemons started one after the
   other. The baseline is capture off.
2. The database after 100,000 log lines of one function with the default
   retention (10,000 lines per function), written through the daemon's own
   journal and store (the code the daemon runs) in batches of 5,000, then
   trimmed as the trimmer would. The baseline is the same 100,000 lines with
   nothing trimmed.
   SQLite reuses freed pages rather than shrinking the file.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from benchmarks.context import Context
from benchmarks.daemon import Plat
from benchmarks.functions import write_python_function
from benchmarks.report import Figure, Section, Table, fmt
from benchmarks.wrk import wrk
from plat.daemon.journal import Journal, Retention
from plat.daemon.store import Store

NAME = "logs"
TITLE = "Log capture: cost and store size"

CHATTY = """
import sys

def handle(event, context):
    print("handling", event.path, "for", context.call_id)
    sys.stderr.write("a second line on stderr\\n")
    return "ok"
"""


def _gateway(ctx: Context, capture: bool, seconds: int) -> tuple[float, float]:
    label = "capture-on" if capture else "capture-off"
    plat = Plat(ctx.work, label, ctx.log)
    plat.env["PLAT_LOG_CAPTURE"] = "true" if capture else "false"
    with plat:
        name = f"chatty-{ctx.run_id}"
        folder = write_python_function(ctx.work / label, name, CHATTY)
        plat.deploy(folder, name)
        url = plat.function_url(name)
        headers = {"Authorization": plat.auth_header()}
        wrk(url, connections=4, seconds=1, headers=headers)  # warm-up
        result = wrk(url, connections=16, seconds=seconds, headers=headers)
        ctx.log(f"{label}: p50 {result.p50:.2f} ms, {result.rps:.0f} req/s")
        return result.p50, result.rps


async def _store_size(path: Path, lines: int, retention: Retention) -> tuple[float, float, int]:
    store = Store(path)
    await store.open()
    journal = Journal(store, retention, flush_interval=3600)
    await journal.start()
    before = path.stat().st_size
    text = "x" * 80
    for i in range(lines):
        journal.log("chatty", "v1", "inst0001", "stdout", f"{i} {text}", call_id="c" * 32)
        if i % 5_000 == 4_999:
            await journal.flush()
    await journal.close()
    await journal.trim()
    kept = len(await store.query_logs("chatty"))
    # The WAL folded into the main file; SQLite keeps freed pages for reuse, so the
    # file stays at its high-water mark (what a user's disk sees).
    await (await store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")).close()
    await store.close()
    return before / 1024**2, path.stat().st_size / 1024**2, kept


def run(ctx: Context) -> Section:
    seconds = ctx.pick(1, 5)
    off_p50, off_rps = _gateway(ctx, False, seconds)
    on_p50, on_rps = _gateway(ctx, True, seconds)
    started = time.perf_counter()
    _empty, full_mib, kept = asyncio.run(_store_size(ctx.work / "size.db", 100_000, Retention()))
    unbounded = Retention(log_lines=10**9)
    _empty, all_mib, _all = asyncio.run(_store_size(ctx.work / "all.db", 100_000, unbounded))
    ctx.log(f"store: {full_mib:.2f} MiB after 100k lines ({time.perf_counter() - started:.1f} s)")
    section = Section(NAME, TITLE, method=__doc__ or "")
    section.tables.append(
        Table(
            "chatty function through the gateway (wrk -c16)",
            ["log capture", "p50", "requests/s"],
            [
                ["off", fmt(off_p50 / 1000, "s"), f"{off_rps:.0f}"],
                ["on", fmt(on_p50 / 1000, "s"), f"{on_rps:.0f}"],
            ],
        )
    )
    section.figures += [
        Figure("p50 latency, capture on", on_p50 / 1000, "s", "capture off", off_p50 / 1000),
        Figure("throughput, capture on", on_rps, "req/s", "capture off", off_rps, "higher"),
        Figure(
            "store after 100k lines (default retention)",
            full_mib,
            "MiB",
            "the same lines, nothing trimmed",
            all_mib,
            note=f"{kept} lines kept; SQLite keeps the file at its high-water mark and reuses it",
        ),
    ]
    return section
