"""Checking a chain of audit records: what was changed, what is missing, what moved.

The records are read in the order they were stored (their row id). Each must hash
to the hash it holds (else it was *changed*), follow the one before it by one
(a gap is *missing* records, unless those stand elsewhere: then they were
*reordered*), and hold the hash of the one before it (else that one was changed
and its hash recomputed). The first record is record 1 after :data:`GENESIS`, or
the record after the last trimmed one, which the newest checkpoint names. The
head, the last record the writer wrote (kept outside the table too), catches
records deleted from the end.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from plat.daemon.audit.chain import CHECKPOINT, GENESIS, Record

Kind = Literal["changed", "missing", "reordered"]
MAX_PROBLEMS = 50


class Head(NamedTuple):
    """The last record written: its seq and hash."""

    seq: int
    hash: str


@dataclass(frozen=True)
class Problem:
    seq: int
    kind: Kind
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "message": self.message}


@dataclass
class Verdict:
    records: int = 0
    first: int | None = None
    last: int | None = None
    head: str = GENESIS  # the hash of the last record read
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "records": self.records,
            "first": self.first,
            "last": self.last,
            "head": self.head,
            "problems": [p.to_json() for p in self.problems],
        }


def record_of(row: Mapping[str, Any]) -> tuple[Record, bool]:
    """A stored row as a record, and whether its columns could be read as one."""
    readable = True
    try:
        params = json.loads(row["params"])
        if not isinstance(params, dict):
            raise ValueError("not an object")
    except (TypeError, ValueError):
        params, readable = {"unreadable": str(row["params"])}, False
    seq = row["seq"]
    if not isinstance(seq, int):
        seq, readable = -1, False
    values = {name: row[name] for name in ("time", "actor", "origin", "action", "target")}
    values |= {name: row[name] for name in ("tenant", "outcome", "prev", "hash")}
    for name, value in values.items():
        if not isinstance(value, str):
            values[name], readable = str(value), False
    return Record(seq=seq, params=params, **values), readable


def _span(first: int, last: int) -> str:
    return f"record {first} is" if first == last else f"records {first} to {last} are"


class _Checker:
    def __init__(self, seqs: Collection[int], head: Head | None) -> None:
        self.seqs = seqs
        self.head = head
        self.verdict = Verdict()
        self.prev: Record | None = None
        self.first: Record | None = None
        self.checkpoint: Record | None = None
        self.head_hash: str | None = None  # the stored hash of the head's record

    def problem(self, seq: int, kind: Kind, message: str) -> None:
        if len(self.verdict.problems) < MAX_PROBLEMS:
            self.verdict.problems.append(Problem(seq, kind, message))

    def add(self, rec: Record, readable: bool) -> None:
        self.verdict.records += 1
        if not readable or rec.digest() != rec.hash:
            self.problem(
                rec.seq,
                "changed",
                f"record {rec.seq} was changed: it does not hash to the hash it holds",
            )
        if rec.action == CHECKPOINT:
            self.checkpoint = rec
        if self.head is not None and rec.seq == self.head.seq:
            self.head_hash = rec.hash
        prev = self.prev
        if prev is None:
            self.first = rec
        elif rec.seq == prev.seq + 1:
            if rec.prev != prev.hash:
                self.problem(
                    prev.seq,
                    "changed",
                    f"record {prev.seq} was changed: record {rec.seq} holds another hash for it",
                )
        elif rec.seq <= prev.seq:
            self.problem(
                rec.seq,
                "reordered",
                f"record {rec.seq} was moved: it comes after record {prev.seq}",
            )
        else:
            expected = prev.seq + 1
            if any(s in self.seqs for s in range(expected, min(rec.seq, expected + 1000))):
                self.problem(
                    expected,
                    "reordered",
                    f"record {expected} was moved: record {rec.seq} stands where it should",
                )
            else:
                self.problem(
                    expected,
                    "missing",
                    f"{_span(expected, rec.seq - 1)} missing "
                    f"(deleted between records {prev.seq} and {rec.seq})",
                )
        self.prev = rec

    def end(self) -> Verdict:
        verdict, first, last = self.verdict, self.first, self.prev
        if first is not None and last is not None:
            verdict.first, verdict.last, verdict.head = first.seq, last.seq, last.hash
            self._start(first)
        head = self.head
        if head is not None and head.seq > 0:
            if last is None or head.seq > last.seq:
                after = 1 if last is None else last.seq + 1
                self.problem(
                    after,
                    "missing",
                    f"{_span(after, head.seq)} missing from the end "
                    f"(the last record written was {head.seq})",
                )
            elif self.head_hash is not None and self.head_hash != head.hash:
                self.problem(
                    head.seq,
                    "changed",
                    f"record {head.seq} was changed: it is not the last record as it was written",
                )
        verdict.problems.sort(key=lambda p: p.seq)
        return verdict

    def _start(self, first: Record) -> None:
        if first.seq == 1:
            if first.prev != GENESIS:
                self.problem(1, "changed", "record 1 was changed: it does not start the chain")
            return
        checkpoint = self.checkpoint
        trimmed = checkpoint.params.get("seq") if checkpoint is not None else None
        if not isinstance(trimmed, int):
            self.problem(
                1,
                "missing",
                f"{_span(1, first.seq - 1)} missing (no checkpoint says they were trimmed)",
            )
        elif trimmed < first.seq - 1:
            self.problem(
                trimmed + 1,
                "missing",
                f"{_span(trimmed + 1, first.seq - 1)} missing "
                f"(the last trim kept the records from {trimmed + 1} on)",
            )
        elif trimmed > first.seq - 1 or checkpoint.params.get("hash") != first.prev:  # type: ignore[union-attr]
            self.problem(
                first.seq,
                "changed",
                f"record {first.seq} was changed: it does not "
                "follow the last trimmed record its checkpoint names",
            )


def verify(
    rows: Iterable[Mapping[str, Any]], seqs: Collection[int], head: Head | None = None
) -> Verdict:
    """Check ``rows`` (in stored order). ``seqs``: every seq stored (to tell a moved
    record from a deleted one); ``head``: the last record the writer wrote, if known."""
    checker = _Checker(seqs, head)
    for row in rows:
        checker.add(*record_of(row))
    return checker.end()
