"""Controllers on the in-memory backend for the serving unit tests, and what the
tests do with them often (deploy, scale to zero, wait for a replacement)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from plat.daemon.serving.controller import Controller
from plat.daemon.serving.function_state import FunctionState
from plat.daemon.serving.instance import Instance
from plat.daemon.store import Store
from plat.manifest import Manifest
from tests.daemon.fakes import FakeBackend, eventually, make_controller, manifest, release

MakeController = Callable[..., Controller]


@pytest.fixture
async def controllers(store: Store, backend: FakeBackend) -> AsyncIterator[MakeController]:
    """Makes controllers on the test's store and backend; closes them afterwards."""
    made: list[Controller] = []

    def make(**settings: Any) -> Controller:
        made.append(make_controller(store, backend, **settings))
        return made[-1]

    yield make
    for controller in reversed(made):
        await controller.close()


@pytest.fixture
def controller(controllers: MakeController) -> Controller:
    return controllers()


async def deployed(controller: Controller, spec: Manifest, version: str = "v1") -> FunctionState:
    return await controller.deploy(release(spec, version), "/src/fn")


async def scaled_to_zero(controller: Controller, backend: FakeBackend) -> FunctionState:
    """A min-0 function that has served nothing, after the autoscaler took it to zero."""
    fs = await deployed(controller, manifest(min=0))
    first = fs.instances[0]
    controller.autoscale_once(time.monotonic() + 1000)
    await eventually(lambda: first.id in backend.removed and backend.prepared, what="scale to 0")
    assert fs.instances == [] and fs.target == 0
    return fs


def ready_except(fs: FunctionState, gone: Instance) -> bool:
    """Whether ``fs`` serves again from an instance other than ``gone``."""
    ready = fs.ready_instances()
    return bool(ready) and gone not in ready
