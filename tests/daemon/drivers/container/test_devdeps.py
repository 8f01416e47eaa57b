"""plat.daemon.drivers.container.devdeps and the dependency path of ``hot``: a
`plat dev` dependency change installed in a container of the function's last
image and mounted, without a build.

The install tests are real: Buildah builds, a Podman service of the test's own
runs the install (pip, from the package index), and `podman run` proves that the
mounted packages import in the image as the instance's user.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

import pytest

from plat.daemon.drivers.container.build import ImageBuilder, split_stack
from plat.daemon.drivers.container.builders.buildah import BuildahBuilder
from plat.daemon.drivers.container.devdeps import LABEL_INSTALL, DepsInstaller, install_step
from plat.daemon.drivers.container.hot import DEPS_FOLDER
from plat.daemon.drivers.versions import APP_DIR, DEPS_DIR
from plat.engine import PodmanService
from plat.errors import BuildError
from plat.manifest import Manifest
from plat.runtimes import get_runtime

PACKAGE = "humanize==4.17.0"


def stack(runtime: str, handler: str = "handler.handle", files: tuple[str, ...] = ()) -> str:
    spec = get_runtime(runtime)
    assert spec.containerfile
    text = spec.render(
        spec.containerfile,
        base="localhost/base:1",
        function="fn",
        handler=handler,
        dependency_files=list(files),
        has_dependencies=bool(files),
    )
    split = split_stack(text)
    assert split is not None
    return split[0]


# The install step, read off the runtimes' own Containerfiles.


@pytest.mark.parametrize(
    ("runtime", "files", "tool", "args"),
    [
        ("python", ("requirements.txt",), "pip install", ("PIP_INDEX_URL",)),
        ("node", ("package.json",), "npm install", ("NPM_CONFIG_REGISTRY",)),
    ],
)
def test_each_runtime_has_one_install_step_below_the_same_stack(
    runtime: str, files: tuple[str, ...], tool: str, args: tuple[str, ...]
) -> None:
    step = install_step(stack(runtime, files=files), "shim")
    assert step is not None
    assert tool in step.script and "\\" not in step.script
    assert set(args) <= set(step.args)
    # Without dependency files nothing is installed, on the same stack above.
    bare = install_step(stack(runtime), "shim")
    assert bare is not None and bare.script == "" and bare.upper == step.upper
    # Another handler, shim or base is another stack: a build, not a mount.
    assert install_step(stack(runtime, "other.run", files), "shim").upper != step.upper  # type: ignore[union-attr]
    assert install_step(stack(runtime, files=files), "shim2").upper != step.upper  # type: ignore[union-attr]
    other_base = stack(runtime, files=files).replace("localhost/base:1", "localhost/base:2")
    assert install_step(other_base, "shim").upper != step.upper  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "tail",
    [
        "RUN a\nRUN b\n",  # two steps: not one install
        "COPY x /x\nRUN a\n",  # a file copied after the dependencies
        'RUN ["pip", "install"]\n',  # exec form: not a shell script
        "ARG X\n",  # no RUN
        "RUN --mount=type=cache,target=/c pip install\n",
    ],
)
def test_a_tail_that_is_not_one_install_is_built(tail: str) -> None:
    assert install_step(f"FROM b\nENV A=1\nCOPY deps/ {DEPS_DIR}/\n{tail}") is None


def test_continuations_and_comments_make_one_script() -> None:
    text = (
        f"FROM b\nCOPY deps/ {DEPS_DIR}/\nARG I=''\n# why\n"
        "RUN set -e; \\\n    # inside\n    a; \\\n    b\n"
    )
    step = install_step(text)
    assert step is not None
    assert step.script == "set -e;  a;  b" and step.args == ("I",)
    assert install_step("FROM b\nENV A=1\n") is None  # no install and no RUN: unknown shape


# Real installs.


def function(root: Path, requirements: str, body: str = "hi") -> Path:
    folder = root / "src" / "fn"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "handler.py").write_text(f"def handle(e, c):\n    return {body!r}\n")
    (folder / "requirements.txt").write_text(requirements)
    return folder


def installs_left() -> list[str]:
    out = subprocess.run(
        ["podman", "ps", "-aq", "--filter", f"label={LABEL_INSTALL}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


class Rig:
    def __init__(self, tmp_path: Path, endpoint: str) -> None:
        self.tmp_path = tmp_path
        self.manifest = Manifest(name="fn", runtime="python")
        self.images = ImageBuilder(
            BuildahBuilder(endpoint),
            tmp_path / "builds",
            {},
            tmp_path / "dev",
            installer=DepsInstaller(endpoint, {}),
        )
        self.tags: list[str] = []

    async def build(self, requirements: str) -> str:
        folder = function(self.tmp_path, requirements)
        outcome = await self.images.build(self.manifest, folder, print)
        self.tags.append(outcome.image)
        return outcome.image

    def deps_folders(self) -> list[Path]:
        root = self.tmp_path / "dev" / DEPS_FOLDER / "fn"
        return sorted(root.iterdir()) if root.is_dir() else []


@pytest.fixture
async def rig(tmp_path: Path, podman_service: PodmanService) -> AsyncIterator[Rig]:
    rig = Rig(tmp_path, podman_service.endpoint)
    try:
        yield rig
    finally:
        subprocess.run(["podman", "rmi", "-f", *rig.tags], capture_output=True)
        for stale in installs_left():
            subprocess.run(["podman", "rm", "-f", stale], capture_output=True)


def run_in(image: str, mounts: dict[str, str], code: str) -> str:
    """``code`` run by python in ``image`` as an instance runs: its user, a read-only
    root, the mounts read-only."""
    cmd = ["podman", "run", "--rm", "--read-only", "--user", "10001:10001", "--network", "none"]
    for host, target in mounts.items():
        cmd += ["-v", f"{host}:{target}:ro"]
    cmd += [image, "python3", "-c", code]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.container
async def test_a_dependency_change_is_installed_and_mounted_on_the_last_image(rig: Rig) -> None:
    image = await rig.build("# nothing yet\n")
    folder = function(rig.tmp_path, f"{PACKAGE}\n", "with humanize")
    lines: list[str] = []
    outcome = await rig.images.hot(rig.manifest, folder, lines.append)
    assert outcome is not None and outcome.builder == "dev-mount"
    assert outcome.image == image  # no image was built
    assert sorted(outcome.mounts.values()) == sorted([APP_DIR, DEPS_DIR])
    assert any("humanize" in line for line in lines), lines  # the install's own output
    code = "import humanize, handler; print(humanize.intcomma(1234567), handler.handle(0, 0))"
    assert run_in(image, outcome.mounts, code) == "1,234,567 with humanize"
    assert installs_left() == []

    # The same dependencies again (a code change on top): the install is reused.
    (folder / "handler.py").write_text("def handle(e, c):\n    return 'v2'\n")
    started = time.monotonic()
    again = await rig.images.hot(rig.manifest, folder, lines.append)
    assert again is not None and again.image == image and time.monotonic() - started < 5
    deps = {t: h for h, t in outcome.mounts.items()}[DEPS_DIR]
    assert {t: h for h, t in again.mounts.items()}[DEPS_DIR] == deps
    assert "installed before" in again.log
    assert run_in(image, again.mounts, "import handler; print(handler.handle(0, 0))") == "v2"

    # Back to the built dependencies: the image's own, the code mounted alone.
    back = await rig.images.hot(rig.manifest, function(rig.tmp_path, "# nothing yet\n"))
    assert back is not None and list(back.mounts.values()) == [APP_DIR]

    await rig.images.forget("fn")  # `plat rm`: the installs go with the snapshots
    assert rig.deps_folders() == [] and not (rig.tmp_path / "dev" / "fn").exists()


@pytest.mark.container
async def test_a_failed_install_names_the_error_and_leaves_nothing(rig: Rig) -> None:
    await rig.build("# nothing yet\n")
    folder = function(rig.tmp_path, "plat-no-such-package-zz9==9.9.9\n")
    with pytest.raises(BuildError, match="installing the dependencies failed") as caught:
        await rig.images.hot(rig.manifest, folder, lambda line: None)
    assert "plat-no-such-package-zz9" in caught.value.log_tail
    assert rig.deps_folders() == []  # neither the install nor its work folder stays
    assert not list((rig.tmp_path / "dev" / DEPS_FOLDER / "fn").glob(".*"))
    assert installs_left() == []


def silent_index() -> tuple[socket.socket, SplitResult]:
    """A listening socket on the host's outbound address that accepts nothing (the
    kernel completes the handshake; no answer ever comes), and an index URL on it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this picks the route
        address = probe.getsockname()[0]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((address, 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    return listener, urlsplit(f"http://{address}:{port}/simple")


@pytest.mark.container
async def test_a_superseded_install_is_stopped_and_removed(rig: Rig) -> None:
    await rig.build("# nothing yet\n")
    # An index that takes the connection and never answers: pip waits on it for far
    # longer than the test. On the host's own address (slirp4netns reaches it, not its
    # loopback), as some networks answer any address on port 80 themselves.
    silent, index = silent_index()
    lines = f"--trusted-host {index.hostname}\n--index-url {index.geturl()}\n{PACKAGE}\n"
    folder = function(rig.tmp_path, lines)
    task = asyncio.ensure_future(rig.images.hot(rig.manifest, folder, lambda line: None))
    deadline = time.monotonic() + 60
    while not installs_left():
        assert time.monotonic() < deadline and not task.done(), "no install container started"
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)  # pip is running (or starting) in it
    assert not task.done(), "the install ended before it could be superseded"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    silent.close()
    assert installs_left() == []
    assert rig.deps_folders() == []
    assert not list((rig.tmp_path / "dev" / DEPS_FOLDER / "fn").glob(".*"))


@pytest.mark.container
async def test_a_node_dependency_change_is_installed_by_npm(rig: Rig) -> None:
    folder = rig.tmp_path / "src" / "js"
    folder.mkdir(parents=True)
    (folder / "handler.js").write_text("module.exports = async () => 'js';\n")
    (folder / "package.json").write_text('{"name": "js", "private": true}\n')
    manifest = Manifest(name="js", runtime="node")
    built = await rig.images.build(manifest, folder, print)
    rig.tags.append(built.image)
    (folder / "package.json").write_text(
        '{"name": "js", "private": true, "dependencies": {"is-number": "7.0.0"}}\n'
    )
    lines: list[str] = []
    outcome = await rig.images.hot(manifest, folder, lines.append)
    assert outcome is not None and outcome.image == built.image, lines
    cmd = ["podman", "run", "--rm", "--read-only", "--user", "10001:10001", "--network", "none"]
    for host, target in outcome.mounts.items():
        cmd += ["-v", f"{host}:{target}:ro"]
    cmd += [built.image, "node", "-e", "console.log(require('is-number')(5))"]
    assert subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip() == "true"
    assert installs_left() == []


@pytest.mark.container
async def test_another_handler_is_built_not_mounted(rig: Rig) -> None:
    await rig.build("# nothing yet\n")
    folder = function(rig.tmp_path, f"{PACKAGE}\n")
    manifest = Manifest(name="fn", runtime="python", handler="handler.other")
    assert await rig.images.hot(manifest, folder, lambda line: None) is None
    assert installs_left() == []
