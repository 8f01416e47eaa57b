"""plat.daemon.store: SQLite schema, migrations and the records the daemon keeps."""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from plat.daemon.store import MIGRATIONS, InstanceRecord, Store
from plat.errors import DaemonError

MANIFEST = {"name": "hello", "runtime": "python", "scale": {"min": 0, "max": 2}}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(tmp_path / "plat.db")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def instance(
    id: str, function: str = "hello", state: str = "starting", started_at: float = 1.0
) -> InstanceRecord:
    return InstanceRecord(
        id=id,
        function=function,
        version="v1",
        backend="container",
        address="127.0.0.1:40000",
        state=state,
        started_at=started_at,
        ready_seconds=None,
    )


async def record(store: Store, function: str, version: str, log: str = "") -> None:
    await store.record_version(
        function,
        version,
        f"localhost/plat/{function}:{version}",
        status="ready",
        builder="buildah",
        build_log=log,
        build_seconds=1.5,
        manifest=MANIFEST,
    )


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    return {r[0] for r in rows}


def user_version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


# schema and lifecycle


async def test_migrations_create_schema(store: Store) -> None:
    assert {"functions", "versions", "instances"} <= tables(store.path)
    assert await store.schema_version() == len(MIGRATIONS)
    assert user_version(store.path) == len(MIGRATIONS)
    await store.ping()


async def test_reopen_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "plat.db"
    first = Store(path)
    await first.open()
    await first.open()  # a second open on the same object is a no-op
    await first.upsert_function("hello", MANIFEST, "/src/hello", "v1")
    await first.close()
    await first.close()

    second = Store(path)
    await second.open()
    try:
        assert await second.migrate() == len(MIGRATIONS)
        assert await second.schema_version() == len(MIGRATIONS)
        assert [f.name for f in await second.list_functions()] == ["hello"]
    finally:
        await second.close()


async def test_wal_mode(store: Store) -> None:
    async with store.db.execute("PRAGMA journal_mode") as cur:
        row = await cur.fetchone()
    assert row is not None
    assert row[0].lower() == "wal"
    # WAL is persistent: a plain sqlite3 connection sees it too.
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"


async def test_database_file_is_private(store: Store) -> None:
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


async def test_closed_store_raises(tmp_path: Path) -> None:
    s = Store(tmp_path / "plat.db")
    with pytest.raises(DaemonError, match="closed"):
        _ = s.db
    await s.open()
    await s.close()
    with pytest.raises(DaemonError, match="closed"):
        await s.ping()


def make_newer_database(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plat.db"
    make_newer_database(path)
    s = Store(path)
    try:
        with pytest.raises(DaemonError) as info:
            await s.open()
    finally:
        await s.close()
    assert str(path) in info.value.message
    assert f"schema version {len(MIGRATIONS) + 1}" in info.value.message
    assert info.value.hint is not None
    assert "upgrade plat" in info.value.hint
    assert user_version(path) == len(MIGRATIONS) + 1  # left untouched


async def test_refused_open_leaves_store_closed(tmp_path: Path) -> None:
    path = tmp_path / "plat.db"
    make_newer_database(path)
    s = Store(path)
    try:
        with pytest.raises(DaemonError):
            await s.open()
        with pytest.raises(DaemonError, match="closed"):
            _ = s.db
    finally:
        await s.close()


# functions


async def test_function_upsert_get_list(store: Store) -> None:
    assert await store.get_function("hello") is None
    assert await store.list_functions() == []
    await store.upsert_function("hello", MANIFEST, "/src/hello", "v1")
    await store.upsert_function("abc", {"name": "abc"}, "/src/abc", "v9")
    fn = await store.get_function("hello")
    assert fn is not None
    assert fn.name == "hello"
    assert fn.manifest == MANIFEST
    assert fn.source_dir == "/src/hello"
    assert fn.version == "v1"
    assert fn.created_at == fn.updated_at
    assert [f.name for f in await store.list_functions()] == ["abc", "hello"]


async def test_function_upsert_updates_in_place(store: Store) -> None:
    await store.upsert_function("hello", MANIFEST, "/src/hello", "v1")
    before = await store.get_function("hello")
    assert before is not None
    changed = {**MANIFEST, "auth": "public"}
    await store.upsert_function("hello", changed, "/elsewhere", "v2")
    after = await store.get_function("hello")
    assert after is not None
    assert (after.manifest, after.source_dir, after.version) == (changed, "/elsewhere", "v2")
    assert after.created_at == before.created_at
    assert after.updated_at >= before.updated_at
    assert len(await store.list_functions()) == 1


async def test_delete_function_cascades(store: Store) -> None:
    await store.upsert_function("hello", MANIFEST, "/src/hello", "v1")
    await store.upsert_function("other", MANIFEST, "/src/other", "v1")
    await record(store, "hello", "v1")
    await record(store, "hello", "v2")
    await record(store, "other", "v1")
    await store.add_instance(instance("i1"))
    await store.add_instance(instance("i2"))
    await store.add_instance(instance("o1", function="other"))

    await store.delete_function("hello")

    assert await store.get_function("hello") is None
    assert await store.list_versions("hello") == []
    assert await store.get_version("hello", "v1") is None
    assert await store.list_instances("hello") == []
    # The other function is untouched.
    assert await store.get_function("other") is not None
    assert [v.version for v in await store.list_versions("other")] == ["v1"]
    assert [i.id for i in await store.list_instances()] == ["o1"]


async def test_delete_unknown_function_is_a_no_op(store: Store) -> None:
    await store.delete_function("nope")
    assert await store.list_functions() == []


# versions


async def test_version_record_get_list(store: Store) -> None:
    await store.upsert_function("hello", MANIFEST, "/src/hello", "v2")
    await record(store, "hello", "v1", log="STEP 1/2: FROM x\n")
    await record(store, "hello", "v2")
    v1 = await store.get_version("hello", "v1")
    assert v1 is not None
    assert v1.function == "hello"
    assert v1.image == "localhost/plat/hello:v1"
    assert v1.status == "ready"
    assert v1.builder == "buildah"
    assert v1.build_seconds == 1.5
    assert v1.manifest == MANIFEST
    assert not hasattr(v1, "build_log")  # the log is fetched separately
    # Newest first.
    assert [v.version for v in await store.list_versions("hello")] == ["v2", "v1"]
    assert await store.get_version("hello", "v3") is None
    assert await store.list_versions("other") == []


async def test_version_re_record_updates(store: Store) -> None:
    await store.upsert_function("hello", MANIFEST, "/src/hello", "v1")
    await store.record_version(
        "hello",
        "v1",
        "img:v1",
        status="building",
        builder=None,
        build_log="",
        build_seconds=None,
        manifest=MANIFEST,
    )
    await store.record_version(
        "hello",
        "v1",
        "img:v1",
        status="failed",
        builder="engine",
        build_log="boom",
        build_seconds=3.0,
        manifest=MANIFEST,
    )
    versions = await store.list_versions("hello")
    assert len(versions) == 1
    assert (versions[0].status, versions[0].builder, versions[0].build_seconds) == (
        "failed",
        "engine",
        3.0,
    )
    assert await store.build_log("hello", "v1") == "boom"


async def test_build_log(store: Store) -> None:
    await store.upsert_function("hello", MANIFEST, "/src/hello", "v1")
    log = "STEP 1/3: FROM python\nSTEP 2/3: RUN pip install\nünïcode ✓\n"
    await record(store, "hello", "v1", log=log)
    assert await store.build_log("hello", "v1") == log
    assert await store.build_log("hello", "v404") is None


# instances


async def test_instances_add_state_remove_list(store: Store) -> None:
    await store.add_instance(instance("b", started_at=2.0))
    await store.add_instance(instance("a", started_at=1.0))
    await store.add_instance(instance("c", function="other", started_at=3.0))
    assert [i.id for i in await store.list_instances()] == ["a", "b", "c"]
    assert [i.id for i in await store.list_instances("hello")] == ["a", "b"]
    assert await store.list_instances("nobody") == []

    await store.set_instance_state("a", "ready", ready_seconds=0.25)
    await store.set_instance_state("a", "draining")  # keeps ready_seconds
    (a,) = [i for i in await store.list_instances() if i.id == "a"]
    assert a == replace(instance("a", started_at=1.0), state="draining", ready_seconds=0.25)

    await store.remove_instance("b")
    await store.remove_instance("b")  # idempotent
    assert [i.id for i in await store.list_instances()] == ["a", "c"]


async def test_add_instance_replaces_same_id(store: Store) -> None:
    await store.add_instance(instance("a", state="starting"))
    await store.add_instance(instance("a", state="ready"))
    assert [(i.id, i.state) for i in await store.list_instances()] == [("a", "ready")]


async def test_data_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "plat.db"
    s = Store(path)
    await s.open()
    await s.upsert_function("hello", MANIFEST, "/src/hello", "v1")
    await record(s, "hello", "v1", log="log")
    await s.add_instance(instance("a"))
    await s.close()

    s = Store(path)
    await s.open()
    try:
        assert (await s.get_function("hello")) is not None
        assert await s.build_log("hello", "v1") == "log"
        assert [i.id for i in await s.list_instances()] == ["a"]
    finally:
        await s.close()
