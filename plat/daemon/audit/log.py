"""The audit log: records queued by whoever acts, chained and written by one writer.

``record`` only appends to a bounded queue (it never waits and never raises: the
gateway's failure branch and the hooks service call it). One writer task takes
the queue in order, gives each record its seq and its link to the one before
(plat.daemon.audit.chain) and writes the batch as one transaction.

The writer has a connection of its own to the database: the store's connection is
shared by the journal and the queued calls, whose rollbacks (after a failed
write) would take an audit batch in the same transaction with them and leave a
hole in the chain; and this one commits with ``synchronous=FULL``, so a record
that was written survives a power cut, not only a crash. After each commit the
head (last seq and hash) is also written to ``audit.head`` beside the database:
records deleted from the end of the table are then missed by ``verify``, even
after a restart (the writer goes on from the head it knows, never reusing a seq).

Failed authentications go through :class:`~plat.daemon.audit.limit.FailureLimit`
before they are queued; retention trims the oldest records and appends a
checkpoint naming the last one trimmed, from which ``verify`` still holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plat.daemon.audit.chain import (
    CHECKPOINT,
    GENESIS,
    Entry,
    Record,
    clean_params,
    link,
    text,
    timestamp,
)
from plat.daemon.audit.limit import FailureLimit
from plat.daemon.audit.verify import Head, Verdict, record_of, verify
from plat.daemon.store.audit import AuditFilter, AuditRows, read_chain
from plat.tenancy import DEFAULT_TENANT, split_key

log = logging.getLogger(__name__)

DAEMON = "daemon"  # the actor and origin of the records the daemon makes itself
SWEEP = 5.0  # how often the writer looks for failure windows that ended
PAGE = 1000


@dataclass(frozen=True)
class AuditRetention:
    records: int = 1_000_000
    age: float = 365 * 86400.0


def _values(rec: Record) -> tuple[Any, ...]:
    params = json.dumps(rec.params, sort_keys=True, separators=(",", ":"))
    return (
        rec.seq,
        rec.time,
        rec.actor,
        rec.origin,
        rec.action,
        rec.target,
        rec.tenant,
        params,
        rec.outcome,
        rec.prev,
        rec.hash,
    )


class AuditLog:
    """``start`` and ``close`` are idempotent; after ``close`` records are refused
    (with a warning in the daemon's log)."""

    def __init__(
        self,
        database: Path,
        *,
        head_file: Path | None = None,
        retention: AuditRetention | None = None,
        trim_interval: float = 60.0,
        limit: FailureLimit | None = None,
        max_pending: int = 10_000,
        max_backoff: float = 5.0,
    ) -> None:
        self.path = database
        self.head_file = head_file
        self.retention = retention or AuditRetention()
        self.trim_interval = trim_interval
        self.limit = limit or FailureLimit()
        self.max_pending = max_pending
        self.max_backoff = max_backoff
        self._rows = AuditRows(database)
        self._pending: deque[Entry] = deque()
        self._dropped = 0  # records refused since the last write: the queue was full
        self._head = Head(0, GENESIS)
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._closed = False
        self._failing = False

    # intake: synchronous, never blocks, never raises

    def record(
        self,
        *,
        action: str,
        target: str,
        outcome: str,
        actor: str,
        origin: str,
        tenant: str = DEFAULT_TENANT,
        params: Mapping[str, object] | None = None,
    ) -> None:
        """Queue one record (non-blocking; never raises into the caller)."""
        try:
            entry = Entry(
                timestamp(),
                text(actor),
                text(origin),
                text(action),
                text(target),
                text(tenant),
                clean_params(params),
                text(outcome),
            )
            self._queue(entry)
        except Exception:
            log.exception("could not queue the audit record of %r", action)

    def auth_failed(
        self,
        *,
        origin: str,
        target: str,
        tenant: str = DEFAULT_TENANT,
        params: Mapping[str, object] | None = None,
    ) -> None:
        """A refused credential: recorded unless its origin has had its share of
        records this window (then counted, and summed up once the window ends)."""
        try:
            if self.limit.admit(origin, time.time()):
                self.record(
                    action="auth.failed",
                    target=target,
                    outcome="unauthorized",
                    actor="anonymous",
                    origin=origin,
                    tenant=tenant,
                    params=params,
                )
        except Exception:
            log.exception("could not count a failed authentication")

    def call_refused(self, origin: str, key: str) -> None:
        """A call of function ``key`` through the gateway whose credentials were
        refused (the gateway's ``on_auth_failure``)."""
        name, tenant = split_key(key)
        self.auth_failed(origin=origin, target=name, tenant=tenant, params={"door": "function"})

    def _queue(self, entry: Entry) -> None:
        if self._closed:
            log.warning("the audit log is closed: %s by %s not recorded", entry.action, entry.actor)
            return
        if len(self._pending) >= self.max_pending:
            self._dropped += 1
            return
        self._pending.append(entry)
        self._wake.set()

    def _summarize(self, now: float, every: bool = False) -> None:
        for gone in self.limit.expired(now, every):
            params = {
                "suppressed": gone.count,
                "since": timestamp(gone.start),
                "window_seconds": int(self.limit.window),
            }
            self._queue(
                Entry(
                    timestamp(now),
                    "anonymous",
                    text(gone.host),
                    "auth.failed",
                    "*",
                    DEFAULT_TENANT,
                    params,
                    "suppressed",
                )
            )

    # lifecycle

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        await self._rows.open()
        await self._rows.db.execute("PRAGMA synchronous=FULL")
        stored = await self._rows.audit_head()
        head = Head(*stored) if stored else Head(0, GENESIS)
        kept = self._read_head_file()
        if kept is not None and kept.seq > head.seq:
            log.warning(
                "the audit log's records %d to %d are missing from the store (%s): the chain "
                "goes on after them; `plat audit verify` reports the gap",
                head.seq + 1,
                kept.seq,
                self.path,
            )
            head = kept
        self._head = head
        self._tasks = [
            asyncio.create_task(self._writer(), name="audit-writer"),
            asyncio.create_task(self._trimmer(), name="audit-trimmer"),
        ]

    async def close(self) -> None:
        if self._closed or not self._started:
            self._closed = True
            return
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._summarize(time.time(), every=True)
        self._closed = True
        if not await self.flush():
            log.warning("%d audit records could not be written", len(self._pending))
        await self._rows.close()

    # writing

    async def flush(self) -> bool:
        """Write what is queued; False when the store refused it (it stays queued).
        The write runs to its end even if the caller is cancelled meanwhile."""
        return await asyncio.shield(self._flush())

    async def _flush(self) -> bool:
        async with self._lock:
            if self._dropped:
                note = {"dropped": self._dropped, "max_pending": self.max_pending}
                self._pending.append(
                    Entry(
                        timestamp(),
                        DAEMON,
                        DAEMON,
                        "audit.dropped",
                        "audit",
                        DEFAULT_TENANT,
                        note,
                        "error",
                    )
                )
                self._dropped = 0
            if not self._pending:
                return not self._failing
            entries = list(self._pending)
            self._pending.clear()
            records = []
            seq, prev = self._head
            for entry in entries:
                seq += 1
                records.append(link(entry, seq, prev))
                prev = records[-1].hash
            if not await self._commit(records):
                self._pending.extendleft(reversed(entries))
                while len(self._pending) > self.max_pending:
                    self._pending.pop()
                    self._dropped += 1
                return False
            return True

    async def _commit(self, records: list[Record]) -> bool:
        """Append ``records`` as one transaction; the head moves on only if it commits."""
        try:
            await self._rows.insert_audit([_values(r) for r in records])
            await self._rows.commit()
        except (sqlite3.Error, OSError) as exc:
            with contextlib.suppress(sqlite3.Error, OSError):
                await self._rows.db.rollback()
            if not self._failing:
                self._failing = True
                log.warning("writing the audit log failed (%s); records stay queued", exc)
            return False
        if self._failing:
            self._failing = False
            log.warning("writing the audit log works again")
        self._head = Head(records[-1].seq, records[-1].hash)
        self._write_head_file()
        return True

    async def _writer(self) -> None:
        delay = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), SWEEP)
            self._wake.clear()
            self._summarize(time.time())
            if await self.flush():
                delay = 0.0
            else:  # a full disk stays full a while
                delay = min(max(delay * 2, 0.25), self.max_backoff)
                await asyncio.sleep(delay)

    # retention

    async def trim(self) -> int:
        """Delete the records retention no longer keeps and append a checkpoint naming
        the last of them; how many went."""
        return await asyncio.shield(self._trim())

    async def _trim(self) -> int:
        async with self._lock:
            before = timestamp(time.time() - self.retention.age)
            try:
                trimmed = await self._rows.trim_audit(self.retention.records, before, CHECKPOINT)
            except (sqlite3.Error, OSError) as exc:
                log.warning("trimming the audit log failed: %s", exc)
                await self._rows.db.rollback()
                return 0
            if trimmed is None:
                return 0
            params = {"seq": trimmed.seq, "hash": trimmed.hash, "trimmed": trimmed.rows}
            entry = Entry(
                timestamp(), DAEMON, DAEMON, CHECKPOINT, "audit", DEFAULT_TENANT, params, "ok"
            )
            seq, prev = self._head
            # The delete and its checkpoint commit together, or neither does.
            if not await self._commit([link(entry, seq + 1, prev)]):
                return 0
            return trimmed.rows

    async def _trimmer(self) -> None:
        while True:
            await asyncio.sleep(self.trim_interval)
            try:
                await self.trim()
            except Exception:
                log.exception("trimming the audit log failed")

    # reading

    async def query(self, where: AuditFilter, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` records that match, oldest first (what was queued
        before the call included)."""
        await self.flush()
        rows = await self._rows.query_audit(where, limit)
        return [record_of(row)[0].to_json() for row in rows]

    async def export(self, where: AuditFilter) -> AsyncIterator[dict[str, Any]]:
        """Every record that matches, oldest first, a page at a time."""
        await self.flush()
        after = where.after
        while rows := await self._rows.query_audit(where._replace(after=after), PAGE, False):
            for row in rows:
                yield record_of(row)[0].to_json()
            after = rows[-1]["id"]

    async def verify(self) -> Verdict:
        """Check the whole chain against the head the writer knows (in a thread: a
        long chain takes seconds to hash)."""
        await self.flush()
        async with self._lock:  # no write or trim between the head and the snapshot
            head = self._head
            return await asyncio.to_thread(self._verify, head)

    def _verify(self, head: Head) -> Verdict:
        seqs, rows = read_chain(self.path)
        return verify(rows, seqs, head)

    @property
    def head(self) -> Head:
        return self._head

    # the head, kept beside the database

    def _read_head_file(self) -> Head | None:
        if self.head_file is None:
            return None
        try:
            data = json.loads(self.head_file.read_text())
            return Head(int(data["seq"]), str(data["hash"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring %s: %s", self.head_file, exc)
            return None

    def _write_head_file(self) -> None:
        if self.head_file is None:
            return
        tmp = self.head_file.with_name(self.head_file.name + ".tmp")
        try:
            tmp.write_text(json.dumps({"seq": self._head.seq, "hash": self._head.hash}) + "\n")
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.head_file)
        except OSError as exc:
            log.warning("could not write %s: %s", self.head_file, exc)
