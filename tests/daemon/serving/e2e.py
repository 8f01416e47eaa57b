"""What the serving end-to-end tests share: a daemon with its own settings, a python
function deployed to it, and the count of a function's running instances."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from tests.fixtures import PlatRunner, daemon_session, make_runner
from tests.functions import write_python_function

# The autoscaler decides every 250 ms over short windows, so a test sees it act within
# seconds; a cold start may panic it for a stable window, which is why that is short too.
FAST_AUTOSCALER = {
    "PLAT_AUTOSCALE_TICK": "250ms",
    "PLAT_STABLE_WINDOW": "4s",
    "PLAT_PANIC_WINDOW": "1s",
}


@contextmanager
def daemon(root: Path, settings: Mapping[str, str]) -> Iterator[tuple[PlatRunner, Path]]:
    """A daemon with its home under ``root`` and ``settings`` in its environment.

    Yields the runner and ``root`` (where the tests write their functions); the daemon
    is stopped afterwards and the test fails if it left containers behind.
    """
    runner = make_runner(root)
    runner.env.update(settings)
    with daemon_session(runner):
        yield runner, root


def deploy_python(
    plat: PlatRunner, root: Path, name: str, handler: str, manifest: str, requirements: str = ""
) -> Path:
    """Write the python function ``root/name`` and ``plat deploy`` it; returns its folder."""
    folder = write_python_function(
        root, name, handler, extra_manifest=manifest, requirements=requirements
    )
    plat.run("deploy", str(folder))
    return folder


def running(plat: PlatRunner, name: str) -> int:
    """How many of the function's containers run."""
    return len(plat.instances_of(name, "status=running"))
