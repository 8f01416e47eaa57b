"""The fallback builder: the engine's own build API (Podman's Docker-compatible one here)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from plat.daemon.drivers.container.builders import BuildJob
from plat.daemon.drivers.container.builders.engine import (
    OUTSIDE_CONTAINERFILE,
    EngineBuilder,
    build_params,
)
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
