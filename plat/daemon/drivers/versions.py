"""What a function version is made of, as both drivers and the serving wing see it.

A ``Release`` is what instances of a function run: a manifest, a version and its
artifact (an image; for the process driver a ``process:<folder>``). An
``Artifacts`` turns a function folder into one (``BuildOutcome``); ``Sources`` lay
a version's files out on the host (``Layout``) so a pool instance can be
specialised with them. Every runtime has the code at ``APP_DIR`` and installed
dependencies at ``DEPS_DIR``. A ``Driver`` is what one driver hands the daemon.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from plat.daemon.drivers.base import Backend
from plat.daemon.drivers.secretvalue import Secrets
from plat.manifest import Manifest

APP_DIR = "/home/app"
DEPS_DIR = "/opt/plat/deps"
# A process driver's artifact reference: ``process:<folder>`` (an image otherwise).
PROCESS_IMAGE_PREFIX = "process:"

LineSink = Callable[[str], None]


@dataclass(frozen=True)
class Release:
    """A manifest, a version and its artifact, with the mounts a hot-reloaded dev
    version adds."""

    manifest: Manifest
    version: str
    image: str
    mounts: dict[str, str] = field(default_factory=dict)
    # The values of the secrets the manifest names, resolved at deploy (and on refresh).
    secrets: Secrets = field(default_factory=dict)

    def same_code(self, other: Release) -> bool:
        """Whether instances of ``other`` run what instances of this release run
        (scale settings aside)."""
        return (self.version, self.image, self.mounts) == (other.version, other.image, other.mounts)


@dataclass(frozen=True)
class BuildOutcome:
    version: str
    image: str
    cached: bool
    seconds: float
    builder: str
    log: str
    # Read-only mounts the instances need (a dev release's code): {host path: target}.
    mounts: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Layout:
    """A version's files on the host: its code, and its dependency folder if it has one."""

    app: Path
    deps: Path | None


class Artifacts(Protocol):
    """Turns a function folder into something a backend runs (an image, a process dir)."""

    @property
    def name(self) -> str: ...

    async def build(
        self, manifest: Manifest, source: Path, on_line: LineSink, *, force: bool = False
    ) -> BuildOutcome: ...

    async def hot(
        self, manifest: Manifest, source: Path, on_line: LineSink | None = None
    ) -> BuildOutcome | None:
        """A fast artifact for a `plat dev` change (one that needs no build), or None
        when a real build is needed; work it does (an install) streams to ``on_line``."""
        ...

    async def forget(self, name: str) -> None:
        """Delete what was stored for function ``name`` (it was removed); idempotent."""
        ...

    async def pool_image(self, runtime: str) -> str:
        """The generic image (or artifact) of ``runtime`` that pool instances run."""
        ...


class Sources(Protocol):
    """Lays versions out on the host so that pool instances can be specialised with them."""

    def layout(self, release: Release) -> Layout | None:
        """The files of ``release`` if they are ready; never waits."""
        ...

    async def prepare(self, release: Release) -> Layout | None:
        """Lay ``release`` out (idempotent); None when it has nothing to lay out."""
        ...

    def retain(self, releases: list[Release]) -> None:
        """Only ``releases`` (the deployed ones) need their files kept from now on."""
        ...


@dataclass
class Driver:
    """What a driver hands the daemon: its backend, its artifacts, where pool
    instances find a version's files, whether those are hard-linked into the
    instance's mounted folders (containers) or named to it (processes), and what to
    close when the daemon stops."""

    backend: Backend
    artifacts: Artifacts
    sources: Sources
    link: bool
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
