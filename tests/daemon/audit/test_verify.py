"""Verify on a real chain that someone edited with SQL: each kind of tampering is
named with the first bad record's seq; an untouched chain verifies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from plat.daemon.audit import AuditLog, AuditRetention
from plat.daemon.audit.chain import GENESIS, Entry, link
from plat.daemon.audit.verify import Head, verify
from plat.daemon.store.audit import AuditFilter
from tests.daemon.audit.logs import act, entry_of, make_log, tamper

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def audit(tmp_path: Path) -> AsyncIterator[AuditLog]:
    log = make_log(tmp_path)
    await log.start()
    act(log, 10)
    await log.flush()
    yield log
    await log.close()


async def test_an_untouched_chain_verifies(audit: AuditLog) -> None:
    verdict = await audit.verify()
    assert verdict.ok, verdict.problems
    assert (verdict.records, verdict.first, verdict.last) == (10, 1, 10)
    assert verdict.head == audit.head.hash


async def test_a_changed_field_names_its_record(audit: AuditLog, tmp_path: Path) -> None:
    tamper(tmp_path, "UPDATE audit SET outcome = 'ok' , actor = 'tenant:x' WHERE seq = 4")
    verdict = await audit.verify()
    assert [(p.seq, p.kind) for p in verdict.problems] == [(4, "changed")]
    assert "record 4 was changed" in verdict.problems[0].message


async def test_a_change_with_its_hash_recomputed_breaks_the_next_link(
    audit: AuditLog, tmp_path: Path
) -> None:
    fields, prev = entry_of(tmp_path, 4)
    forged = link(Entry(**{**fields, "outcome": "forbidden"}), 4, prev)
    tamper(
        tmp_path, f"UPDATE audit SET outcome = 'forbidden', hash = '{forged.hash}' WHERE seq = 4"
    )
    verdict = await audit.verify()
    assert verdict.problems[0].seq == 4 and verdict.problems[0].kind == "changed"
    assert "record 5 holds another hash for it" in verdict.problems[0].message


async def test_unreadable_columns_are_a_change(audit: AuditLog, tmp_path: Path) -> None:
    tamper(tmp_path, "UPDATE audit SET params = 'not json' WHERE seq = 2",
           "UPDATE audit SET seq = 'three' WHERE id = 3")  # fmt: skip
    problems = (await audit.verify()).problems
    assert (problems[0].seq, problems[0].kind) == (-1, "changed")
    assert (2, "changed") in [(p.seq, p.kind) for p in problems]


async def test_a_deleted_record_is_missing(audit: AuditLog, tmp_path: Path) -> None:
    tamper(tmp_path, "DELETE FROM audit WHERE seq IN (6, 7)")
    verdict = await audit.verify()
    assert [(p.seq, p.kind) for p in verdict.problems] == [(6, "missing")]
    assert "records 6 to 7 are missing" in verdict.problems[0].message


async def test_swapped_records_are_reordered(audit: AuditLog, tmp_path: Path) -> None:
    tamper(
        tmp_path,
        "UPDATE audit SET id = -1 WHERE id = 3",
        "UPDATE audit SET id = 3 WHERE id = 4",
        "UPDATE audit SET id = 4 WHERE id = -1",
    )
    verdict = await audit.verify()
    assert verdict.problems[0].seq == 3 and verdict.problems[0].kind == "reordered"
    assert {p.kind for p in verdict.problems} == {"reordered"}


async def test_records_deleted_from_either_end(audit: AuditLog, tmp_path: Path) -> None:
    tamper(tmp_path, "DELETE FROM audit WHERE seq >= 9")
    verdict = await audit.verify()
    assert [(p.seq, p.kind) for p in verdict.problems] == [(9, "missing")]
    assert "missing from the end" in verdict.problems[0].message
    tamper(tmp_path, "DELETE FROM audit WHERE seq <= 2")
    verdict = await audit.verify()
    assert verdict.problems[0].seq == 1 and verdict.problems[0].kind == "missing"
    assert "no checkpoint says they were trimmed" in verdict.problems[0].message


async def test_a_rewritten_last_record_differs_from_the_head(
    audit: AuditLog, tmp_path: Path
) -> None:
    fields, prev = entry_of(tmp_path, 10)
    forged = link(Entry(**{**fields, "actor": "tenant:x"}), 10, prev)
    tamper(tmp_path, f"UPDATE audit SET actor = 'tenant:x', hash = '{forged.hash}' WHERE seq = 10")
    verdict = await audit.verify()
    assert [(p.seq, p.kind) for p in verdict.problems] == [(10, "changed")]


async def test_after_a_restart_the_chain_goes_on_past_a_deleted_end(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    await log.start()
    act(log, 5)
    await log.close()
    tamper(tmp_path, "DELETE FROM audit WHERE seq >= 4")
    again = make_log(tmp_path)
    await again.start()
    act(again, 1)
    await again.flush()
    verdict = await again.verify()
    assert again.head.seq == 6  # never 4 again
    assert [(p.seq, p.kind) for p in verdict.problems] == [(4, "missing")]
    await again.close()


async def test_retention_trims_with_a_checkpoint_that_verifies(tmp_path: Path) -> None:
    log = make_log(tmp_path, retention=AuditRetention(records=5))
    await log.start()
    act(log, 12)
    await log.flush()
    assert await log.trim() == 7
    records = await log.query(AuditFilter(), 100)
    assert [r["seq"] for r in records] == [8, 9, 10, 11, 12, 13]
    checkpoint = records[-1]
    assert checkpoint["action"] == "audit.checkpoint"
    assert checkpoint["params"]["seq"] == 7 and checkpoint["params"]["trimmed"] == 7
    assert (await log.verify()).ok
    assert await log.trim() == 0  # its checkpoint does not count: no churn
    act(log, 3)
    await log.flush()
    assert await log.trim() == 3  # five kept besides the checkpoint; a new one names 10
    verdict = await log.verify()
    assert verdict.ok, verdict.problems
    assert verdict.first == 11
    assert [r["seq"] for r in await log.query(AuditFilter(), 100)] == list(range(11, 18))
    # Deleting more from the start than the checkpoint says is seen.
    tamper(tmp_path, "DELETE FROM audit WHERE seq = 11")
    verdict = await log.verify()
    assert [(p.seq, p.kind) for p in verdict.problems] == [(11, "missing")]
    await log.close()


async def test_retention_by_age(tmp_path: Path) -> None:
    log = make_log(tmp_path, retention=AuditRetention(age=3600))
    await log.start()
    act(log, 4)
    await log.flush()
    tamper(tmp_path, "UPDATE audit SET time = '2000-01-01T00:00:00.000000Z' WHERE seq <= 2")
    assert await log.trim() == 2
    assert await log.trim() == 0
    verdict = await log.verify()
    assert [(p.seq, p.kind) for p in verdict.problems] == []  # the changed rows are gone
    await log.close()


def test_verify_on_rows_alone() -> None:
    first = link(Entry("t", "a", "o", "x", "y", "default", {}, "ok"), 1, GENESIS)
    row = {**first.to_json(), "params": "{}"}
    assert verify([row], {1}, Head(1, first.hash)).ok
    assert not verify([], set(), Head(1, first.hash)).ok
    assert verify([], set()).ok
