"""A version's code and dependencies, unpacked from its image to the host for the pool.

A pool instance gets a function's files as hard links in its mounted folders, so
the files must exist on the host: they are copied out of the version's image once
(the Engine API's archive export of ``/home/app`` and ``/opt/plat/deps`` from a
created, never started, container) into::

    <root>/<image id>/app/     the function's code as the image holds it
    <root>/<image id>/deps/    its installed dependencies (absent when it has none)

A ``plat dev`` release runs its code from a host snapshot mounted over
``/home/app``; then only the dependencies come from the image and the code is
the snapshot. A folder stays while a deployed version uses its image. Every
folder is assembled under a temporary name and renamed into place, so a
half-unpacked image is never taken for a finished one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

from plat.daemon.drivers.container.engine import Engine
from plat.daemon.drivers.versions import APP_DIR, DEPS_DIR, Layout, Release
from plat.errors import EngineError

log = logging.getLogger(__name__)

# The "data" filter (no absolute or escaping links, no devices) where Python has it.
SAFE_EXTRACT: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


def _folder_name(image: str) -> str:
    return image.replace("/", "_").replace(":", "_")


class ImageUnpacker:
    """``Sources`` for the container backend (see plat.daemon.serving.pool)."""

    def __init__(self, endpoint: str, root: Path) -> None:
        self.endpoint = endpoint
        self.root = root
        self._engine = Engine(endpoint, timeout=120)
        self._locks: dict[str, asyncio.Lock] = {}

    def _image_folder(self, release: Release) -> Path:
        return self.root / _folder_name(release.image)

    def layout(self, release: Release) -> Layout | None:
        folder = self._image_folder(release)
        if not (folder / "done").exists():
            return None
        mounted = {target: host for host, target in release.mounts.items()}
        app = Path(mounted[APP_DIR]) if APP_DIR in mounted else folder / "app"
        deps = folder / "deps"
        return Layout(app, deps if deps.is_dir() else None)

    async def prepare(self, release: Release) -> Layout | None:
        folder = self._image_folder(release)
        lock = self._locks.setdefault(release.image, asyncio.Lock())
        async with lock:
            if not (folder / "done").exists():
                await self._unpack(release.image, folder)
        self._locks.pop(release.image, None)
        return self.layout(release)

    def retain(self, releases: list[Release]) -> None:
        """Remove what was unpacked for images no deployed version uses any more (claimed
        instances keep their hard links); the rest stays however many functions there are."""
        retained = {self._image_folder(r).name for r in releases}
        try:
            stale = [
                p
                for p in self.root.iterdir()
                if p.is_dir() and not p.name.startswith(".") and p.name not in retained
            ]
        except FileNotFoundError:
            return
        for folder in stale:
            shutil.rmtree(folder, ignore_errors=True)

    async def _unpack(self, image: str, folder: Path) -> None:
        tmp = folder.with_name(f".{folder.name}.tmp")
        await asyncio.to_thread(_fresh_folder, tmp)
        try:
            ref = await self._engine.create({"Image": image, "Cmd": ["true"], "Labels": {}})
        except EngineError as exc:
            raise EngineError(f"cannot unpack {image}: {exc.message}") from exc
        try:
            for path, name in ((APP_DIR, "app"), (DEPS_DIR, "deps")):
                archive = tmp / f"{name}.tar"
                if await self._engine.get_archive(ref, path, archive):  # else: no dependencies
                    await asyncio.to_thread(_extract, archive, os.path.basename(path), tmp / name)
            await asyncio.to_thread(_finish, image, tmp, folder)
        except (EngineError, tarfile.TarError, OSError) as exc:
            message = exc.message if isinstance(exc, EngineError) else str(exc)
            raise EngineError(f"cannot unpack {image}: {message}") from exc
        finally:
            await asyncio.to_thread(shutil.rmtree, tmp, True)
            try:
                await self._engine.remove(ref)
            except EngineError as exc:
                log.warning("removing the unpack container of %s: %s", image, exc.message)

    async def close(self) -> None:
        await self._engine.close()


def _fresh_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)


def _extract(archive: Path, top: str, target: Path) -> None:
    """Extract the export of one folder (its entries under ``top``) as ``target``."""
    scratch = target.with_name(".x")
    with tarfile.open(archive) as tar:
        tar.extractall(scratch, **SAFE_EXTRACT)
    archive.unlink()
    (scratch / top).rename(target)


def _finish(image: str, tmp: Path, folder: Path) -> None:
    """Check what was unpacked, make it readable, and rename it into place."""
    shutil.rmtree(tmp / ".x", ignore_errors=True)
    if not (tmp / "app").is_dir():
        raise EngineError(f"{image} has no {APP_DIR}")
    for dirpath, _dirs, _files in os.walk(tmp):
        os.chmod(dirpath, 0o755)
    (tmp / "done").touch()
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
