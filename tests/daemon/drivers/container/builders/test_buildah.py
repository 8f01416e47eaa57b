"""plat.daemon.drivers.container.builders.buildah: `buildah build` command lines, failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from plat.daemon.drivers.container.builders import BuildJob, Image
from plat.daemon.drivers.container.builders.buildah import (
    build_command,
    buildah_images,
    failing_step,
)


def job(**changes: object) -> BuildJob:
    base: dict[str, object] = {
        "context": Path("/work/ctx"),
        "containerfile": Path("/work/Containerfile"),
        "tag": "localhost/plat/hello:v1",
    }
    base.update(changes)
    return BuildJob(**base)  # type: ignore[arg-type]


def test_minimal_command() -> None:
    assert build_command(job()) == [
        "buildah",
        "build",
        "--layers",
        "--pull=never",
        "-f",
        "/work/Containerfile",
        "-t",
        "localhost/plat/hello:v1",
        "/work/ctx",
    ]


def test_layers_and_no_pull() -> None:
    cmd = build_command(job())
    assert "--layers" in cmd
    assert "--pull=never" in cmd
    assert not any(arg in ("--pull", "--pull=always", "--no-cache") for arg in cmd)


def test_labels_sorted() -> None:
    cmd = build_command(job(labels={"plat.version": "v1", "plat.function": "hello"}))
    i = cmd.index("--label")
    assert cmd[i : i + 4] == ["--label", "plat.function=hello", "--label", "plat.version=v1"]


def test_volumes_read_only_and_sorted() -> None:
    cmd = build_command(job(volumes={"/host/b": "/mnt/b", "/host/a": "/mnt/a"}))
    vols = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "-v"]
    assert vols == ["/host/a:/mnt/a:ro", "/host/b:/mnt/b:ro"]


def test_context_is_last() -> None:
    cmd = build_command(job(labels={"a": "1"}, volumes={"/h": "/c"}, context=Path("/some/where")))
    assert cmd[-1] == "/some/where"
    assert cmd[:2] == ["buildah", "build"]
    assert cmd[cmd.index("-t") + 1] == "localhost/plat/hello:v1"


@pytest.mark.parametrize(
    ("lines", "step"),
    [
        ([], None),
        (["Getting image source signatures", "error: boom"], None),
        (
            [
                "STEP 1/3: FROM python:3.12-slim",
                "STEP 2/3: RUN pip install -r requirements.txt",
                "ERROR: No matching distribution found for nope",
                'Error: building at STEP "RUN pip install": exit status 1',
            ],
            "STEP 2/3: RUN pip install -r requirements.txt",
        ),
        (["  STEP 4: COPY . /app  ", "cp: no such file"], "STEP 4: COPY . /app"),
        (["STEP 1/2: FROM x", "STEP 2/2: RUN true", "COMMIT"], "STEP 2/2: RUN true"),
        (["NOT A STEP 1/2: x", "STEPS 1/2: y"], None),
    ],
)
def test_failing_step(lines: list[str], step: str | None) -> None:
    assert failing_step(lines) == step


def test_images_from_buildahs_json() -> None:
    text = '[{"id": "a", "names": ["localhost/plat/fn:1"], "created": 1796068415}, {"id": "b"}]'
    assert buildah_images(text) == [
        Image(("localhost/plat/fn:1",), 1796068415.0),
        Image((), 0.0),
    ]


@pytest.mark.parametrize("text", ["", "WARN[0000] not json", '{"names": []}', "[1, 2]", "null"])
def test_images_from_what_is_not_a_listing_are_none(text: str) -> None:
    assert buildah_images(text) == []
