"""The fallback builder: the engine's own build API (Podman's Docker-compatible one here)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from plat.daemon.drivers.container.builders import BuildJob
from plat.daemon.drivers.container.builders.buildah import BuildahBuilder
from plat.daemon.drivers.container.builders.engine import (
    OUTSIDE_CONTAINERFILE,
    EngineBuilder,
    build_params,
)
from plat.daemon.drivers.container.engine import Engine
from plat.engine import PodmanService
from tests.fixtures import PlatRunner
from tests.functions import write_python_function


def test_build_params(tmp_path: Path) -> None:
    inside = BuildJob(tmp_path, tmp_path / "sub" / "Containerfile", "localhost/plat/x:1")
    assert build_params(inside) == {
        "t": "localhost/plat/x:1",
        "dockerfile": "sub/Containerfile",
        "rm": "1",
        "forcerm": "1",
        "pull": "0",
    }
    outside = BuildJob(
        tmp_path / "context",
        tmp_path / "Containerfile",
        "localhost/plat/x:1",
        labels={"plat.function": "x"},
        build_args={"PIP_INDEX_URL": "http://mirror/simple"},
    )
    params = build_params(outside)
    assert params["dockerfile"] == OUTSIDE_CONTAINERFILE
    assert json.loads(params["labels"]) == {"plat.function": "x"}
    assert json.loads(params["buildargs"]) == {"PIP_INDEX_URL": "http://mirror/simple"}


@pytest.mark.container
async def test_a_containerfile_from_outside_the_context_is_sent_with_it(
    podman_service: PodmanService, server_image: str, tmp_path: Path
) -> None:
    context = tmp_path / "context"
    context.mkdir()
    (context / "note.txt").write_text("from the context\n")
    containerfile = tmp_path / "Containerfile"
    containerfile.write_text(f"FROM {server_image}\nCOPY note.txt /note.txt\nRUN cat /note.txt\n")
    tag = f"localhost/plat-test/outside:{uuid.uuid4().hex[:8]}"
    builder = EngineBuilder(podman_service.endpoint)
    lines: list[str] = []
    await builder.build(BuildJob(context, containerfile, tag), lines.append)
    assert "from the context" in lines
    assert await builder.image_exists(tag)
    await builder.remove_image(tag)
    assert not await builder.image_exists(tag)
    await builder.remove_image(tag)  # gone already: no error


@pytest.mark.container
def test_engine_build_api_builds_and_serves(fresh_plat: PlatRunner, tmp_path: Path) -> None:
    plat = fresh_plat
    plat.env["PLAT_BUILDER"] = "engine"
    name = f"viaengine-{uuid.uuid4().hex[:8]}"  # no image from an earlier run to reuse
    fn = write_python_function(tmp_path, name, "def handle(e, c):\n    return 'engine-built'\n")
    proc = plat.run("deploy", str(fn), "-v")
    assert "STEP" in proc.stderr or "Step" in proc.stderr
    assert plat.run("invoke", name).stdout == "engine-built"
    assert json.loads(plat.run("daemon", "status", "--json").stdout)["builder"] == "engine"
    # A failing step is reported the same way as with buildah.
    (fn / "requirements.txt").write_text("this-package-does-not-exist-plat==0.0.1\n")
    failed = plat.run("deploy", str(fn), check=False)
    assert failed.returncode == 1
    assert "build log" in failed.stderr
    assert "Traceback" not in failed.stderr


@pytest.mark.container
@pytest.mark.parametrize("through", ["engine", "buildah", "buildah-cli"])
async def test_images_are_listed_by_label_and_one_in_use_stays(
    podman_service: PodmanService, server_image: str, tmp_path: Path, through: str
) -> None:
    """Both builders list a function's images by label and remove them; an image a
    container uses is left as it is, with no error."""
    context = tmp_path / "context"
    context.mkdir()
    containerfile = context / "Containerfile"
    containerfile.write_text(f"FROM {server_image}\n")
    label = f"plat.function=listed-{uuid.uuid4().hex[:8]}"
    builder: EngineBuilder | BuildahBuilder = (
        EngineBuilder(podman_service.endpoint)
        if through == "engine"
        else BuildahBuilder(podman_service.endpoint if through == "buildah" else None)
    )
    tags = [f"localhost/plat-test/listed:{n}-{uuid.uuid4().hex[:6]}" for n in range(2)]
    key, _, value = label.partition("=")
    for n, tag in enumerate(tags):  # two images (not one with two tags)
        job = BuildJob(context, containerfile, tag, {key: value, "n": str(n)})
        await builder.build(job, lambda _: None)
    listed = await builder.labelled(label)
    assert sorted(t for image in listed for t in image.tags) == sorted(tags)
    assert all(image.created > 1.7e9 for image in listed)
    assert await builder.labelled(f"{key}=nobody-{uuid.uuid4().hex}") == []

    async with Engine(podman_service.endpoint) as engine:
        used = await engine.create({"Image": tags[0], "Cmd": ["true"]})
        try:
            await builder.remove_image(tags[0])  # in use: stays
            await builder.remove_image(tags[1])
            assert [image.tags for image in await builder.labelled(label)] == [(tags[0],)]
        finally:
            await engine.remove(used)
    await builder.remove_image(tags[0])
    assert await builder.labelled(label) == []
