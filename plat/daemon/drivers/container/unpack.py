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
import io
import logging
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

import docker
import docker.errors

from plat.daemon.serving.function_state import Release
from plat.daemon.serving.pool import APP_DIR, DEPS_DIR, Layout
from plat.engine import SDK_POOLS
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
        self._client: docker.DockerClient | None = None
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = docker.DockerClient(
                base_url=self.endpoint, timeout=120, num_pools=SDK_POOLS
            )
        return self._client

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
                await asyncio.to_thread(self._unpack, release.image, folder)
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

    def _unpack(self, image: str, folder: Path) -> None:
        tmp = folder.with_name(f".{folder.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            container = self.client.containers.create(image, command=["true"], labels={})
        except docker.errors.DockerException as exc:
            raise EngineError(f"cannot unpack {image}: {exc}") from exc
        try:
            for path, name in ((APP_DIR, "app"), (DEPS_DIR, "deps")):
                try:
                    stream, _stat = container.get_archive(path)
                except docker.errors.NotFound:
                    continue  # no dependencies
                data = io.BytesIO(b"".join(stream))
                with tarfile.open(fileobj=data) as archive:
                    archive.extractall(tmp / ".x", **SAFE_EXTRACT)
                (tmp / ".x" / os.path.basename(path)).rename(tmp / name)
            shutil.rmtree(tmp / ".x", ignore_errors=True)
            if not (tmp / "app").is_dir():
                raise EngineError(f"{image} has no {APP_DIR}")
            for dirpath, _dirs, _files in os.walk(tmp):
                os.chmod(dirpath, 0o755)
            (tmp / "done").touch()
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)
        except (docker.errors.DockerException, tarfile.TarError, OSError) as exc:
            raise EngineError(f"cannot unpack {image}: {exc}") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                container.remove(force=True)
            except docker.errors.DockerException as exc:
                log.warning("removing the unpack container of %s: %s", image, exc)

    async def close(self) -> None:
        if self._client is not None:
            await asyncio.to_thread(self._client.close)
