"""The controller with a warm pool, against the in-memory backend: cold starts
specialised from the pool, and claims cancelled midway."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from plat.daemon.serving.controller import Controller
from plat.daemon.serving.pool import WarmPool
from plat.daemon.store import Store
from tests.daemon.fakes import (
    FakeBackend,
    FakeSources,
    eventually,
    make_controller,
    manifest,
    release,
)
from tests.daemon.serving.controllers import (
    deployed,
)

pytestmark = pytest.mark.timeout(30)  # a hang fails fast, not at the suite's limit

# the warm pool


@pytest.fixture
async def pooled(
    store: Store, backend: FakeBackend, tmp_path: Path
) -> AsyncIterator[tuple[Controller, WarmPool]]:
    """A controller whose cold starts claim from a pool of one (specialised over HTTP)."""
    controller: Controller

    async def image_for(runtime: str) -> str:
        return f"localhost/plat/pool-{runtime}:v1"

    pool = WarmPool(
        backend,
        FakeSources(tmp_path / "app"),
        image_for,
        tmp_path / "pool",
        size=1,
        session=lambda: controller.instances.session,
        ready_timeout=2.0,
        link=False,
    )
    await pool.start()
    controller = make_controller(store, backend, pool=pool)
    yield controller, pool
    await controller.close()


async def test_two_cold_starts_at_once_are_both_specialised_from_a_pool_of_one(
    pooled: tuple[Controller, WarmPool], backend: FakeBackend
) -> None:
    controller, pool = pooled
    pool.want([release(manifest())])
    await eventually(lambda: pool.states()[0].ready == 1, what="the pool's first member")
    fs = await deployed(controller, manifest(min=2))
    assert [i.pooled for i in fs.instances] == [True, True]
    ids = {i.id for i in fs.instances}
    assert len(ids) == 2 and {i for i, _ in backend.renamed} == ids
    for inst in fs.instances:
        assert inst.function == "fn" and inst.state == "ready"
        assert backend.instance(inst.id).requests == ["POST /.plat/specialize HTTP/1.1"]
    assert pool.states()[0].claimed == 2
    await eventually(lambda: pool.states()[0].ready == 1, what="the pool's refill")


async def test_a_deploy_cancelled_while_its_claim_waits_for_a_pool_member_leaks_nothing(
    pooled: tuple[Controller, WarmPool], backend: FakeBackend
) -> None:
    controller, pool = pooled
    backend.start_delay = 0.2
    pool.want([release(manifest())])  # a member starts, slowly
    rollout = asyncio.create_task(deployed(controller, manifest()))
    await asyncio.sleep(0.05)  # the claim waits for that member
    rollout.cancel()
    with pytest.raises(asyncio.CancelledError):
        await rollout
    assert "fn" not in controller.functions
    await eventually(lambda: pool.states()[0][1:3] == (1, 0), what="the pool settling")
    alive = backend.alive()
    assert [f.running.function for f in alive] == ["pool-python"]
    assert alive[0].requests == []  # never specialised
