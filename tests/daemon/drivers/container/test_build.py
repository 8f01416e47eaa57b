"""plat.daemon.drivers.container.build: the build context of a function folder (no links followed).

The builder is a recording fake (the seam is the ``Builder`` protocol); the base image
is resolved for real. Real builds run in tests/commands/test_deploy.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from plat.daemon.drivers.container.build import (
    CODE_STEP,
    GENERATED_CONTAINERFILE,
    STACK_CONTAINERFILE,
    ImageBuilder,
    split_stack,
)
from plat.daemon.drivers.container.builders import BuildJob, Image
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
        self.jobs: list[BuildJob] = []
        self.built: set[str] = set()
        self.removed: list[str] = []

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
        self.jobs.append(job)
        self.built.add(job.tag)

    async def remove_image(self, tag: str) -> None:
        self.built.discard(tag)
        self.removed.append(tag)

    async def labelled(self, label: str) -> list[Image]:
        key, _, value = label.partition("=")
        return [
            Image((job.tag,), float(i))
            for i, job in enumerate(self.jobs)
            if job.labels.get(key) == value and job.tag in self.built
        ]


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
    _stack, context = recorder.contexts
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


# Stacks: everything below the code is one image shared between functions.


def test_split_stack_takes_the_code_step_and_settings_off_the_end() -> None:
    text = "FROM base\nENV A=1\nCOPY app/ /home/app/\n# the user\nUSER 10001:10001\n"
    assert split_stack(text) == ("FROM base\nENV A=1\n", f"{CODE_STEP}\nUSER 10001:10001")
    assert split_stack("FROM base\nCOPY app/ /home/app/\n") == ("FROM base\n", CODE_STEP)
    assert split_stack("FROM base\nCOPY app/ /home/app/\nRUN make\n") is None
    assert split_stack("FROM base\nCOPY app/ /srv/\n") is None


async def test_a_function_is_its_stack_and_its_code(
    tmp_path: Path, images: tuple[ImageBuilder, RecordingBuilder]
) -> None:
    builder, recorder = images
    lines: list[str] = []
    outcome = await builder.build(MANIFEST, function(tmp_path), lines.append)
    stack_job, code_job = recorder.jobs
    assert stack_job.tag.startswith("localhost/plat/stack-python:")
    assert stack_job.containerfile.name == STACK_CONTAINERFILE
    assert code_job.tag == outcome.image
    assert code_job.containerfile.name == GENERATED_CONTAINERFILE
    stack_text, code_text = (
        recorder.contexts[i][job.containerfile.name] for i, job in enumerate(recorder.jobs)
    )
    assert code_text == f"FROM {stack_job.tag}\n{CODE_STEP}\nUSER 10001:10001\n".encode()
    assert isinstance(stack_text, bytes)
    steps = [line for line in stack_text.decode().splitlines() if not line.startswith("#")]
    assert CODE_STEP not in steps and "USER 10001:10001" not in steps
    # The code step is one commit with the function's label, no cache lookup.
    assert code_job.labels == {"plat.function": "fn", "plat.stack": stack_job.tag}
    assert not code_job.layers
    assert not stack_job.layers and not stack_job.labels  # one commit each
    assert not code_job.volumes and not code_job.build_args


async def test_functions_with_the_same_dependencies_share_one_stack(
    tmp_path: Path, images: tuple[ImageBuilder, RecordingBuilder]
) -> None:
    builder, recorder = images
    await builder.build(Manifest(name="a", runtime="python"), function(tmp_path, "a"), print)
    lines: list[str] = []
    await builder.build(Manifest(name="b", runtime="python"), function(tmp_path, "b"), lines.append)
    tags = [job.tag for job in recorder.jobs]
    assert len(tags) == 3 and tags[0].startswith("localhost/plat/stack-python:")
    assert tags[1:] == [
        "localhost/plat/a:" + tags[1].rpartition(":")[2],
        "localhost/plat/b:" + tags[2].rpartition(":")[2],
    ]
    assert f"stack image {tags[0]} is up to date" in lines

    # Other dependencies, another stack; the stack goes again if it was removed.
    other = function(tmp_path, "c")
    (other / "requirements.txt").write_text("humanize\n")
    await builder.build(Manifest(name="c", runtime="python"), other, print)
    assert recorder.jobs[3].tag.startswith("localhost/plat/stack-python:")
    assert recorder.jobs[3].tag != tags[0]
    await recorder.remove_image(tags[0])
    await builder.build(Manifest(name="d", runtime="python"), function(tmp_path, "d"), print)
    assert recorder.jobs[5].tag == tags[0]


async def test_a_function_keeps_its_newest_images_and_rm_removes_them_all(
    tmp_path: Path, images: tuple[ImageBuilder, RecordingBuilder]
) -> None:
    builder, recorder = images
    folder = function(tmp_path)
    manifest = Manifest(name="fn", runtime="python")
    other = Manifest(name="other", runtime="python")
    await builder.build(other, function(tmp_path, "other"), print)
    tags: list[str] = []
    for n in range(5):
        (folder / "handler.py").write_text(f"def handle(e, c):\n    return {n}\n")
        tags.append((await builder.build(manifest, folder, print)).image)
        await builder.retention.wait()
    # The three newest stay; the older two are gone; the stack and the other
    # function's image are not this function's.
    assert recorder.removed == tags[:2]
    assert all(tag in recorder.built for tag in tags[2:])
    stack = recorder.jobs[0].tag
    assert stack in recorder.built and stack.startswith("localhost/plat/stack-python:")
    await builder.forget("fn")
    assert sorted(recorder.removed) == sorted(tags)
    assert {t for t in recorder.built if "/other:" in t}  # another function's stays


async def test_a_pruned_image_is_never_the_base_of_a_code_only_change(
    tmp_path: Path, images: tuple[ImageBuilder, RecordingBuilder]
) -> None:
    builder, _ = images
    folder = function(tmp_path)
    manifest = Manifest(name="fn", runtime="python")
    first = await builder.build(manifest, folder, print)
    assert (await builder.hot(manifest, folder)) is not None
    for n in range(3):  # three dependency changes: the first image is pruned
        (folder / "requirements.txt").write_text(f"pkg{n}\n")
        await builder.build(manifest, folder, print)
        await builder.retention.wait()
    (folder / "requirements.txt").unlink()
    assert first.image not in builder.dev._verified
    assert (await builder.hot(manifest, folder)) is None  # a real build, not a mount


async def test_only_the_stack_build_sees_host_settings(
    tmp_path: Path,
) -> None:
    recorder = RecordingBuilder()
    env = {"PIP_INDEX_URL": "http://mirror.invalid/simple"}
    builder = ImageBuilder(recorder, tmp_path / "builds", env, tmp_path / "dev")
    await builder.build(MANIFEST, function(tmp_path), print)
    stack_job, code_job = recorder.jobs
    assert stack_job.build_args == env and stack_job.volumes
    assert not code_job.build_args and not code_job.volumes
