"""Image builders: one ``Builder`` protocol, implementations as siblings.

``buildah`` is preferred when the engine is Podman (they share image storage);
otherwise the engine's own build API builds straight into the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from plat.daemon.drivers.versions import LineSink

__all__ = ["BuildJob", "Builder", "Image", "LineSink"]


@dataclass(frozen=True)
class BuildJob:
    context: Path
    containerfile: Path
    tag: str
    labels: dict[str, str] = field(default_factory=dict)
    # Host files mounted read-only into RUN steps only (never part of the image).
    volumes: dict[str, str] = field(default_factory=dict)
    # Package index settings for dependency installs (only those set on the host).
    build_args: dict[str, str] = field(default_factory=dict)
    # Look steps up in the layer cache (and keep a layer per step). Off for a build
    # whose steps are new every time: the lookup scans the store's images.
    layers: bool = True


@dataclass(frozen=True)
class Image:
    tags: tuple[str, ...]
    created: float  # Unix time


class Builder(Protocol):
    name: str

    async def image_exists(self, tag: str) -> bool: ...

    async def build(self, job: BuildJob, on_line: LineSink) -> None:
        """Build ``job``; stream each output line to ``on_line``; raise BuildError on failure."""
        ...

    async def remove_image(self, tag: str) -> None:
        """Remove ``tag`` (only the tag when the image has others); an image a container
        uses, or one that is gone, is left as it is, without an error."""
        ...

    async def labelled(self, label: str) -> list[Image]:
        """The images carrying ``label`` (``key=value``)."""
        ...
