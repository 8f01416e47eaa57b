"""One audit record, its canonical form, and the hash chain that links the records.

Each record holds the SHA-256 of the previous record's canonical form (``prev``)
and its own (``hash``). The canonical form of a record is the UTF-8 (here: ASCII)
bytes of the JSON object of its ten fields ``seq, time, actor, origin, action,
target, tenant, params, outcome, prev``, keys sorted, no whitespace
(``separators=(",", ":")``), non-ASCII characters as ``\\uXXXX`` escapes: what
``json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)``
writes. Parameter values are strings, whole numbers, booleans or null (and lists
or objects of those), so no float formatting differs between verifiers. The first
record's ``prev`` is :data:`GENESIS`.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64
CHECKPOINT = "audit.checkpoint"
FIELDS = ("seq", "time", "actor", "origin", "action", "target", "tenant", "params", "outcome")

MAX_TEXT = 256  # characters kept of one field or parameter value
MAX_ITEMS = 32  # entries kept of one list or object parameter
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Entry:
    """A record as its writer hands it over: everything but its place in the chain."""

    time: str
    actor: str
    origin: str
    action: str
    target: str
    tenant: str
    params: dict[str, Any]
    outcome: str


@dataclass(frozen=True)
class Record:
    """A record in the chain. ``hash`` is what was stored; ``digest()`` what it should be."""

    seq: int
    time: str
    actor: str
    origin: str
    action: str
    target: str
    tenant: str
    params: dict[str, Any]
    outcome: str
    prev: str
    hash: str

    def fields(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": self.time,
            "actor": self.actor,
            "origin": self.origin,
            "action": self.action,
            "target": self.target,
            "tenant": self.tenant,
            "params": self.params,
            "outcome": self.outcome,
            "prev": self.prev,
        }

    def digest(self) -> str:
        return digest(self.fields())

    def to_json(self) -> dict[str, Any]:
        return {**self.fields(), "hash": self.hash}


def canonical(fields: Mapping[str, Any]) -> bytes:
    """The bytes a record's hash is taken of (see the module's docstring)."""
    return json.dumps(
        fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def digest(fields: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(fields)).hexdigest()


def link(entry: Entry, seq: int, prev: str) -> Record:
    """``entry`` as record ``seq`` of the chain, after the record whose hash is ``prev``."""
    fields = {
        "seq": seq,
        "time": entry.time,
        "actor": entry.actor,
        "origin": entry.origin,
        "action": entry.action,
        "target": entry.target,
        "tenant": entry.tenant,
        "params": entry.params,
        "outcome": entry.outcome,
        "prev": prev,
    }
    return Record(**fields, hash=digest(fields))  # type: ignore[arg-type]


def timestamp(ts: float | None = None) -> str:
    """A record's time: UTC, microseconds, fixed width, so text order is time order."""
    moment = datetime.fromtimestamp(time.time() if ts is None else ts, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def text(value: object, limit: int = MAX_TEXT) -> str:
    """A field as it is recorded: a string without control characters (a record is
    shown in terminals; a path an attacker chose must not move the cursor), bounded."""
    out = _CONTROL.sub("\N{REPLACEMENT CHARACTER}", str(value))
    return out if len(out) <= limit else out[: limit - 1] + "\N{HORIZONTAL ELLIPSIS}"


def _value(value: object, depth: int = 0) -> object:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else str(value)
    if isinstance(value, str):
        return text(value)
    if depth == 0 and isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [_value(v, 1) for v in list(items)[:MAX_ITEMS]]
    if depth == 0 and isinstance(value, Mapping):
        return {text(k, 64): _value(v, 1) for k, v in list(value.items())[:MAX_ITEMS]}
    return text(value)  # floats too: their JSON spelling differs between languages


def clean_params(params: Mapping[str, object] | None) -> dict[str, Any]:
    """Parameters as they are recorded: JSON scalars (one level of lists or objects),
    strings bounded, at most MAX_ITEMS of them."""
    if not params:
        return {}
    return {text(k, 64): _value(v) for k, v in list(params.items())[:MAX_ITEMS]}
