"""A real daemon on the process backend (cheap: no image builds) for the CLI's tenant,
secret and remote tests, and the same CLI pointed at it through PLAT_URL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from tests.fixtures import PlatRunner, free_port, make_runner, stop_daemon


@contextmanager
def process_daemon(tmp: Path) -> Iterator[PlatRunner]:
    """A started daemon on the process backend, stopped however the block ends."""
    runner = make_runner(tmp)
    try:
        runner.run("daemon", "start", "--backend", "process")
        yield runner
    finally:
        stop_daemon(runner)


def remote(plat: PlatRunner, token: str, **extra: str) -> PlatRunner:
    """The CLI as a remote caller: PLAT_URL (the gateway) and PLAT_TOKEN, and a
    PLAT_HOME where nothing exists (nothing local may be used)."""
    env = dict(plat.env)
    env.update(
        {
            "PLAT_URL": plat.gateway,
            "PLAT_TOKEN": token,
            "PLAT_HOME": str(plat.home.parent / "no-home-here"),
            **extra,
        }
    )
    return replace(plat, env=env)


def create_tenant(plat: PlatRunner, name: str, *args: str) -> str:
    """Creates tenant ``name``; its token."""
    data = json.loads(plat.run("tenant", "create", name, "--json", *args).stdout)
    token = data["token"]
    assert isinstance(token, str)
    return token


def nowhere(plat: PlatRunner) -> PlatRunner:
    """The CLI with a fresh home and a gateway port nothing listens on: a command
    that reached the daemon (or started one) would show it."""
    env = dict(plat.env)
    env.update(
        {
            "PLAT_HOME": str(plat.home.parent / "untouched"),
            "PLAT_GATEWAY_PORT": str(free_port()),
        }
    )
    return replace(plat, env=env)
