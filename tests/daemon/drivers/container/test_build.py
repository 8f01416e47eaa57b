"""plat.daemon.drivers.container.build: the build context of a function folder (no links followed).

The builder is a recording fake (the seam is the ``Builder`` protocol); the base image
is resolved for real. Real builds run in tests/commands/test_deploy.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from plat.daemon.drivers.container.build import ImageBuilder
from plat.daemon.drivers.container.builders import BuildJob
from plat.daemon.drivers.versions import LineSink
from plat.ignore import UnsafeFolderError
from plat.manifest import Manifest

pytestmark = pytest.mark.container  # resolves the runtime's base image in local storage

SECRET = "top-secret-outside-the-folder"


class RecordingBuilder:
    """Keeps what each build's context held: {relative path: ("link", target) | bytes}."""

    name = "recording"

    def __init__(self) -> None:
        self.contexts: list[dict[str, object]] = []
        self.built: set[str] = set()

    async def image_exists(self, tag: str) -> bool:
        return tag in self.built

    async def build(self, job: BuildJob, on_line: LineSink) -> None:
        seen: dict[str, object] = {}
        for dirpath, dirnames, filenames in os.walk(job.context):
            for name in filenames + dirnames:
                path = Path(dirpath) / name
                rel = path.relative_to(job.context).as_posix()
                if path.is_symlink():
                    seen[rel] = ("link", os.readlink(path))
                elif path.is_file():
                    seen[rel] = path.read_bytes()
        self.contexts.append(seen)
        self.built.add(job.tag)

    async def remove_image(self, tag: str) -> None:
        self.built.discard(tag)


def secret_outside(root: Path) -> Path:
    path = root / "secret.txt"
    path.write_text(SECRET)
    return path


def function(root: Path, name: str = "fn") -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "handler.py").write_text("def handle(e, c):\n    return 'hi'\n")
    (folder / "plat.yaml").write_text(f"name: {name}\nruntime: python\n")
    return folder


@pytest.fixture
def images(tmp_path: Path) -> tuple[ImageBuilder, RecordingBuilder]:
    recorder = RecordingBuilder()
    return ImageBuilder(recorder, tmp_path / "builds", {}, tmp_path / "dev"), recorder


MANIFEST = Manifest(name="fn", runtime="python")


async def test_link_out_of_the_folder_is_refused_before_any_build(
    tmp_path: Path, images: tuple[ImageBuilder, RecordingBuilder]
) -> None:
    builder, recorder = images
    folder = function(tmp_path)
    (folder / "shadow").symlink_to("/etc/shadow")
    (folder / "notes.txt").symlink_to(secret_outside(tmp_path))
    with pytest.raises(UnsafeFolderError) as info:
        await builder.build(MANIFEST, folder, lambda line: None)
    assert "shadow -> /etc/shadow (leaves the folder)" in info.value.message
    assert f"notes.txt -> {tmp_path / 'secret.txt'} (leaves the folder)" in info.value.message
    assert recorder.contexts == []
    assert not (tmp_path / "builds").exists() or not any((tmp_path / "builds").iterdir())


async def test_dependency_file_linking_out_is_refused(
    tmp_path: Path, images: tuple[ImageBuilder, RecordingBuilder]
) -> None:
    builder, recorder = images
    (function(tmp_path) / "requirements.txt").symlink_to(secret_outside(tmp_path))
    folder = tmp_path / "fn"
    with pytest.raises(UnsafeFolderError, match=r"requirements\.txt"):
        await builder.build(MANIFEST, folder, lambda line: None)
    with pytest.raises(UnsafeFolderError, match=r"requirements\.txt"):
        await builder.deps_key(MANIFEST, folder)
    assert recorder.contexts == []


async def test_links_inside_stay_links_in_the_context(
    tmp_path: Path, images: tuple[ImageBuilder, RecordingBuilder]
) -> None:
    builder, recorder = images
    folder = function(tmp_path)
    (folder / "lib").mkdir()
    (folder / "lib" / "util.py").write_text("X = 1\n")
    (folder / "alias.py").symlink_to(folder / "lib" / "util.py")  # absolute, inside
    (folder / "libs").symlink_to("lib", target_is_directory=True)
    (folder / "reqs.txt").write_text("# nothing\n")
    (folder / "requirements.txt").symlink_to("reqs.txt")
    await builder.build(MANIFEST, folder, lambda line: None)
    [context] = recorder.contexts
    assert context["app/alias.py"] == ("link", "lib/util.py")
    assert context["app/libs"] == ("link", "lib")
    assert context["app/lib/util.py"] == b"X = 1\n"
    # The dependency layer gets the content (COPY of a lone file cannot keep a link).
    assert context["deps/requirements.txt"] == b"# nothing\n"


async def test_dev_snapshot_refuses_links_out_and_keeps_links_in(
    tmp_path: Path, images: tuple[ImageBuilder, RecordingBuilder]
) -> None:
    builder, _recorder = images
    folder = function(tmp_path)
    await builder.build(MANIFEST, folder, lambda line: None)  # the image the hot path reuses
    (folder / "lib.py").write_text("Y = 2\n")
    (folder / "alias.py").symlink_to("lib.py")
    outcome = await builder.hot(MANIFEST, folder)
    assert outcome is not None
    [snapshot] = outcome.mounts
    assert os.readlink(Path(snapshot) / "alias.py") == "lib.py"
    (folder / "leak.txt").symlink_to(secret_outside(tmp_path))
    with pytest.raises(UnsafeFolderError, match=r"leak\.txt"):
        await builder.hot(MANIFEST, folder)
    for path in (tmp_path / "dev").rglob("*"):
        assert not path.is_file() or SECRET not in path.read_text(errors="replace")
