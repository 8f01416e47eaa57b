"""The record of what was pushed where: one JSON file in the daemon's home.

``plat k8s render`` and ``plat deploy --target k8s`` need the reference (with its
digest) that ``plat push`` put in a registry. The records are small, written
rarely and read once per render, so a file replaced atomically serves; the
newest ``KEPT`` pushes of each function are kept. A file that cannot be read
(hand-edited, truncated) counts as empty and is rewritten by the next push.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any, cast

from plat.k8s.registry import PushRecord

log = logging.getLogger(__name__)

KEPT = 10
MAX_BYTES = 4 * 1024**2


class PushRecords:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = asyncio.Lock()

    async def add(self, key: str, record: PushRecord) -> None:
        async with self._lock:
            data = await asyncio.to_thread(self._load)
            kept = [r for r in data.get(key, []) if r.get("reference") != record["reference"]]
            data[key] = [record, *kept][:KEPT]
            await asyncio.to_thread(self._save, data)

    async def of(self, key: str) -> list[PushRecord]:
        """The function's pushes, newest first."""
        async with self._lock:
            data = await asyncio.to_thread(self._load)
        return list(data.get(key, []))

    async def forget(self, key: str) -> None:
        async with self._lock:
            data = await asyncio.to_thread(self._load)
            if data.pop(key, None) is not None:
                await asyncio.to_thread(self._save, data)

    def _load(self) -> dict[str, list[PushRecord]]:
        try:
            if self.path.stat().st_size > MAX_BYTES:
                raise ValueError("too large")
            raw: Any = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable push records %s: %s", self.path, exc)
            return {}
        if not isinstance(raw, dict):
            return {}
        return {
            str(k): [cast(PushRecord, r) for r in v if isinstance(r, dict)]
            for k, v in raw.items()
            if isinstance(v, list)
        }

    def _save(self, data: dict[str, list[PushRecord]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        os.replace(tmp, self.path)
