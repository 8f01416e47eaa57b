"""The audit table: hash-chained records of control actions (plat.daemon.audit).

Rows come back as plain mappings of their columns (``params`` as stored JSON
text): checking them is the audit package's business, and a row someone edited
by hand must still be readable to be reported. Rows are stored in the order
they were written: ``id`` is the row's place, ``seq`` the record's own number
(hashed with it), equal while nobody moves rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, NamedTuple

from plat.daemon.store.database import Database

COLUMNS = (
    "seq",
    "time",
    "actor",
    "origin",
    "action",
    "target",
    "tenant",
    "params",
    "outcome",
    "prev",
    "hash",
)
_SELECT = "SELECT id, " + ", ".join(COLUMNS) + " FROM audit"
Row = dict[str, Any]


class Trimmed(NamedTuple):
    """What a trim removed: how many rows, and the last of them (its seq and hash)."""

    rows: int
    seq: int
    hash: str


class AuditFilter(NamedTuple):
    tenant: str | None = None  # None: every tenant's
    since: str | None = None  # a record time (ISO, UTC): those at or after it
    actor: str | None = None
    action: str | None = None  # exact, or a prefix ending in '*' (function.*)
    after: int = 0  # rows after this id (paging an export)


def _where(f: AuditFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = ["id > ?"]
    args: list[Any] = [f.after]
    if f.tenant is not None:
        clauses.append("tenant = ?")
        args.append(f.tenant)
    if f.since:
        clauses.append("time >= ?")
        args.append(f.since)
    if f.actor:
        clauses.append("actor = ?")
        args.append(f.actor)
    if f.action:
        if f.action.endswith("*"):
            prefix = f.action[:-1]
            clauses.append("substr(action, 1, ?) = ?")
            args += [len(prefix), prefix]
        else:
            clauses.append("action = ?")
            args.append(f.action)
    return " WHERE " + " AND ".join(clauses), args


class AuditRows(Database):
    """Rows of ``audit``. Nothing here commits but :meth:`commit`: the audit log's
    writer makes each batch (and a trim with its checkpoint) one transaction."""

    async def audit_head(self) -> tuple[int, str] | None:
        """The seq and hash of the last row stored; None for an empty table."""
        async with self.db.execute("SELECT seq, hash FROM audit ORDER BY id DESC LIMIT 1") as cur:
            row = await cur.fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    async def insert_audit(self, rows: Sequence[Sequence[Any]]) -> None:
        """Append rows, each the values of COLUMNS in order (params as JSON text)."""
        marks = ", ".join("?" * len(COLUMNS))
        await self.db.executemany(
            f"INSERT INTO audit({', '.join(COLUMNS)}) VALUES ({marks})",
            rows,
        )

    async def query_audit(self, where: AuditFilter, limit: int, newest: bool = True) -> list[Row]:
        """Up to ``limit`` rows that match, oldest first: the newest of them, or
        (``newest=False``) the first after ``where.after``."""
        sql, args = _where(where)
        order = "DESC" if newest else "ASC"
        async with self.db.execute(
            f"{_SELECT}{sql} ORDER BY id {order} LIMIT ?",
            [*args, limit],
        ) as cur:
            rows = [dict(row) for row in await cur.fetchall()]
        return rows[::-1] if newest else rows

    async def trim_audit(self, keep: int, before: str, uncounted: str) -> Trimmed | None:
        """Delete the oldest rows: all but the newest ``keep`` (rows of the action
        ``uncounted`` aside: the checkpoint a trim adds must not make the next trim
        delete one more row), and those older than ``before`` (a record time); what
        went, None when nothing did. Not committed."""
        async with self.db.execute(
            "SELECT id FROM audit WHERE action != ? ORDER BY id DESC LIMIT 1 OFFSET ?",
            (uncounted, keep),
        ) as cur:
            by_count = await cur.fetchone()
        async with self.db.execute("SELECT MAX(id) FROM audit WHERE time < ?", (before,)) as cur:
            by_age = await cur.fetchone()
        cutoff = max(by_count[0] if by_count else 0, (by_age[0] if by_age else None) or 0)
        if cutoff <= 0:
            return None
        async with self.db.execute(
            "SELECT COUNT(*), (SELECT seq FROM audit WHERE id = ?), "
            "(SELECT hash FROM audit WHERE id = ?) FROM audit WHERE id <= ?",
            (cutoff, cutoff, cutoff),
        ) as cur:
            count, seq, digest = await cur.fetchone()  # type: ignore[misc]
        await self.db.execute("DELETE FROM audit WHERE id <= ?", (cutoff,))
        return Trimmed(int(count), int(seq), str(digest))


def read_chain(path: Path) -> tuple[set[int], Iterator[Row]]:
    """Every seq stored, and the rows in stored order, read in one snapshot through a
    read-only connection of their own (blocking: run it in a thread)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("BEGIN")  # one snapshot for both reads
        seqs = {row[0] for row in conn.execute("SELECT seq FROM audit")}
    except BaseException:
        conn.close()
        raise

    def rows() -> Iterator[Row]:
        with closing(conn):
            cur = conn.execute(f"{_SELECT} ORDER BY id")
            while batch := cur.fetchmany(1000):
                yield from (dict(row) for row in batch)

    return seqs, rows()
