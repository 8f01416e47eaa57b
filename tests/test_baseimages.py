"""plat.baseimages: reference spelling and FROM rewriting (pure); local images (container)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from plat import baseimages
from plat.baseimages import (
    bootstrap,
    image_exists,
    local_equivalents,
    qualify,
    resolve_base,
    rewrite_from_lines,
    rootfs_key,
    spellings,
)
from plat.errors import BuildError, PlatError
from plat.runtimes import Bootstrap, Runtime, get_runtime


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("python:3.12-slim", "docker.io/library/python:3.12-slim"),
        ("python", "docker.io/library/python"),
        ("library/python:3.12", "docker.io/library/python:3.12"),
        ("bitnami/redis:7", "docker.io/bitnami/redis:7"),
        ("docker.io/library/node:20-slim", "docker.io/library/node:20-slim"),
        ("quay.io/podman/stable", "quay.io/podman/stable"),
        ("localhost/plat/python-base:bookworm", "localhost/plat/python-base:bookworm"),
        ("127.0.0.1:5000/x:1", "127.0.0.1:5000/x:1"),
    ],
)
def test_qualify(ref: str, expected: str) -> None:
    assert qualify(ref) == expected


def test_spellings_of_an_official_image() -> None:
    assert spellings("python:3.12-slim") == [
        "python:3.12-slim",
        "docker.io/python:3.12-slim",
        "index.docker.io/python:3.12-slim",
        "library/python:3.12-slim",
        "docker.io/library/python:3.12-slim",
        "index.docker.io/library/python:3.12-slim",
    ]
    assert spellings("quay.io/x/y:1") == ["quay.io/x/y:1"]


MAPPING = {
    "python:3.12-slim": "localhost/plat/python-base:bookworm",
    "docker.io/library/python:3.12-slim": "localhost/plat/python-base:bookworm",
    "node:20-slim": "docker.io/library/node:20-slim",
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FROM python:3.12-slim\n", "FROM localhost/plat/python-base:bookworm\n"),
        ("from python:3.12-slim\n", "from localhost/plat/python-base:bookworm\n"),
        (
            "FROM python:3.12-slim AS build\n",
            "FROM localhost/plat/python-base:bookworm AS build\n",
        ),
        (
            "FROM --platform=linux/amd64 docker.io/library/python:3.12-slim as b\n",
            "FROM --platform=linux/amd64 localhost/plat/python-base:bookworm as b\n",
        ),
        ("  FROM\tnode:20-slim  # base\n", "  FROM\tdocker.io/library/node:20-slim  # base\n"),
        (
            "FROM python:3.12-slim\r\nRUN x\r\n",
            "FROM localhost/plat/python-base:bookworm\r\nRUN x\r\n",
        ),
        ("FROM python:3.12-slim", "FROM localhost/plat/python-base:bookworm"),  # no final newline
        ("FROM python:3.11-slim\n", "FROM python:3.11-slim\n"),  # other tag: untouched
        ("FROM python:3.12-slim-bookworm\n", "FROM python:3.12-slim-bookworm\n"),
        ("FROM build\n", "FROM build\n"),  # a stage name
        ("FROM ${BASE}\n", "FROM ${BASE}\n"),
        ("# FROM python:3.12-slim\n", "# FROM python:3.12-slim\n"),
        ("RUN echo FROM python:3.12-slim\n", "RUN echo FROM python:3.12-slim\n"),
        ("COPY --from=python:3.12-slim /a /b\n", "COPY --from=python:3.12-slim /a /b\n"),
        (
            "FROM python:3.12-slim AS deps\nRUN pip install x\nFROM deps AS final\n"
            "FROM node:20-slim\n",
            "FROM localhost/plat/python-base:bookworm AS deps\nRUN pip install x\n"
            "FROM deps AS final\nFROM docker.io/library/node:20-slim\n",
        ),
        ("", ""),
    ],
)
def test_rewrite_from_lines(text: str, expected: str) -> None:
    assert rewrite_from_lines(text, MAPPING) == expected


def _runtime(name: str, base: str | None, image: str, packages: tuple[str, ...]) -> Runtime:
    return Runtime(
        name=name, path=Path("/nonexistent"), base=base, bootstrap=Bootstrap(image, packages)
    )


def test_rootfs_key_depends_on_the_package_set_not_its_order() -> None:
    a = _runtime("python", None, "i", ("python3", "ca-certificates"))
    b = _runtime("python", None, "i", ("ca-certificates", "python3"))
    c = _runtime("python", None, "i", ("python3",))
    assert rootfs_key(a) == rootfs_key(b) != rootfs_key(c)


def test_bootstrap_without_a_bootstrap_section_says_so() -> None:
    runtime = Runtime(name="dockerfile", path=Path("/nonexistent"))
    with pytest.raises(PlatError, match="no bootstrap section"):
        bootstrap(runtime)


# --- against real local storage ----------------------------------------------

UNPULLABLE = "registry.invalid/plat/never:1"  # .invalid never resolves: the pull fails fast


@pytest.fixture(scope="module")
def python_runtime() -> Runtime:
    """The shipped python runtime, with its bootstrap image built (a no-op once built)."""
    runtime = get_runtime("python")
    bootstrap(runtime)
    return runtime


@pytest.mark.container
def test_image_exists(python_runtime: Runtime) -> None:
    assert python_runtime.bootstrap is not None
    assert image_exists(python_runtime.bootstrap.image)
    assert not image_exists("localhost/plat/no-such-image:never")


@pytest.mark.container
def test_bootstrap_second_call_is_a_no_op(python_runtime: Runtime) -> None:
    assert python_runtime.bootstrap is not None
    seen: list[str] = []
    started = time.monotonic()
    assert bootstrap(python_runtime, progress=seen.append) == python_runtime.bootstrap.image
    assert time.monotonic() - started < 5
    assert seen == [f"{python_runtime.bootstrap.image} already present"]


@pytest.mark.container
async def test_resolve_base_falls_back_to_the_bootstrap_image(python_runtime: Runtime) -> None:
    assert python_runtime.bootstrap is not None
    baseimages.forget_pulls()
    runtime = _runtime(
        "python", UNPULLABLE, python_runtime.bootstrap.image, python_runtime.bootstrap.packages
    )
    assert await resolve_base(runtime) == python_runtime.bootstrap.image
    # The failed pull is remembered: no second attempt in this process.
    assert baseimages._pull_results == {UNPULLABLE: False}
    assert await resolve_base(runtime, pull=False) == python_runtime.bootstrap.image


@pytest.mark.container
async def test_resolve_base_of_the_shipped_runtime(python_runtime: Runtime) -> None:
    assert python_runtime.bootstrap is not None and python_runtime.base is not None
    resolved = await resolve_base(python_runtime)
    assert resolved in (qualify(python_runtime.base), python_runtime.bootstrap.image)
    started = time.monotonic()
    assert await resolve_base(python_runtime) == resolved
    assert time.monotonic() - started < 5  # no second pull


@pytest.mark.container
async def test_resolve_base_without_any_image_hints_at_bootstrap() -> None:
    runtime = _runtime("ghost", UNPULLABLE, "localhost/plat/ghost-base:none", ("python3",))
    with pytest.raises(BuildError) as info:
        await resolve_base(runtime)
    assert "registry.invalid/plat/never:1" in info.value.message
    assert info.value.hint is not None
    assert "plat runtime bootstrap ghost" in info.value.hint


@pytest.mark.container
async def test_local_equivalents_maps_every_spelling(python_runtime: Runtime) -> None:
    assert python_runtime.bootstrap is not None
    runtime = _runtime("python", "python:3.12-slim", python_runtime.bootstrap.image, ("python3",))
    ghost = _runtime("ghost", UNPULLABLE, "localhost/plat/ghost-base:none", ("python3",))
    mapping = await local_equivalents([runtime, ghost], pull=False)
    target = mapping["python:3.12-slim"]
    assert target in ("docker.io/library/python:3.12-slim", python_runtime.bootstrap.image)
    assert mapping["docker.io/library/python:3.12-slim"] == target
    assert UNPULLABLE not in mapping  # unresolvable: left for the build to report


@pytest.mark.container
def test_runtime_bootstrap_command_prints_the_image(python_runtime: Runtime) -> None:
    import typer

    from plat.commands import runtime as runtime_command

    app = typer.Typer()
    runtime_command.register(app)
    result = CliRunner().invoke(app, ["runtime", "bootstrap", "python"])
    assert result.exit_code == 0, result.output
    assert python_runtime.bootstrap is not None
    assert result.stdout.strip() == python_runtime.bootstrap.image


@pytest.mark.container
@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("python", ["python", "-c", "import pip, ssl; print('ok')"]),
        ("node", ["node", "-e", "console.log('ok')"]),
    ],
)
def test_bootstrapped_image_runs_its_interpreter(name: str, command: list[str]) -> None:
    import subprocess

    image = bootstrap(get_runtime(name))  # a no-op after scripts/setup.sh
    result = subprocess.run(
        ["podman", "run", "--rm", "--network=none", image, *command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr
