"""The deployer: build (fake artifacts), record in the real store, roll out through a
controller on the in-memory backend; failed builds, redeploys, dev supersede, removal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from plat.daemon.deployer import Deployer
from plat.daemon.serving.controller import Controller, InstanceFailed
from plat.daemon.store import Store
from plat.errors import BuildError, NotFoundError
from plat.manifest import Manifest
from tests.daemon.fakes import (  # noqa: F401 (fixtures)
    FakeArtifacts,
    FakeBackend,
    backend_fixture,
    eventually,
    image_of,
    make_controller,
    make_deployer,
    manifest,
    store_fixture,
)

pytestmark = pytest.mark.timeout(30)  # a hang fails fast, not at the suite's limit


@dataclass
class Rig:
    """A deployer on the fake artifacts, its controller on the fake backend, the store."""

    store: Store
    backend: FakeBackend
    controller: Controller
    artifacts: FakeArtifacts
    deployer: Deployer

    async def deploy(
        self, source: Path, spec: Manifest | None = None, *, dev: bool = False
    ) -> list[Any]:
        """Deploy ``source``; returns the events it emitted."""
        events: list[Any] = []
        await self.deployer.deploy(spec or manifest(), source, events.append, force=False, dev=dev)
        return events

    def serving(self) -> str:
        """The version the controller serves."""
        return self.controller.get("fn").version


@pytest.fixture
async def rig(store: Store, backend: FakeBackend) -> AsyncIterator[Rig]:
    controller = make_controller(store, backend, ready_timeout=0.3)
    artifacts = FakeArtifacts()
    yield Rig(store, backend, controller, artifacts, make_deployer(store, controller, artifacts))
    await controller.close()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_source(tmp_path, "first")


def write_source(root: Path, answer: str) -> Path:
    """The function folder ``fn`` whose handler answers ``answer``."""
    folder = root / "fn"
    folder.mkdir(exist_ok=True)
    (folder / "handler.py").write_text(f"def handle(event, context):\n    return {answer!r}\n")
    return folder


async def test_a_deploy_records_the_version_and_rolls_it_out(rig: Rig, source: Path) -> None:
    events = await rig.deploy(source)
    version = FakeArtifacts.version_of(manifest(), source)
    record = await rig.store.get_version("fn", version)
    assert record is not None
    assert (record.status, record.image, record.builder) == (
        "built",
        image_of("fn", version),
        "fake",
    )
    assert await rig.store.build_log("fn", version) == f"built {version}"
    function = await rig.store.get_function("fn")
    assert function is not None
    assert (function.version, function.source_dir) == (version, str(source.resolve()))
    fs = rig.controller.get("fn")
    assert fs.version == version and len(fs.ready_instances()) == 1
    kinds = [e["type"] for e in events]
    assert kinds[:3] == ["phase", "log", "built"] and kinds[-1] == "done"
    assert {"type": "phase", "phase": "start"} in events
    assert events[-1]["version"] == version and events[-1]["cached"] is False


async def test_a_code_change_rolls_out_a_new_version_and_retires_the_old(
    rig: Rig, tmp_path: Path, source: Path
) -> None:
    await rig.deploy(source)
    [old] = rig.controller.get("fn").instances
    changed = write_source(tmp_path, "second")
    await rig.deploy(changed)
    assert rig.serving() == FakeArtifacts.version_of(manifest(), changed)
    assert old not in rig.controller.get("fn").instances
    await eventually(lambda: old.id in rig.backend.removed, what="the old instance's removal")


async def test_a_failed_build_keeps_the_old_version_and_records_the_failure(
    rig: Rig, tmp_path: Path, source: Path
) -> None:
    await rig.deploy(source)
    old = rig.serving()
    rig.artifacts.failure = "SyntaxError: invalid syntax"
    with pytest.raises(BuildError) as failed:
        await rig.deploy(write_source(tmp_path, "broken"))
    assert failed.value.log_tail == "SyntaxError: invalid syntax"
    assert rig.serving() == old and len(rig.controller.get("fn").ready_instances()) == 1
    assert len(rig.backend.started) == 1
    function = await rig.store.get_function("fn")
    assert function is not None and function.version == old
    [failure] = [v for v in await rig.store.list_versions("fn") if v.status == "failed"]
    assert failure.version.startswith("failed-") and failure.builder == "fake"
    log = await rig.store.build_log("fn", failure.version)
    assert log is not None and "SyntaxError" in log


async def test_a_failed_first_build_leaves_nothing_behind(rig: Rig, source: Path) -> None:
    rig.artifacts.failure = "no handler.py"
    with pytest.raises(BuildError):
        await rig.deploy(source)
    assert "fn" not in rig.controller.functions and rig.backend.started == []
    assert await rig.store.get_function("fn") is None
    assert await rig.store.list_versions("fn") == []


async def test_a_version_that_never_gets_ready_is_recorded_but_not_served(
    rig: Rig, tmp_path: Path, source: Path
) -> None:
    await rig.deploy(source)
    old = rig.serving()
    rig.backend.unready_starts = 1
    changed = write_source(tmp_path, "hangs")
    with pytest.raises(InstanceFailed):
        await rig.deploy(changed)
    new = FakeArtifacts.version_of(manifest(), changed)
    assert await rig.store.get_version("fn", new) is not None  # built: a retry skips the build
    function = await rig.store.get_function("fn")
    assert function is not None and function.version == old
    assert rig.serving() == old


async def test_an_identical_redeploy_says_it_already_serves_that_version(
    rig: Rig, source: Path
) -> None:
    await rig.deploy(source)
    events = await rig.deploy(source)
    assert {"type": "event", "message": "already serving this version"} in events
    assert {"type": "phase", "phase": "start"} not in events
    assert events[-1]["cached"] is True
    assert rig.artifacts.builds == 2 and len(rig.backend.started) == 1


async def test_a_newer_dev_deploy_supersedes_the_one_in_progress(
    rig: Rig, tmp_path: Path, source: Path
) -> None:
    rig.artifacts.gate = asyncio.Event()
    first = asyncio.create_task(rig.deploy(source, dev=True))
    rig.deployer.supersede("fn", first)
    await rig.artifacts.waiting.wait()  # its build is under way
    newer = write_source(tmp_path, "newer")
    second = asyncio.create_task(rig.deploy(newer, dev=True))
    rig.deployer.supersede("fn", second)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(first, timeout=2.0)  # not a TimeoutError: it was cancelled
    rig.artifacts.gate.set()
    await second
    assert rig.serving() == FakeArtifacts.version_of(manifest(), newer)
    assert rig.artifacts.builds == 2 and len(rig.backend.started) == 1


async def test_a_dev_deploy_of_a_code_change_is_served_from_a_mount_without_a_build(
    rig: Rig, source: Path
) -> None:
    rig.artifacts.hot_mounts = True
    events = await rig.deploy(source, dev=True)
    fs = rig.controller.get("fn")
    assert rig.artifacts.builds == 0 and fs.version.startswith("dev-")
    assert fs.release.mounts == {str(source): "/home/app"}
    record = await rig.store.get_version("fn", fs.version)
    assert record is not None and record.mounts == {str(source): "/home/app"}
    built = next(e for e in events if e["type"] == "built")
    assert built["hot"] is True


async def test_a_failed_dev_install_is_recorded_as_a_failed_build(
    rig: Rig, tmp_path: Path, source: Path
) -> None:
    await rig.deploy(source)
    old = rig.serving()
    rig.artifacts.hot_mounts = True
    rig.artifacts.failure = "ERROR: No matching distribution found for nope==9"
    with pytest.raises(BuildError):
        await rig.deploy(write_source(tmp_path, "newer"), dev=True)
    assert rig.serving() == old
    [failure] = [v for v in await rig.store.list_versions("fn") if v.status == "failed"]
    log = await rig.store.build_log("fn", failure.version)
    assert log is not None and "No matching distribution" in log


async def test_remove_removes_the_function_and_forgets_its_artifacts(
    rig: Rig, source: Path
) -> None:
    await rig.deploy(source)
    await rig.deployer.remove("fn")
    assert rig.artifacts.forgotten == ["fn"] and rig.backend.alive() == []
    assert "fn" not in rig.controller.functions and await rig.store.get_function("fn") is None
    with pytest.raises(NotFoundError):
        await rig.deployer.remove("fn")
    assert rig.artifacts.forgotten == ["fn"]  # nothing to forget for an unknown function


async def test_remove_during_a_dev_deploy_leaves_no_function_behind(rig: Rig, source: Path) -> None:
    await rig.deploy(source)
    rig.artifacts.gate = asyncio.Event()
    rollout = asyncio.create_task(rig.deploy(source, manifest(min=2), dev=True))
    rig.deployer.supersede("fn", rollout)
    await rig.artifacts.waiting.wait()
    removal = asyncio.create_task(rig.deployer.remove("fn"))
    await asyncio.sleep(0.01)
    rig.artifacts.gate.set()
    await asyncio.gather(rollout, return_exceptions=True)
    await removal
    assert "fn" not in rig.controller.functions and await rig.store.get_function("fn") is None
    await eventually(lambda: rig.backend.alive() == [], what="every instance's stop")
    assert rig.artifacts.forgotten == ["fn"]


async def test_remove_cancels_a_dev_deploy_stuck_in_its_build(rig: Rig, source: Path) -> None:
    await rig.deploy(source)
    rig.artifacts.gate = asyncio.Event()  # never set: the build never ends
    rollout = asyncio.create_task(rig.deploy(source, manifest(min=2), dev=True))
    rig.deployer.supersede("fn", rollout)
    await rig.artifacts.waiting.wait()
    await asyncio.wait_for(rig.deployer.remove("fn"), timeout=2.0)
    with pytest.raises(asyncio.CancelledError):
        await rollout
    assert "fn" not in rig.controller.functions and await rig.store.get_function("fn") is None
    assert rig.artifacts.forgotten == ["fn"]
