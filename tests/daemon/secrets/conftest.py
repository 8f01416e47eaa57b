"""Fixtures of the secrets tests: a real store, a sealer with its key file, a
KV v2-compatible server on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from plat.daemon.secrets.sealing import Sealer
from plat.daemon.secrets.service import SecretsService
from plat.daemon.store import Store
from tests.daemon.secrets.kvserver import KVServer


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(tmp_path / "plat.db")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def sealer(tmp_path: Path) -> Sealer:
    return Sealer.from_home(tmp_path)


@pytest.fixture
async def kv() -> AsyncIterator[KVServer]:
    server = KVServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def service(store: Store, sealer: Sealer, kv: KVServer) -> AsyncIterator[SecretsService]:
    svc = SecretsService(
        store, sealer, {"VAULT_ADDR": kv.url, "VAULT_TOKEN": kv.token}, ttl=3600, vault_timeout=1
    )
    try:
        yield svc
    finally:
        await svc.close()
