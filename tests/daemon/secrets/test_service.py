"""plat.daemon.secrets.service over a real store: set, list, remove, resolve; at
rest the store holds nothing readable; hostile names, sizes and concurrency."""

from __future__ import annotations

import asyncio
import logging
import shutil
import sqlite3
from pathlib import Path

import pytest

from plat.daemon.drivers.secretvalue import SecretValue
from plat.daemon.secrets.sealing import Sealer, SecretKeyError
from plat.daemon.secrets.service import MAX_VALUE, SecretsService, SecretTooLarge
from plat.daemon.store import Store
from plat.errors import NotFoundError, PlatError
from plat.manifest import SecretRef, validate_manifest

MARKER = b"pa55-w0rd-that-must-never-show-4c1d"


def refs(*names: str) -> list[SecretRef]:
    return [SecretRef(name=name) for name in names]


async def test_set_list_remove(service: SecretsService) -> None:
    assert await service.set("default", "db-password", MARKER) == 1
    assert await service.set("default", "db-password", MARKER + b"2") == 2
    assert await service.set("default", "api.key", b"k") == 1
    listed = await service.list("default")
    assert [(s["name"], s["revision"]) for s in listed] == [("api.key", 1), ("db-password", 2)]
    db = listed[1]
    assert set(db) == {"name", "revision", "created_at", "updated_at"}
    assert db["updated_at"] >= db["created_at"] > 0
    await service.remove("default", "api.key")
    assert [s["name"] for s in await service.list("default")] == ["db-password"]
    with pytest.raises(NotFoundError, match=r"no secret named 'api\.key'"):
        await service.remove("default", "api.key")


async def test_tenants_see_only_their_own_secrets(service: SecretsService) -> None:
    await service.set("acme", "db", b"acme's")
    await service.set("default", "db", b"default's")
    assert [s["name"] for s in await service.list("other")] == []
    got = await service.resolve("acme", refs("db"))
    assert got["db"].reveal() == b"acme's"
    with pytest.raises(PlatError, match="secret db is not set for tenant other") as info:
        await service.resolve("other", refs("db"))
    assert "plat --tenant other secret set db" in str(info.value)
    with pytest.raises(NotFoundError):
        await service.remove("other", "db")


async def test_resolve_gives_values_in_the_manifest_order(service: SecretsService) -> None:
    await service.set("default", "b", b"2")
    await service.set("default", "a", b"1")
    got = await service.resolve("default", refs("b", "a"))
    assert list(got) == ["b", "a"]
    assert got == {"b": SecretValue(b"2"), "a": SecretValue(b"1")}
    assert await service.resolve("default", []) == {}


async def test_resolve_names_every_missing_secret(service: SecretsService) -> None:
    await service.set("default", "present", b"x")
    with pytest.raises(PlatError) as info:
        await service.resolve("default", refs("missing-one", "present", "missing-two"))
    assert info.value.status == 400
    message = str(info.value)
    assert "secrets missing-one, missing-two are not set" in message
    assert "plat secret set missing-one" in message


async def test_a_store_copied_without_the_key_reveals_nothing(
    tmp_path: Path, store: Store, service: SecretsService
) -> None:
    await service.set("default", "db-password", MARKER)
    await service.set("acme", "token", MARKER + b"-acme")
    assert (await service.resolve("default", refs("db-password")))["db-password"].reveal() == (
        MARKER
    )
    # Every byte the store wrote: the database and its write-ahead log.
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("plat.db*"))
    assert b"db-password" in raw  # the row is there...
    assert MARKER not in raw  # ...its value is not
    await store.close()
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in tmp_path.glob("plat.db*"):
        shutil.copy(path, copy / path.name)
    # Another home's key (the copy came without secret.key) opens nothing.
    stolen = Store(copy / "plat.db")
    await stolen.open()
    try:
        thief = SecretsService(stolen, Sealer.from_home(copy), {})
        with pytest.raises(SecretKeyError, match=r"was secret\.key replaced") as info:
            await thief.resolve("default", refs("db-password"))
        assert MARKER.decode() not in str(info.value)
    finally:
        await stolen.close()


async def test_a_row_moved_to_another_name_does_not_open(
    tmp_path: Path, store: Store, service: SecretsService
) -> None:
    await service.set("default", "real", MARKER)
    await store.close()
    with sqlite3.connect(tmp_path / "plat.db") as db:
        db.execute("UPDATE secrets SET name='other' WHERE name='real'")
    await store.open()
    with pytest.raises(SecretKeyError, match="does not open secret 'other'"):
        await service.resolve("default", refs("other"))
    with sqlite3.connect(tmp_path / "plat.db") as db:
        db.execute("UPDATE secrets SET name='real', tenant='acme' WHERE name='other'")
    with pytest.raises(SecretKeyError, match="of tenant 'acme'"):
        await service.resolve("acme", refs("real"))


async def test_values_never_reach_the_log(
    service: SecretsService, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        await service.set("default", "db-password", MARKER)
        await service.resolve("default", refs("db-password"))
        await service.list("default")
        await service.remove("default", "db-password")
    assert "db-password" in caplog.text
    assert MARKER.decode() not in caplog.text


async def test_a_value_of_exactly_the_limit_is_kept(service: SecretsService) -> None:
    value = bytes(range(256)) * (MAX_VALUE // 256)
    assert len(value) == MAX_VALUE
    await service.set("default", "big", value)
    assert (await service.resolve("default", refs("big")))["big"].reveal() == value


async def test_an_oversized_value_is_413_and_not_stored(service: SecretsService) -> None:
    with pytest.raises(SecretTooLarge) as info:
        await service.set("default", "big", b"x" * (MAX_VALUE + 1))
    assert info.value.status == 413 and "1024 KiB" in str(info.value)
    assert await service.list("default") == []


async def test_an_empty_value_is_refused(service: SecretsService) -> None:
    with pytest.raises(PlatError, match="is empty"):
        await service.set("default", "db", b"")
    assert await service.list("default") == []


@pytest.mark.parametrize(
    "name",
    [
        "",
        "DB",
        "../etc/passwd",
        "a/b",
        "..",
        ".",
        ".hidden",
        "a..b",
        "-a",
        "a-",
        "a" * 64,
        "a b",
        "a\nb",
        "a\0b",
        "é",
    ],
)
async def test_bad_names_are_refused_everywhere(service: SecretsService, name: str) -> None:
    with pytest.raises(PlatError, match="not a valid secret name"):
        await service.set("default", name, b"x")
    with pytest.raises(PlatError, match="not a valid secret name"):
        await service.remove("default", name)
    assert await service.list("default") == []


@pytest.mark.parametrize("tenant", ["", "Acme", "a/b", "../x", "a" * 40])
async def test_bad_tenants_are_refused(service: SecretsService, tenant: str) -> None:
    with pytest.raises(PlatError, match="not a valid tenant"):
        await service.set(tenant, "db", b"x")
    with pytest.raises(PlatError, match="not a valid tenant"):
        await service.list(tenant)


async def test_concurrent_sets_of_one_secret_end_consistent(service: SecretsService) -> None:
    values = [f"value-{i}".encode() for i in range(50)]
    revisions = await asyncio.gather(*(service.set("default", "db", v) for v in values))
    # Each set got its own revision, and the last revision holds a value that was set.
    assert sorted(revisions) == list(range(1, 51))
    [listed] = await service.list("default")
    assert listed["revision"] == 50
    final = (await service.resolve("default", refs("db")))["db"].reveal()
    assert final == values[revisions.index(50)]


async def test_concurrent_sets_of_many_secrets_and_tenants(service: SecretsService) -> None:
    jobs = [
        service.set(tenant, f"s{i}", f"{tenant}-{i}".encode())
        for tenant in ("default", "acme")
        for i in range(20)
    ]
    assert await asyncio.gather(*jobs) == [1] * 40
    got = await service.resolve("acme", refs(*(f"s{i}" for i in range(20))))
    assert {n: v.reveal() for n, v in got.items()} == {
        f"s{i}": f"acme-{i}".encode() for i in range(20)
    }


async def test_users_are_the_tracked_functions_listing_a_plat_secret(
    service: SecretsService,
) -> None:
    async def roll(key: str) -> None: ...

    service.track("hello", refs("db", "other"), roll)
    service.track("api", refs("db"), roll)
    service.track("hello.acme", refs("db"), roll)
    service.track("vaulty", [SecretRef(name="db", vault="secret/app#db")], roll)
    assert service.users("default", "db") == ["api", "hello"]
    assert service.users("acme", "db") == ["hello.acme"]
    service.untrack("api")
    service.track("hello", [], roll)  # redeployed without secrets
    assert service.users("default", "db") == []


async def test_for_manifest_takes_the_tenant_from_the_function_key(
    service: SecretsService,
) -> None:
    await service.set("acme", "db", b"acme's")
    await service.set("default", "db", b"default's")
    acme = validate_manifest(
        {"name": "hello.acme", "runtime": "python", "secrets": ["db"]}, qualified=True
    )
    plain = validate_manifest({"name": "hello", "runtime": "python", "secrets": ["db"]})
    assert (await service.for_manifest(acme))["db"].reveal() == b"acme's"
    assert (await service.for_manifest(plain))["db"].reveal() == b"default's"
    bare = validate_manifest({"name": "hello", "runtime": "python"})
    assert await service.for_manifest(bare) == {}
