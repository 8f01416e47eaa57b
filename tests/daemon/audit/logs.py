"""An audit log on a real database in a temporary folder, and a way to tamper with it."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from plat.daemon.audit import AuditLog


def make_log(tmp: Path, **kw: Any) -> AuditLog:
    return AuditLog(tmp / "plat.db", head_file=tmp / "audit.head", **kw)


def act(log: AuditLog, n: int, **kw: Any) -> None:
    for i in range(n):
        fields: dict[str, Any] = {
            "action": "function.deploy",
            "target": f"fn{i}",
            "outcome": "ok",
            "actor": "admin",
            "origin": "uid:0",
        }
        fields.update(kw)
        log.record(**fields)


def tamper(tmp: Path, *statements: str) -> None:
    """Run SQL on the database as someone with write access to the file would."""
    with closing(sqlite3.connect(tmp / "plat.db")) as db, db:
        for sql in statements:
            db.execute(sql)


def entry_of(tmp: Path, seq: int) -> tuple[dict[str, Any], str]:
    """Record ``seq``'s fields as an Entry takes them, and its prev hash."""
    with closing(sqlite3.connect(tmp / "plat.db")) as db:
        db.row_factory = sqlite3.Row
        row = dict(db.execute("SELECT * FROM audit WHERE seq = ?", (seq,)).fetchone())
    fields = {k: row[k] for k in ("time", "actor", "origin", "action", "target", "tenant")}
    fields |= {"params": json.loads(row["params"]), "outcome": row["outcome"]}
    return fields, row["prev"]
