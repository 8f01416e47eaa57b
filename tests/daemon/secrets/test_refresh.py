"""The Vault refresher of plat.daemon.secrets.service: a changed value rolls its
functions; a Vault that goes away keeps the last values with one warning."""

from __future__ import annotations

import asyncio
import logging

import pytest

from plat.daemon.drivers.secretvalue import SecretValue
from plat.daemon.secrets.sealing import Sealer
from plat.daemon.secrets.service import SecretsService
from plat.daemon.store import Store
from plat.errors import DaemonError
from plat.manifest import SecretRef
from tests.daemon.secrets.kvserver import KVServer

DB = SecretRef(name="db", vault="secret/app#password")
API = SecretRef(name="api", vault="secret/api#key")


class Calls:
    """on_change as the integrator gives it: records which keys were rolled."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.event = asyncio.Event()

    async def __call__(self, key: str) -> None:
        self.keys.append(key)
        self.event.set()


async def deployed(service: SecretsService, key: str, refs: list[SecretRef], calls: Calls) -> None:
    """A deploy: values resolved, then the function tracked with them."""
    values = await service.resolve("default", refs)
    service.track(key, refs, calls, values=values)


async def test_a_changed_value_calls_on_change_once(service: SecretsService, kv: KVServer) -> None:
    kv.put("secret", "app", {"password": "one"})
    kv.put("secret", "api", {"key": "k"})
    calls = Calls()
    await deployed(service, "hello", [DB], calls)
    await deployed(service, "other", [API], calls)
    assert await service.refresh() == []
    kv.put("secret", "app", {"password": "two"})
    assert await service.refresh() == ["hello"]
    assert calls.keys == ["hello"]
    # Told once: the next round sees no change.
    assert await service.refresh() == []
    # Another key of the same secret changing is no change for `db`.
    kv.put("secret", "app", {"password": "two", "unrelated": "x"})
    assert await service.refresh() == []
    assert calls.keys == ["hello"]


async def test_each_function_using_the_secret_is_told_and_vault_asked_once(
    service: SecretsService, kv: KVServer
) -> None:
    kv.put("secret", "app", {"password": "one"})
    await service.set("default", "local", b"x")
    calls = Calls()
    for key in ("a", "b", "c"):
        # A plat secret beside the Vault one: the refresher leaves it alone.
        await deployed(service, key, [DB, SecretRef(name="local")], calls)
    kv.requests.clear()
    kv.put("secret", "app", {"password": "two"})
    assert sorted(await service.refresh()) == ["a", "b", "c"]
    assert len(kv.requests) == 1
    assert sorted(calls.keys) == ["a", "b", "c"]


async def test_track_without_values_starts_from_the_last_read(
    service: SecretsService, kv: KVServer
) -> None:
    kv.put("secret", "app", {"password": "one"})
    await service.resolve("default", [DB])
    calls = Calls()
    service.track("hello", [DB], calls)
    kv.put("secret", "app", {"password": "two"})
    assert await service.refresh() == ["hello"]


async def test_a_function_given_an_older_value_is_rolled(
    service: SecretsService, kv: KVServer
) -> None:
    kv.put("secret", "app", {"password": "now"})
    calls = Calls()
    service.track("hello", [DB], calls, values={"db": SecretValue(b"before")})
    assert await service.refresh() == ["hello"]


async def test_untracked_functions_are_not_told(service: SecretsService, kv: KVServer) -> None:
    kv.put("secret", "app", {"password": "one"})
    calls = Calls()
    await deployed(service, "hello", [DB], calls)
    service.untrack("hello")
    service.untrack("hello")
    kv.put("secret", "app", {"password": "two"})
    kv.requests.clear()
    assert await service.refresh() == []
    assert kv.requests == [] and calls.keys == []


async def test_vault_down_keeps_the_last_value_and_warns_once(
    service: SecretsService, kv: KVServer, caplog: pytest.LogCaptureFixture
) -> None:
    kv.put("secret", "app", {"password": "one-secret-value"})
    calls = Calls()
    await deployed(service, "hello", [DB], calls)
    await kv.stop()
    with caplog.at_level(logging.DEBUG, logger="plat.daemon.secrets"):
        for _ in range(5):
            assert await service.refresh() == []
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "last values kept" in text and "connection refused" in text
    assert kv.token not in caplog.text and "one-secret-value" not in caplog.text
    # Back with the same value: no roll, one line saying so.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="plat.daemon.secrets"):
        await kv.start()
        assert await service.refresh() == []
    assert "answers again" in caplog.text
    # A change after the outage rolls as usual; a second outage warns again.
    kv.put("secret", "app", {"password": "two"})
    assert await service.refresh() == ["hello"]
    await kv.stop()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="plat.daemon.secrets"):
        await service.refresh()
        await service.refresh()
    assert len(caplog.records) == 1


async def test_a_secret_gone_from_vault_keeps_its_value_and_warns_once(
    service: SecretsService, kv: KVServer, caplog: pytest.LogCaptureFixture
) -> None:
    kv.put("secret", "app", {"password": "one"})
    calls = Calls()
    await deployed(service, "hello", [DB], calls)
    kv.delete("secret", "app")
    with caplog.at_level(logging.WARNING, logger="plat.daemon.secrets"):
        for _ in range(3):
            assert await service.refresh() == []
    assert len(caplog.records) == 1
    assert "secret/app#password is not refreshed" in caplog.text
    kv.put("secret", "app", {"password": "back"})
    assert await service.refresh() == ["hello"]


async def test_a_failing_on_change_is_logged_and_others_still_told(
    service: SecretsService, kv: KVServer, caplog: pytest.LogCaptureFixture
) -> None:
    kv.put("secret", "app", {"password": "one"})

    def broken(key: str) -> None:
        raise RuntimeError("roll failed")

    calls = Calls()
    await deployed(service, "bad", [DB], calls)
    service.track("bad", [DB], broken)
    await deployed(service, "good", [DB], calls)
    kv.put("secret", "app", {"password": "two"})
    with caplog.at_level(logging.ERROR):
        assert sorted(await service.refresh()) == ["bad", "good"]
    assert calls.keys == ["good"]
    assert "rolling bad after its Vault secret changed failed" in caplog.text


async def test_the_background_refresher_runs_every_ttl(
    store: Store, sealer: Sealer, kv: KVServer
) -> None:
    env = {"VAULT_ADDR": kv.url, "VAULT_TOKEN": kv.token}
    service = SecretsService(store, sealer, env, ttl=0.05, vault_timeout=1)
    kv.put("secret", "app", {"password": "one"})
    calls = Calls()
    await deployed(service, "hello", [DB], calls)
    await service.start()
    await service.start()  # idempotent
    try:
        kv.put("secret", "app", {"password": "two"})
        await asyncio.wait_for(calls.event.wait(), 5)
        assert calls.keys == ["hello"]
    finally:
        await service.close()
        await service.close()
    assert service._task is None
    with pytest.raises(DaemonError, match="closed"):
        await service.start()


async def test_on_change_may_be_a_roll_that_answers(service: SecretsService, kv: KVServer) -> None:
    # The deployer's refresh_secrets(key) -> bool, as the integrator passes it.
    kv.put("secret", "app", {"password": "one"})
    rolled: list[str] = []

    async def refresh_secrets(key: str) -> bool:
        rolled.append(key)
        return True

    values = await service.resolve("default", [DB])
    service.track("hello", [DB], refresh_secrets, values=values)
    kv.put("secret", "app", {"password": "two"})
    assert await service.refresh() == ["hello"]
    assert rolled == ["hello"]
