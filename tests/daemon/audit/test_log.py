"""The audit log's queue and writer on a real database: order under concurrency,
hostile inputs, a store that refuses writes, a full queue, a flood of failed
authentications, cancelled callers, and its lifecycle."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from plat.daemon.audit import AuditLog
from plat.daemon.audit.limit import FailureLimit
from plat.daemon.store.audit import AuditFilter
from tests.daemon.audit.logs import act, make_log

pytestmark = pytest.mark.timeout(30)


async def records(log: AuditLog, **kw: str) -> list[dict[str, object]]:
    return await log.query(AuditFilter(**kw), 10_000)  # type: ignore[arg-type]


async def test_records_from_many_tasks_form_one_gapless_chain(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    await log.start()

    async def worker(n: int) -> None:
        for i in range(50):
            log.record(
                action="function.scale",
                target=f"f{n}",
                outcome="ok",
                actor="admin",
                origin="uid:0",
                params={"i": i},
            )
            if i % 7 == 0:
                await asyncio.sleep(0)

    await asyncio.gather(*(worker(n) for n in range(20)), log.flush(), log.flush())
    rows = await records(log)
    assert [r["seq"] for r in rows] == list(range(1, 1001))
    assert (await log.verify()).ok
    # The order each task recorded in is kept.
    of_f3 = [r["params"]["i"] for r in rows if r["target"] == "f3"]  # type: ignore[index]
    assert of_f3 == list(range(50))
    await log.close()


async def test_record_never_raises_and_keeps_hostile_values_bounded(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    await log.start()

    class Exploding:
        def __str__(self) -> str:
            raise RuntimeError("no")

    log.record(
        action="x" * 100_000,
        target="\x1b]0;pwned\x07" + "t" * 5000,
        outcome="ok",
        actor="admin",
        origin="uid:0",
        params={"a": float("nan"), "b": [1.0] * 10**5},
    )
    log.record(action="boom", target=Exploding(), outcome="ok", actor="a", origin="o")  # type: ignore[arg-type]
    log.record(action="ok", target="t", outcome="ok", actor="a", origin="o", params={"n": 1})
    rows = await records(log)
    assert [len(r["action"]) for r in rows] == [256, 2]  # type: ignore[arg-type]
    assert "\x1b" not in rows[0]["target"] and "\x07" not in rows[0]["target"]  # type: ignore[operator]
    assert rows[0]["params"] == {"a": "nan", "b": ["1.0"] * 32}
    assert (await log.verify()).ok
    await log.close()


async def test_a_store_that_refuses_writes_keeps_records_queued_until_it_works(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = make_log(tmp_path)
    await log.start()
    act(log, 2)
    await log.flush()
    await log._rows.db.execute("PRAGMA query_only=ON")  # the writer's writes now fail
    act(log, 3)
    with caplog.at_level(logging.WARNING):
        assert not await log.flush()
        assert not await log.flush()
    assert sum("writing the audit log failed" in r.message for r in caplog.records) == 1
    assert log.head.seq == 2
    await log._rows.db.execute("PRAGMA query_only=OFF")
    assert await log.flush()
    rows = await records(log)
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5]
    assert (await log.verify()).ok
    await log.close()


async def test_a_full_queue_drops_the_newest_and_says_so(tmp_path: Path) -> None:
    log = make_log(tmp_path, max_pending=5)  # not started: nothing is written meanwhile
    act(log, 8)
    await log.start()
    await log.flush()
    rows = await records(log)
    assert [r["action"] for r in rows] == ["function.deploy"] * 5 + ["audit.dropped"]
    assert rows[-1]["params"] == {"dropped": 3, "max_pending": 5}
    await log.close()


async def test_a_flood_of_failed_authentications_yields_bounded_records(tmp_path: Path) -> None:
    log = make_log(tmp_path, limit=FailureLimit(per_origin=10, window=60))
    await log.start()
    for i in range(20_000):
        log.auth_failed(origin="127.0.0.1", target="/api/v1/functions", params={"n": i})
    for _ in range(100):
        log.call_refused("10.1.1.1", "hello.acme")
    await log.close()
    log = make_log(tmp_path)
    await log.start()
    rows = await records(log)
    assert len(rows) == 10 + 1 + 10 + 1  # each origin: its share, then one summary
    summaries = [r for r in rows if r["outcome"] == "suppressed"]
    assert {(r["origin"], r["params"]["suppressed"]) for r in summaries} == {  # type: ignore[index]
        ("127.0.0.1", 19_990),
        ("10.1.1.1", 90),
    }
    refused = [r for r in rows if r["origin"] == "10.1.1.1" and r["outcome"] == "unauthorized"]
    assert {(r["target"], r["tenant"], r["actor"]) for r in refused} == {
        ("hello", "acme", "anonymous")
    }
    assert (await log.verify()).ok
    await log.close()


async def test_a_cancelled_flush_still_writes(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    await log.start()
    act(log, 50)
    waiter = asyncio.ensure_future(log.flush())
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    await log.flush()
    assert len(await records(log)) == 50
    assert (await log.verify()).ok
    await log.close()


async def test_close_is_idempotent_and_later_records_are_refused_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = make_log(tmp_path)
    await log.start()
    await log.start()
    act(log, 2)
    await log.close()
    await log.close()
    with caplog.at_level(logging.WARNING):
        act(log, 1)
    assert "the audit log is closed" in caplog.text
    with closing(sqlite3.connect(tmp_path / "plat.db")) as db:
        assert db.execute("SELECT COUNT(*) FROM audit").fetchone() == (2,)
    head = json.loads((tmp_path / "audit.head").read_text())
    assert head["seq"] == 2 and len(head["hash"]) == 64
    assert oct((tmp_path / "audit.head").stat().st_mode & 0o777) == "0o600"


async def test_filters(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    await log.start()
    act(log, 3, tenant="acme", actor="tenant:acme")
    act(log, 2, action="secret.set")
    assert len(await records(log, tenant="acme")) == 3
    assert len(await records(log, actor="tenant:acme")) == 3
    assert len(await records(log, action="secret.set")) == 2
    assert len(await records(log, action="secret.*")) == 2
    assert len(await records(log, action="%")) == 0
    assert len(await records(log, since="2999-01-01")) == 0
    newest = await log.query(AuditFilter(), 2)
    assert [r["seq"] for r in newest] == [4, 5]
    exported = [r async for r in log.export(AuditFilter(tenant="acme"))]
    assert [r["seq"] for r in exported] == [1, 2, 3]
    await log.close()
