"""The pre-warmed pool's pure parts (which releases it can serve, laying out files),
and its clean-up when the engine is away, against a narrow fake backend."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from plat.daemon.drivers.base import InstanceSpec, RunningInstance
from plat.daemon.drivers.container.unpack import ImageUnpacker
from plat.daemon.drivers.secretvalue import SecretValue
from plat.daemon.drivers.versions import Layout, Release
from plat.daemon.serving.links import link_layout, make_folders
from plat.daemon.serving.pool import WarmPool, pool_key
from plat.errors import EngineError
from plat.manifest import validate_manifest
from tests.daemon.fakes import FakeBackend, FakeSources, eventually


def _release(runtime: str, mounts: dict[str, str] | None = None, **extra: object) -> Release:
    manifest = validate_manifest({"name": "fn", "runtime": runtime, **extra})
    return Release(manifest, "v1", "localhost/plat/fn:v1", mounts or {})


def test_template_runtimes_have_a_pool_key_by_runtime_and_limits() -> None:
    small = pool_key(_release("python", resources={"memory": "128Mi", "cpu": 0.5}))
    default = pool_key(_release("python"))
    assert small is not None and default is not None
    assert small != default
    assert small.label == "python/128Mi/0.5cpu/256pids"
    assert pool_key(_release("node")) == pool_key(_release("node"))


def test_a_dockerfile_function_cannot_be_specialised() -> None:
    assert pool_key(_release("dockerfile")) is None


def _tenant_release(key: str, **secrets: bytes) -> Release:
    manifest = validate_manifest({"name": key, "runtime": "python"}, qualified=True)
    values = {name: SecretValue(value) for name, value in secrets.items()}
    return Release(manifest, "v1", f"localhost/plat/{key}:v1", secrets=values)


def test_each_tenant_has_pools_of_its_own() -> None:
    default, acme, acme2 = (
        pool_key(_tenant_release(key)) for key in ("fn", "fn.acme", "other.acme")
    )
    assert default is not None and acme is not None
    assert (default.tenant, acme.tenant) == ("default", "acme")
    assert default != acme and acme == acme2  # one pool for a tenant's functions of one shape
    assert default.label == "python/256Mi/1cpu/256pids"  # as before tenants
    assert acme.label == "python/256Mi/1cpu/256pids@acme"


def test_a_release_with_secrets_is_not_pooled() -> None:
    assert pool_key(_tenant_release("fn.acme", token=b"t0p")) is None
    assert pool_key(_tenant_release("fn", token=b"t0p")) is None


def test_link_layout_hard_links_files_and_keeps_symlinks(tmp_path: Path) -> None:
    app = tmp_path / "src" / "app"
    (app / "pkg").mkdir(parents=True)
    (app / "handler.py").write_text("def handle(e, c): return 'ok'\n")
    (app / "pkg" / "mod.py").write_text("X = 1\n")
    deps = tmp_path / "src" / "deps"
    (deps / "node_modules" / "left-pad").mkdir(parents=True)
    (deps / "node_modules" / "left-pad" / "index.js").write_text("module.exports = 1\n")
    (deps / "node_modules" / ".bin").mkdir()
    os.symlink("../left-pad/index.js", deps / "node_modules" / ".bin" / "left-pad")
    os.symlink("left-pad", deps / "node_modules" / "alias")

    target = tmp_path / "instance"
    make_folders(target)
    link_layout(Layout(app, deps), target)

    linked = target / "app" / "handler.py"
    assert linked.read_text().startswith("def handle")
    assert os.stat(linked).st_ino == os.stat(app / "handler.py").st_ino  # a link, not a copy
    assert (target / "app" / "pkg" / "mod.py").read_text() == "X = 1\n"
    assert os.readlink(target / "deps" / "node_modules" / ".bin" / "left-pad") == (
        "../left-pad/index.js"
    )
    assert os.readlink(target / "deps" / "node_modules" / "alias") == "left-pad"
    assert oct(os.stat(target / "app" / "pkg").st_mode & 0o777) == oct(0o755)


def test_link_layout_without_dependencies_leaves_deps_empty(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "handler.py").write_text("")
    make_folders(tmp_path / "inst")
    link_layout(Layout(app, None), tmp_path / "inst")
    assert list((tmp_path / "inst" / "deps").iterdir()) == []


def test_unpacked_layout_appears_only_when_done_and_dev_code_comes_from_the_mount(
    tmp_path: Path,
) -> None:
    unpacker = ImageUnpacker("unix:///nonexistent.sock", tmp_path)
    release = _release("python")
    assert unpacker.layout(release) is None
    folder = tmp_path / "localhost_plat_fn_v1"
    (folder / "app").mkdir(parents=True)
    assert unpacker.layout(release) is None  # still being unpacked
    (folder / "done").touch()
    assert unpacker.layout(release) == Layout(folder / "app", None)
    (folder / "deps").mkdir()
    snapshot = tmp_path / "dev" / "abc"
    dev = _release("python", mounts={str(snapshot): "/home/app"})
    assert unpacker.layout(dev) == Layout(snapshot, folder / "deps")


def test_unpacked_images_stay_while_a_deployed_version_uses_them(tmp_path: Path) -> None:
    unpacker = ImageUnpacker("unix:///nonexistent.sock", tmp_path)
    kept = _release("python")
    gone = Release(kept.manifest, "v0", "localhost/plat/old:v0")
    for release in (kept, gone):
        folder = tmp_path / release.image.replace("/", "_").replace(":", "_")
        (folder / "app").mkdir(parents=True)
        (folder / "done").touch()
    (tmp_path / ".localhost_plat_new_v2.tmp").mkdir()  # being unpacked right now
    unpacker.retain([kept])
    assert unpacker.layout(kept) is not None
    assert unpacker.layout(gone) is None
    assert (tmp_path / ".localhost_plat_new_v2.tmp").is_dir()


class AwayEngine:
    """Starts instances that never answer; while ``down``, every other call fails."""

    name = "away"

    def __init__(self) -> None:
        self.down = False
        self.started: list[str] = []
        self.removed: list[str] = []

    async def start(self, spec: InstanceSpec, instance_id: str) -> RunningInstance:
        with socket.socket() as sock:  # a port nothing listens on
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.started.append(instance_id)
        return RunningInstance(
            instance_id, spec.function, spec.version, "127.0.0.1", port, instance_id
        )

    def _call(self) -> None:
        if self.down:
            raise EngineError("container engine at unix:///away.sock failed: refused")

    async def is_alive(self, instance: RunningInstance) -> bool:
        self._call()
        return True

    async def stop(self, instance: RunningInstance, timeout: float = 5.0) -> None:
        self._call()

    async def remove(self, instance: RunningInstance) -> None:
        self._call()
        self.removed.append(instance.id)


class NoSources:
    def layout(self, release: Release) -> Layout | None:
        return None

    async def prepare(self, release: Release) -> Layout | None:
        return None

    def retain(self, releases: list[Release]) -> None:
        return None


async def test_a_pool_instance_that_cannot_be_removed_while_the_engine_is_away_is_swept_later(
    tmp_path: Path,
) -> None:
    engine = AwayEngine()

    async def image_for(runtime: str) -> str:
        return "localhost/plat/pool:v1"

    async with aiohttp.ClientSession() as session:
        pool = WarmPool(
            engine,  # type: ignore[arg-type]
            NoSources(),
            image_for,
            tmp_path / "pool",
            size=1,
            session=lambda: session,
            link=False,
        )
        await pool.start()
        engine.down = True  # the instance is waited for, the engine dies: it cannot be removed
        pool.want([_release("python")])
        for _ in range(200):
            await asyncio.sleep(0.01)
            if engine.started and not pool.states()[0][2]:  # no longer starting
                break
        assert engine.started and engine.removed == []
        await pool.sweep()  # still away: kept for the next sweep
        assert engine.removed == []
        engine.down = False
        await pool.sweep()
        assert engine.removed == engine.started
        await pool.sweep()
        assert engine.removed == engine.started  # removed once
        await pool.close()


@contextlib.asynccontextmanager
async def pool_of_one(tmp_path: Path, backend: FakeBackend) -> AsyncIterator[WarmPool]:
    """A started pool of one member per key on ``backend``, closed afterwards."""

    async def image_for(runtime: str) -> str:
        return "localhost/plat/pool:v1"

    async with aiohttp.ClientSession() as session:
        pool = WarmPool(
            backend,
            FakeSources(tmp_path / "app"),
            image_for,
            tmp_path / "pool",
            size=1,
            session=lambda: session,
            link=False,
        )
        await pool.start()
        try:
            yield pool
        finally:
            await pool.close()


async def test_a_member_starts_for_its_tenant_and_only_that_tenants_functions_claim_it(
    tmp_path: Path, backend: FakeBackend
) -> None:
    async with pool_of_one(tmp_path, backend) as pool:
        pool.want([_tenant_release("fn.acme")])
        await eventually(lambda: pool.states()[0].ready == 1, what="acme's member")
        (member,) = backend.instances.values()
        assert (member.spec.tenant, member.spec.function) == ("acme", "pool-python")

        assert await pool.claim(_tenant_release("fn"), {}, "handler.handle") is None
        assert await pool.claim(_tenant_release("fn.beta"), {}, "handler.handle") is None
        secret = _tenant_release("fn.acme", token=b"t0p")
        assert await pool.claim(secret, {}, "handler.handle") is None
        assert member.requests == []  # none of them specialised it

        claimed = await pool.claim(_tenant_release("other.acme"), {}, "handler.handle")
        assert claimed is not None
        assert (claimed.id, claimed.function) == (member.running.id, "other.acme")
        assert member.requests == ["POST /.plat/specialize HTTP/1.1"]
        await backend.remove(claimed)  # what the controller does with it at the end
        # The claims that missed asked for members of their own tenants' pools.
        await eventually(
            lambda: [(p.ready, p.starting) for p in pool.states()] == [(1, 0)] * 3,
            what="the refills",
        )
        assert sorted(f.spec.tenant for f in backend.alive()) == ["acme", "beta", "default"]


async def test_members_wait_for_a_start_someone_waits_for_unless_a_claim_waits_for_them(
    tmp_path: Path, backend: FakeBackend
) -> None:
    async with pool_of_one(tmp_path, backend) as pool:
        with pool.foreground.start():  # a deploy's instance is starting
            pool.want([_release("python")])
            await asyncio.sleep(0.5)
            assert backend.instances == {}  # the refill waits for it
        await eventually(lambda: pool.states()[0].ready == 1, what="the member, after it")

        other = _release("python", resources={"memory": "128Mi"})
        with pool.foreground.start():
            pool.want([_release("python"), other])
            await asyncio.sleep(0.3)
            assert len(backend.instances) == 1
            # A cold start of that key claims: someone waits for its member now.
            claimed = await pool.claim(other, {}, "handler.handle")
            assert claimed is not None and claimed.function == "fn"
