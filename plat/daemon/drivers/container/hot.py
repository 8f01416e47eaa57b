"""`plat dev`'s fast artifacts: a change served by mounting, not by building.

A code-only change (the dependency files as when an image was built here) is
snapshotted to ``dev_dir/<function>/<version>`` and mounted read-only over that
image's code. A dependency change, when an install container is available (see
``devdeps``), has its dependencies installed into
``dev_dir/.deps/<function>/<digest>`` in a container of the function's last image
and mounted over that image's own, beside the code's snapshot. Anything else
(another handler, base or shim, a runtime without a stack) is built for real.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

from plat.daemon.drivers.container.builders import Builder
from plat.daemon.drivers.container.devdeps import DepsInstaller, InstallStep
from plat.daemon.drivers.versions import APP_DIR, DEPS_DIR, BuildOutcome, LineSink
from plat.ignore import Entry, copy_entries, copy_regular, digest_files
from plat.manifest import Manifest

DEV_SNAPSHOTS_KEPT = 4
DEV_DEPS_KEPT = 3
DEPS_FOLDER = ".deps"


class DevMounts:
    """What `plat dev` may mount, learned from the builds made here."""

    def __init__(
        self, builder: Builder, dev_dir: Path, installer: DepsInstaller | None = None
    ) -> None:
        self.builder = builder
        self.dev_dir = dev_dir
        self.installer = installer
        # (function, dependency key) -> the image built with those dependencies.
        self.images_by_deps: dict[tuple[str, str], str] = {}
        # (function, InstallStep.upper) -> its newest image with that stack above
        # the install: what a dependency change installs into and runs.
        self.bases: dict[tuple[str, str], str] = {}
        self._verified: set[str] = set()

    def built(self, name: str, key: str | None, tag: str, upper: str | None) -> None:
        """``tag`` was built (or found) for ``name`` with dependency key ``key``."""
        if key:
            self.images_by_deps[(name, key)] = tag
        if upper:
            self.bases[(name, upper)] = tag

    def removed(self, tag: str) -> None:
        """``tag`` is being removed: nothing may be mounted on it."""
        self._verified.discard(tag)
        self.images_by_deps = {k: v for k, v in self.images_by_deps.items() if v != tag}
        self.bases = {k: v for k, v in self.bases.items() if v != tag}

    def forget(self, name: str) -> None:
        """Forget ``name``'s images and delete its snapshots (runs in a thread)."""
        self.images_by_deps = {k: v for k, v in self.images_by_deps.items() if k[0] != name}
        self.bases = {k: v for k, v in self.bases.items() if k[0] != name}
        shutil.rmtree(self.dev_dir / name, ignore_errors=True)
        shutil.rmtree(self.dev_dir / DEPS_FOLDER / name, ignore_errors=True)

    async def _usable(self, image: str | None) -> bool:
        if image is None:
            return False
        if image not in self._verified:
            if not await self.builder.image_exists(image):
                return False
            self._verified.add(image)
        return True

    async def code_only(
        self, manifest: Manifest, source: Path, entries: list[Entry], key: str
    ) -> BuildOutcome | None:
        """The code's snapshot on the image built with these dependencies, if any."""
        started = time.monotonic()
        image = self.images_by_deps.get((manifest.name, key))
        if image is None or not await self._usable(image):
            return None
        version, target, cached = await asyncio.to_thread(
            self._snapshot, manifest, source, entries, key
        )
        return BuildOutcome(
            version,
            image,
            cached,
            time.monotonic() - started,
            "dev-mount",
            f"code-only change: {target} mounted read-only at {APP_DIR} on {image}",
            mounts={str(target): APP_DIR},
        )

    async def dependencies(
        self,
        manifest: Manifest,
        source: Path,
        entries: list[Entry],
        key: str,
        step: InstallStep,
        files: Mapping[str, Entry],
        volumes: Mapping[str, str],
        build_args: Mapping[str, str],
        on_line: LineSink,
    ) -> BuildOutcome | None:
        """The dependency files ``files`` installed by ``step`` and mounted, with the
        code's snapshot, on the function's last image above the same install; None
        when there is none or no installer."""
        started = time.monotonic()
        image = self.bases.get((manifest.name, step.upper))
        if self.installer is None or not await self._usable(image):
            return None
        assert image is not None
        digest = hashlib.sha256(f"{key}\0{step.upper}".encode()).hexdigest()[:12]
        folder = self.dev_dir / DEPS_FOLDER / manifest.name / digest
        log = [f"dependency change: installed in a container of {image}"]
        if folder.is_dir():
            os.utime(folder)  # in use again: newest, so pruning keeps it
            log.append(f"dependencies {folder} installed before: reused")
            on_line(log[-1])
        else:
            tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
            await asyncio.to_thread(_lay_out, source, files, tmp)
            try:
                if step.script:

                    def sink(line: str) -> None:
                        log.append(line)
                        on_line(line)

                    await self.installer.install(image, step, str(tmp), volumes, build_args, sink)
                await asyncio.to_thread(_finish, tmp, folder)
            finally:
                await asyncio.to_thread(shutil.rmtree, tmp, True)
        version, target, _ = await asyncio.to_thread(self._snapshot, manifest, source, entries, key)
        log.append(f"{target} mounted read-only at {APP_DIR}, {folder} at {DEPS_DIR}, on {image}")
        return BuildOutcome(
            version,
            image,
            False,
            time.monotonic() - started,
            "dev-mount",
            "\n".join(log),
            mounts={str(target): APP_DIR, str(folder): DEPS_DIR},
        )

    def _snapshot(
        self, manifest: Manifest, source: Path, entries: list[Entry], key: str
    ) -> tuple[str, Path, bool]:
        version = digest_files(source, entries, f"dev\0{key}".encode())[:12]
        target = self.dev_dir / manifest.name / version
        if target.is_dir():
            os.utime(target)  # serving again: newest, so pruning keeps it
            return version, target, True
        tmp = target.with_name(f".{version}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        copy_entries(source, entries, tmp)
        make_readable(tmp)
        tmp.rename(target)
        prune_folders(target.parent, keep=DEV_SNAPSHOTS_KEPT)
        return version, target, False


def _lay_out(source: Path, files: Mapping[str, Entry], tmp: Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, entry in files.items():
        copy_regular(source, entry.path, tmp / name)


def _finish(tmp: Path, folder: Path) -> None:
    make_readable(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    prune_folders(folder.parent, keep=DEV_DEPS_KEPT)


def prune_folders(folder: Path, keep: int) -> None:
    """Keep the ``keep`` newest dev snapshots of ``folder`` (the serving one and those
    still draining). Names starting with "." are work in progress."""
    snapshots = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    snapshots.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    for old in snapshots[keep:]:
        shutil.rmtree(old, ignore_errors=True)


def make_readable(root: Path) -> None:
    """COPY keeps modes; instances run as an unprivileged user that must read the code."""
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):  # a kept link's target is made readable itself
                os.chmod(path, 0o755 if os.access(path, os.X_OK) else 0o644)
