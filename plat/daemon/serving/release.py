"""What instances of a function run: a manifest, a version and its artifact."""

from __future__ import annotations

from dataclasses import dataclass, field

from plat.manifest import Manifest


@dataclass(frozen=True)
class Release:
    """A manifest, a version and its image (a process artifact for the process
    backend), with the mounts a hot-reloaded dev version adds."""

    manifest: Manifest
    version: str
    image: str
    mounts: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.manifest.name

    def same_code(self, other: Release) -> bool:
        """Whether instances of ``other`` run what instances of this release run
        (scale settings aside)."""
        return (self.version, self.image, self.mounts) == (other.version, other.image, other.mounts)
