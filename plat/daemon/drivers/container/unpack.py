"""A version's code and dependencies, laid out on the host for the pool.

A pool instance gets a function's files as hard links in its mounted folders, so
the files must exist on the host, in::

    <root>/<image>/app/        the function's code as the image holds it
    <root>/<image>/deps/       its installed dependencies (absent when it has none
                               or when they are its stack's)
    <root>/<image>/stack       the stack image it was built on, if it was
    <root>/.stacks/<stack>/deps/   a stack's dependencies, unpacked once per stack

A build on a stack hands its context's code over (``adopt``: a rename into
``<root>/.code/``), so laying that version out needs no container: its code is
what the build copied in, and its dependencies are its stack's, shared by every
function on that stack. Any other image (a `dockerfile` build, or one built before
the daemon started) is unpacked from the image: the Engine API's archive export
of ``/home/app`` and ``/opt/plat/deps`` from a created, never started, container.

A ``plat dev`` release runs its code from a host snapshot mounted over
``/home/app``; then only the dependencies come from the image and the code is
the snapshot. A folder stays while a deployed version uses its image (and a
stack's while such an image is on it). Every folder is assembled under a
temporary name and renamed into place, so a half-made one is never taken for a
finished one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import tarfile
import time
from pathlib import Path
from typing import Any

from plat.daemon.drivers.container.engine import Engine
from plat.daemon.drivers.versions import APP_DIR, DEPS_DIR, Layout, Release
from plat.errors import EngineError

log = logging.getLogger(__name__)

# The "data" filter (no absolute or escaping links, no devices) where Python has it.
SAFE_EXTRACT: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
STAGED = ".code"  # code handed over by builds, not laid out yet
STACKS = ".stacks"  # dependencies of stack images
# How long a build's handed-over code waits to be laid out (a deploy lays it out
# within seconds; a build that was never deployed leaves it behind).
STAGED_KEEP = 900.0
_APP_AND_DEPS = ((APP_DIR, "app"), (DEPS_DIR, "deps"))


def _folder_name(image: str) -> str:
    return image.replace("/", "_").replace(":", "_")


class ImageUnpacker:
    """``Sources`` for the container backend (see plat.daemon.serving.pool)."""

    def __init__(self, endpoint: str, root: Path) -> None:
        self.endpoint = endpoint
        self.root = root
        self._engine = Engine(endpoint, timeout=120)
        self._locks: dict[str, asyncio.Lock] = {}
        self._stacks: dict[str, str] = {}  # image folder name -> its stack image

    def _image_folder(self, release: Release) -> Path:
        return self.root / _folder_name(release.image)

    def _stack_folder(self, stack: str) -> Path:
        return self.root / STACKS / _folder_name(stack)

    def _stack_of(self, folder: Path) -> str | None:
        """The stack whose dependencies the laid-out image in ``folder`` uses: None
        when it has its own (unpacked from the image) or none (a small file, read once)."""
        if (folder / "deps").is_dir():
            return None
        if folder.name not in self._stacks:
            stack = _read_stack(folder)
            if stack is None:
                return None
            self._stacks[folder.name] = stack
        return self._stacks[folder.name]

    def layout(self, release: Release) -> Layout | None:
        folder = self._image_folder(release)
        if not (folder / "done").exists():
            return None
        deps = folder / "deps"
        stack = self._stack_of(folder)
        if stack is not None:
            if not (self._stack_folder(stack) / "done").exists():
                return None
            deps = self._stack_folder(stack) / "deps"
        mounted = {target: host for host, target in release.mounts.items()}
        app = Path(mounted[APP_DIR]) if APP_DIR in mounted else folder / "app"
        if DEPS_DIR in mounted:  # a `plat dev` dependency change's own install
            deps = Path(mounted[DEPS_DIR])
        return Layout(app, deps if deps.is_dir() else None)

    def adopt(self, image: str, stack: str, app: Path) -> None:
        """Keep ``app``, the code a build of ``image`` on ``stack`` copied in (moved
        here), so that laying that version out needs no container. Runs in a thread;
        a failure only means the version is unpacked from its image instead."""
        staged = self.root / STAGED
        name = _folder_name(image)
        tmp = staged / f".{name}.{secrets.token_hex(4)}"
        try:
            staged.mkdir(parents=True, exist_ok=True)
            _prune(staged, time.time() - STAGED_KEEP)
            tmp.mkdir()
            try:
                app.rename(tmp / "app")
            except OSError:  # another filesystem
                shutil.copytree(app, tmp / "app", symlinks=True)
            (tmp / "stack").write_text(stack)
            shutil.rmtree(staged / name, ignore_errors=True)
            tmp.rename(staged / name)
        except OSError as exc:
            log.warning("keeping the code of %s for the pool: %s", image, exc)
            shutil.rmtree(tmp, ignore_errors=True)

    async def prepare(self, release: Release) -> Layout | None:
        folder = self._image_folder(release)
        lock = self._locks.setdefault(release.image, asyncio.Lock())
        async with lock:
            if not (folder / "done").exists():
                staged = self.root / STAGED / folder.name
                if (staged / "stack").is_file():
                    try:
                        await asyncio.to_thread(_finish, release.image, staged, folder, True)
                    except (OSError, EngineError) as exc:
                        log.warning("laying out %s from its build: %s", release.image, exc)
                if not (folder / "done").exists():
                    await self._unpack(release.image, folder, _APP_AND_DEPS)
            stack = self._stack_of(folder)
            if stack is not None:
                try:
                    await self._unpack_stack(stack)
                except EngineError as exc:  # the stack's tag is gone: the image has it all
                    log.info("unpacking %s itself: %s", release.image, exc.message)
                    self._stacks.pop(folder.name, None)
                    await self._unpack(release.image, folder, _APP_AND_DEPS)
        self._locks.pop(release.image, None)
        return self.layout(release)

    async def _unpack_stack(self, stack: str) -> None:
        folder = self._stack_folder(stack)
        lock = self._locks.setdefault(stack, asyncio.Lock())
        async with lock:
            if not (folder / "done").exists():
                await self._unpack(stack, folder, ((DEPS_DIR, "deps"),))
        self._locks.pop(stack, None)

    def retain(self, releases: list[Release]) -> None:
        """Remove what was laid out for images no deployed version uses any more, and
        the stacks no such image is on (claimed instances keep their hard links); the
        rest stays however many functions there are."""
        retained = {self._image_folder(r).name for r in releases}
        stacks = {self._stack_of(self.root / name) for name in retained}
        stacks |= set(_staged_stacks(self.root / STAGED))
        kept_stacks = {_folder_name(s) for s in stacks if s is not None}
        for folder in _folders(self.root):
            if folder.name not in retained:
                shutil.rmtree(folder, ignore_errors=True)
                self._stacks.pop(folder.name, None)
        for folder in _folders(self.root / STACKS):
            if folder.name not in kept_stacks:
                shutil.rmtree(folder, ignore_errors=True)

    async def _unpack(self, image: str, folder: Path, parts: tuple[tuple[str, str], ...]) -> None:
        """Export ``parts`` (a path in the image, a name under ``folder``) of ``image``."""
        tmp = folder.with_name(f".{folder.name}.tmp")
        await asyncio.to_thread(_fresh_folder, tmp)
        try:
            ref = await self._engine.create({"Image": image, "Cmd": ["true"], "Labels": {}})
        except EngineError as exc:
            await asyncio.to_thread(shutil.rmtree, tmp, True)
            raise EngineError(f"cannot unpack {image}: {exc.message}") from exc
        try:
            for path, name in parts:
                archive = tmp / f"{name}.tar"
                if await self._engine.get_archive(ref, path, archive):  # else: no dependencies
                    await asyncio.to_thread(_extract, archive, os.path.basename(path), tmp / name)
            has_app = any(name == "app" for _path, name in parts)
            await asyncio.to_thread(_finish, image, tmp, folder, has_app)
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


def _folders(root: Path) -> list[Path]:
    """The finished folders of ``root`` (names starting with "." are work in progress)."""
    try:
        return [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except FileNotFoundError:
        return []


def _read_stack(folder: Path) -> str | None:
    """The stack image named in ``folder``'s ``stack`` file, if it has one."""
    try:
        return (folder / "stack").read_text().strip() or None
    except OSError:
        return None


def _staged_stacks(staged: Path) -> list[str | None]:
    return [_read_stack(folder) for folder in _folders(staged)]


def _prune(staged: Path, before: float) -> None:
    """Remove what was handed over (or left half-done) before the time ``before``."""
    for entry in staged.iterdir():
        try:
            if entry.stat().st_mtime < before:
                shutil.rmtree(entry, ignore_errors=True)
        except FileNotFoundError:
            continue


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


def _finish(image: str, tmp: Path, folder: Path, has_app: bool) -> None:
    """Check what was assembled in ``tmp``, make it readable, and rename it into place."""
    shutil.rmtree(tmp / ".x", ignore_errors=True)
    if has_app and not (tmp / "app").is_dir():
        raise EngineError(f"{image} has no {APP_DIR}")
    for dirpath, _dirs, _files in os.walk(tmp):
        os.chmod(dirpath, 0o755)
    (tmp / "done").touch()
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(folder)
