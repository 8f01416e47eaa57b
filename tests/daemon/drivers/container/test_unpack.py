"""plat.daemon.drivers.container.unpack: a version's files laid out on the host for the
pool, from its build (code) and its stack (dependencies), or from its image.

Real builds with Buildah, real exports over a Podman service of the test's own.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from plat.daemon.drivers.container.build import ImageBuilder
from plat.daemon.drivers.container.builders.buildah import BuildahBuilder
from plat.daemon.drivers.container.unpack import STACKS, STAGED, STAGED_KEEP, ImageUnpacker
from plat.daemon.drivers.versions import Layout, Release
from plat.engine import PodmanService
from plat.manifest import Manifest

pytestmark = pytest.mark.container

REQUIREMENTS = "# nothing to install\n"


def function(root: Path, name: str, body: str = "hi") -> Path:
    folder = root / "src" / name
    folder.mkdir(parents=True)
    (folder / "handler.py").write_text(f"def handle(e, c):\n    return {body!r}\n")
    (folder / "lib").mkdir()
    (folder / "lib" / "util.py").write_text("X = 1\n")
    os.symlink("lib/util.py", folder / "util_link.py")
    (folder / "requirements.txt").write_text(REQUIREMENTS)
    (folder / "plat.yaml").write_text(f"name: {name}\nruntime: python\n")
    return folder


def tree(root: Path) -> dict[str, object]:
    """Every entry under ``root``: a link's target, a file's bytes and mode, a folder's mode."""
    seen: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                seen[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                seen[rel] = ("dir", path.stat().st_mode & 0o777)
            else:
                seen[rel] = (path.read_bytes(), path.stat().st_mode & 0o777)
    return seen


class Rig:
    def __init__(self, tmp_path: Path, endpoint: str) -> None:
        self.tmp_path = tmp_path
        self.unpacker = ImageUnpacker(endpoint, tmp_path / "unpacked")
        self.images = ImageBuilder(
            BuildahBuilder(endpoint),
            tmp_path / "builds",
            {},
            tmp_path / "dev",
            self.unpacker.adopt,
        )
        self.tags: list[str] = []

    async def release(self, name: str, body: str = "hi") -> Release:
        manifest = Manifest(name=name, runtime="python")
        outcome = await self.images.build(manifest, function(self.tmp_path, name, body), print)
        self.tags.append(outcome.image)
        return Release(manifest, outcome.version, outcome.image)


@pytest.fixture
async def rig(tmp_path: Path, podman_service: PodmanService) -> AsyncIterator[Rig]:
    rig = Rig(tmp_path, podman_service.endpoint)
    try:
        yield rig
    finally:
        await rig.unpacker.close()
        subprocess.run(["podman", "rmi", "-f", *rig.tags], capture_output=True)


def stack_of(image: str) -> str:
    out = subprocess.run(
        ["podman", "image", "inspect", "--format", '{{index .Labels "plat.stack"}}', image],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


async def test_a_stack_build_is_laid_out_from_its_code_without_its_image(
    rig: Rig, podman_service: PodmanService
) -> None:
    release = await rig.release("laid")
    (staged,) = (rig.tmp_path / "unpacked" / STAGED).iterdir()  # the build's code, kept
    assert (staged / "app" / "handler.py").is_file()
    assert rig.unpacker.layout(release) is None  # not laid out until prepared
    # What the image holds, exported from it by an unpacker that was handed nothing.
    exported = ImageUnpacker(podman_service.endpoint, rig.tmp_path / "exported")
    try:
        from_image = await exported.prepare(release)
    finally:
        await exported.close()
    assert from_image is not None and from_image.deps is not None

    # The version's own image is not needed: its code is the build's, its
    # dependencies its stack's.
    subprocess.run(["podman", "untag", release.image], check=True, capture_output=True)
    layout = await rig.unpacker.prepare(release)
    assert layout is not None and layout.deps is not None
    assert tree(layout.app) == tree(from_image.app)
    assert tree(layout.deps) == tree(from_image.deps)
    assert (layout.deps / "requirements.txt").read_text() == REQUIREMENTS
    assert layout.deps.parent.parent.name == STACKS
    assert rig.unpacker.layout(release) == layout
    assert not any((rig.tmp_path / "unpacked" / STAGED).iterdir())


async def test_functions_on_one_stack_share_its_dependencies_until_none_is_deployed(
    rig: Rig,
) -> None:
    a = await rig.release("a", "from a")
    b = await rig.release("b", "from b")
    assert stack_of(a.image) == stack_of(b.image)
    la, lb = await rig.unpacker.prepare(a), await rig.unpacker.prepare(b)
    assert la is not None and lb is not None
    assert la.deps == lb.deps and la.deps is not None
    assert "from a" in (la.app / "handler.py").read_text()
    assert "from b" in (lb.app / "handler.py").read_text()

    rig.unpacker.retain([b])
    assert not la.app.exists() and lb.app.is_dir() and lb.deps is not None and lb.deps.is_dir()
    assert rig.unpacker.layout(a) is None and rig.unpacker.layout(b) == lb
    rig.unpacker.retain([])
    assert not lb.app.exists() and not lb.deps.exists()
    assert rig.unpacker.layout(b) is None
    # Laid out again, the stack's dependencies come back from the stack image.
    again = await rig.unpacker.prepare(b)
    assert again is not None and again.deps is not None
    assert (again.deps / "requirements.txt").read_text() == REQUIREMENTS


async def test_a_layout_whose_stack_went_away_is_unpacked_from_the_image(rig: Rig) -> None:
    release = await rig.release("orphan")
    subprocess.run(["podman", "untag", stack_of(release.image)], check=True, capture_output=True)
    layout = await rig.unpacker.prepare(release)
    assert layout is not None and layout.deps is not None
    assert layout.deps.parent == layout.app.parent  # the image's own export
    assert (layout.deps / "requirements.txt").read_text() == REQUIREMENTS
    assert "'hi'" in (layout.app / "handler.py").read_text()


async def test_code_kept_for_a_version_never_deployed_goes_after_a_while(rig: Rig) -> None:
    await rig.release("never")
    staged = rig.tmp_path / "unpacked" / STAGED
    (kept,) = staged.iterdir()
    # Another function's build clears what waited longer than STAGED_KEEP.
    old = time.time() - STAGED_KEEP - 1
    os.utime(kept, (old, old))
    await rig.release("later")
    (remaining,) = staged.iterdir()
    assert not kept.exists() and "later" in remaining.name


async def test_a_build_whose_code_cannot_be_kept_is_unpacked_from_its_image(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    # The staging folder is a file: adopting fails, the build does not.
    (rig.tmp_path / "unpacked").mkdir()
    (rig.tmp_path / "unpacked" / STAGED).write_text("in the way")
    release = await rig.release("unkept")
    assert "keeping the code of" in caplog.text
    layout = await rig.unpacker.prepare(release)
    assert isinstance(layout, Layout) and layout.deps is not None
    assert layout.deps.parent == layout.app.parent
    assert "'hi'" in (layout.app / "handler.py").read_text()
