"""The hooks' rows in a real SQLite store: one delivery id or body counted once per
hook, even when the same delivery arrives many times at once; logs trimmed, not rows."""

from __future__ import annotations

import asyncio
import time

from plat.daemon.store import Store
from plat.daemon.store.hooks import KEPT_UNCOUNTED, DeliveryRecord, HookRecord
from tests.daemon.fakes import store_fixture

__all__ = ["store_fixture"]


def hook(hook_id: str = "h1", function: str = "hello", tenant: str = "default") -> HookRecord:
    return HookRecord(
        id=hook_id,
        tenant=tenant,
        function=function,
        repo="/srv/repo.git",
        branch="main",
        path="",
        previews=True,
        preview_ttl=3600.0,
        created_at=time.time(),
        secret=b"sealed",
    )


def delivery(delivery_id: str, body_sha: str, hook_id: str = "h1") -> DeliveryRecord:
    return DeliveryRecord(
        hook=hook_id,
        delivery=delivery_id,
        body_sha=body_sha,
        provider="github",
        event="push",
        origin="127.0.0.1",
    )


async def test_one_hook_per_function_of_a_tenant(store: Store) -> None:
    assert await store.create_hook(hook())
    assert not await store.create_hook(hook("h2"))
    assert await store.create_hook(hook("h3", tenant="acme"))
    assert [h.id for h in await store.list_hooks("acme")] == ["h3"]
    assert {h.id for h in await store.list_hooks()} == {"h1", "h3"}
    got = await store.get_hook("h1")
    assert got is not None and got.secret == b"sealed" and got.previews
    assert await store.delete_hook("h1")
    assert not await store.delete_hook("h1")


async def test_a_delivery_id_or_body_counts_once_even_at_once(store: Store) -> None:
    await store.create_hook(hook())
    results = await asyncio.gather(
        *(store.add_delivery(delivery("d1", "b1"), counted=True) for _ in range(20))
    )
    assert len([r for r in results if r is not None]) == 1
    # The same body under a new id (a replay with a forged id header): a duplicate too.
    assert await store.add_delivery(delivery("d2", "b1"), counted=True) is None
    assert await store.add_delivery(delivery("d1", "b2"), counted=True) is None
    # Uncounted rows (duplicates, rejected) do not take the id.
    assert await store.add_delivery(delivery("d3", "b3"), counted=False) is not None
    assert await store.add_delivery(delivery("d3", "b3"), counted=True) is not None
    # Another hook has its own ids.
    await store.create_hook(hook("h2", function="other"))
    assert await store.add_delivery(delivery("d1", "b1", "h2"), counted=True) is not None


async def test_progress_is_saved_and_found_by_seq_or_id(store: Store) -> None:
    await store.create_hook(hook())
    record = delivery("gh-1", "b1")
    seq = await store.add_delivery(record, counted=True)
    assert seq is not None
    record.state, record.log, record.sha = "done", "line 1\nline 2", "a" * 40
    await store.save_delivery(record)
    for key in (str(seq), "gh-1"):
        got = await store.get_delivery("h1", key)
        assert got is not None and got.state == "done" and got.log == "line 1\nline 2"
    assert await store.get_delivery("h1", "nope") is None
    assert await store.get_delivery("h1", "9" * 40) is None
    assert (await store.list_deliveries("h1"))[0].log == ""  # lists carry no logs
    assert await store.last_states() == {"h1": "done"}
    assert await store.open_deliveries() == []


async def test_uncounted_rows_are_bounded(store: Store) -> None:
    await store.create_hook(hook())
    for n in range(KEPT_UNCOUNTED + 30):
        await store.add_delivery(delivery(f"x{n}", f"b{n}"), counted=False)
    assert len(await store.list_deliveries("h1", limit=1000)) == KEPT_UNCOUNTED


async def test_previews_expire(store: Store) -> None:
    await store.put_preview("hello--a", "h1", "a", expires_at=100.0)
    await store.put_preview("hello--b", "h1", "b", expires_at=300.0)
    await store.put_preview("hello--a", "h1", "a", expires_at=200.0)  # pushed again
    assert [p.function for p in await store.expired_previews(150.0)] == []
    assert [p.function for p in await store.expired_previews(250.0)] == ["hello--a"]
    await store.delete_previews(["hello--a"])
    assert [p.function for p in await store.list_previews("h1")] == ["hello--b"]
