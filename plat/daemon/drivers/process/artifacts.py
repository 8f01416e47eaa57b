"""What the process backend runs: a snapshot of a function folder plus its dependencies.

The process backend has no images, so "building" a version means laying out a
folder::

    <work_root>/<name>/<version>/app/    copy of the function's files (minus .platignore)
    <work_root>/<name>/<version>/deps -> ../../_deps/<runtime>-<deps digest>/
    <work_root>/<name>/<version>/artifact.json   {"function", "version", "runtime"}
    <work_root>/<name>/<version>/node_modules -> deps/node_modules   (node only)
    <work_root>/_deps/<runtime>-<deps digest>/   packages, installed once per distinct
                                                  dependency-file content
    <work_root>/_pool/<runtime>/                 empty app/ and deps/: what the pre-warmed
                                                  pool's generic instances start from

``version`` is a digest of the runtime, the code and the dependency files, so an
unchanged folder maps to the folder already laid out (``cached``), and a
code-only change copies the code and reuses the installed dependencies: that is
the fast path of ``plat dev``.

Every directory is assembled under a temporary name and renamed into place, so
a failed or cancelled preparation never leaves a half-made version or
dependency folder behind that a later call would take for finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from plat.daemon.drivers.process.dependencies import DependencyFiles, install_deps, toolchain_tag
from plat.daemon.drivers.process.layout import (
    ARTIFACT_META,
    DEPS_ROOT,
    EMPTY_DEPS,
    POOL_DIR,
    TMP_PREFIX,
    artifact_dir,
    image_ref,
    rename_into_place,
)
from plat.daemon.drivers.versions import BuildOutcome, Layout, LineSink, Release
from plat.errors import PlatError
from plat.ignore import IgnoreRules, content_entries, copy_entries, digest_files
from plat.manifest import Manifest
from plat.runtimes import Runtime, get_runtime

# A dependency folder used (or made) this recently is never pruned: another
# function's preparation may be about to link it.
DEPS_GRACE_SECONDS = 600.0
# Leftovers of a preparation killed with the daemon (no `finally` ran) older than this go.
STALE_TMP_SECONDS = 3600.0


class _Plan:
    """What one preparation needs, computed before anything is written."""

    def __init__(self, runtime: Runtime, source: Path, env: Mapping[str, str]) -> None:
        self.runtime = runtime
        self.source = source
        self.entries = IgnoreRules(source).entries()
        self.deps = DependencyFiles(
            runtime.name, source, content_entries(self.entries, runtime.dependencies)
        )
        if self.deps.has_packages:
            tag = toolchain_tag(runtime.name, env)
            names = "\0".join(self.deps.files)
            deps_digest = digest_files(
                source,
                list(self.deps.files.values()),
                f"{runtime.name}\0{tag}\0{names}\0".encode(),
            )
            self.deps_key = f"{runtime.name}-{deps_digest[:16]}"
        else:
            # Nothing to install: every such version shares one empty folder.
            self.deps_key = f"{runtime.name}-{EMPTY_DEPS}"
        # The dependency key brings in the dependency files and the toolchain.
        code_digest = digest_files(
            source, self.entries, f"{runtime.name}\0{self.deps_key}\0".encode()
        )
        self.version = code_digest[:12]


async def prepare_artifact(
    manifest: Manifest,
    source: Path,
    work_root: Path,
    env: Mapping[str, str],
    on_line: Callable[[str], None],
) -> tuple[str, str, bool]:
    """Lay out the version of ``source`` that the process backend runs.

    Returns ``(version, image_ref, cached)``: ``image_ref`` is
    ``"process:<work_root>/<name>/<version>"``; ``cached`` is True when that
    folder already existed (nothing was copied). Dependencies are installed into
    ``<work_root>/_deps/`` once per distinct dependency-file content (and
    interpreter), with the host's ``python -m pip`` or ``npm`` and ``env`` as
    their environment; their output goes to ``on_line``.

    Raises PlatError for the ``dockerfile`` runtime (it needs a container
    engine) and BuildError, carrying the installer's output tail, when the
    dependencies cannot be installed. Cancellation stops the installer and
    leaves no partial folder.
    """
    runtime = get_runtime(manifest.runtime)
    if not runtime.poolable or runtime.shim_dir is None:  # its own image: a container
        raise PlatError(
            f"the process backend cannot run `{runtime.name}` functions",
            hint="use the container backend: `plat daemon start --backend container`",
        )
    source = source.resolve()
    plan = await asyncio.to_thread(_Plan, runtime, source, env)
    function_root = work_root / manifest.name
    target = function_root / plan.version
    deps_dir = work_root / DEPS_ROOT / plan.deps_key

    deps_ready = await asyncio.to_thread(deps_dir.is_dir)
    if not deps_ready:
        await install_deps(plan.deps, deps_dir, env, on_line)
    else:
        # Mark it used, so prune keeps it (see DEPS_GRACE_SECONDS).
        with contextlib.suppress(OSError):
            os.utime(deps_dir)

    cached = await asyncio.to_thread(target.is_dir)
    if cached:
        on_line(f"{manifest.name} {plan.version} is up to date (no changes since it was prepared)")
    else:
        await asyncio.to_thread(_lay_out, plan, target, deps_dir, manifest.name)
        on_line(f"prepared {manifest.name} {plan.version} ({len(plan.entries)} files) in {target}")
    if not await asyncio.to_thread(deps_dir.is_dir):
        # `plat rm` of the last other function using it removed it meanwhile.
        await install_deps(plan.deps, deps_dir, env, on_line)
    return plan.version, image_ref(target), cached


def _lay_out(plan: _Plan, target: Path, deps_dir: Path, name: str) -> None:
    """Copy the code into a temporary folder, link the dependencies, rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f"{TMP_PREFIX}{target.name}-{secrets.token_hex(4)}"
    try:
        app = tmp / "app"
        app.mkdir(parents=True)
        copy_entries(plan.source, plan.entries, app)
        # Relative, so the work folder can move (and a listing shows what is shared).
        (tmp / "deps").symlink_to(os.path.relpath(deps_dir, tmp))
        meta = {"function": name, "version": plan.version, "runtime": plan.runtime.name}
        (tmp / ARTIFACT_META).write_text(json.dumps(meta) + "\n")
        if plan.runtime.name == "node":
            # ES modules ignore NODE_PATH but look in ../node_modules of app/.
            (tmp / "node_modules").symlink_to(Path("deps") / "node_modules")
        rename_into_place(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def prune_artifacts(work_root: Path, name: str, keep: set[str]) -> None:
    """Remove the prepared versions of ``name`` not in ``keep``; then unused dependencies.

    A dependency folder is removed when no prepared version of any function links
    it and it was not used in the last DEPS_GRACE_SECONDS (a preparation in
    progress may be about to link it). Leftovers of preparations killed midway
    are removed once STALE_TMP_SECONDS old. Missing folders are not an error.
    """
    now = time.time()
    function_root = work_root / name
    if function_root.is_dir():
        for entry in function_root.iterdir():
            if entry.name.startswith(TMP_PREFIX):
                if _older_than(entry, now - STALE_TMP_SECONDS):
                    shutil.rmtree(entry, ignore_errors=True)
            elif entry.is_dir() and entry.name not in keep:
                shutil.rmtree(entry, ignore_errors=True)
        with contextlib.suppress(OSError):
            function_root.rmdir()  # only when nothing is left
    deps_root = work_root / DEPS_ROOT
    if not deps_root.is_dir():
        return
    used = _linked_deps(work_root)
    for entry in deps_root.iterdir():
        if entry.name.startswith(TMP_PREFIX):
            # An install in progress has a fresh folder; only a dead one gets old.
            if _older_than(entry, now - STALE_TMP_SECONDS):
                shutil.rmtree(entry, ignore_errors=True)
        elif entry.name not in used and _older_than(entry, now - DEPS_GRACE_SECONDS):
            shutil.rmtree(entry, ignore_errors=True)


def forget_artifacts(work_root: Path, name: str) -> None:
    """Remove ``name``'s prepared versions (in progress or not), then the dependency
    folders they linked that no other function links. Missing folders are not an error."""
    function_root = work_root / name
    if name in (DEPS_ROOT, POOL_DIR) or not function_root.is_dir():
        return
    linked = set()
    for version in function_root.iterdir():
        with contextlib.suppress(OSError):
            linked.add(Path(os.readlink(version / "deps")).name)
    shutil.rmtree(function_root, ignore_errors=True)
    still_used = _linked_deps(work_root)
    for deps in linked - still_used:
        shutil.rmtree(work_root / DEPS_ROOT / deps, ignore_errors=True)


def _older_than(path: Path, cutoff: float) -> bool:
    try:
        return path.lstat().st_mtime < cutoff
    except OSError:
        return False


def _linked_deps(work_root: Path) -> set[str]:
    """Names of the dependency folders some version (or one being made) links to."""
    used: set[str] = set()
    for function_root in work_root.iterdir():
        if function_root.name == DEPS_ROOT or not function_root.is_dir():
            continue
        for version in function_root.iterdir():
            with contextlib.suppress(OSError):
                used.add(Path(os.readlink(version / "deps")).name)
    return used


class ProcessArtifacts:
    """The process backend's ``Artifacts``: prepared folders instead of images.

    Preparing is fast (a snapshot copy; dependencies are cached by content), so
    `plat dev`'s hot path is the same as a full deploy here.
    """

    name = "process"

    def __init__(self, work_root: Path, env: Mapping[str, str]) -> None:
        self.work_root = work_root
        self.env = env

    async def build(
        self,
        manifest: Manifest,
        source: Path,
        on_line: Callable[[str], None],
        *,
        force: bool = False,
    ) -> BuildOutcome:
        started = time.monotonic()
        log: list[str] = []

        def sink(line: str) -> None:
            log.append(line)
            on_line(line)

        version, ref, cached = await prepare_artifact(
            manifest, source, self.work_root, self.env, sink
        )
        return BuildOutcome(
            version, ref, cached, time.monotonic() - started, self.name, "\n".join(log)
        )

    async def hot(
        self, manifest: Manifest, source: Path, on_line: LineSink | None = None
    ) -> BuildOutcome | None:
        return await self.build(manifest, source, lambda _line: None)

    async def forget(self, name: str) -> None:
        """Delete every prepared version of ``name`` and the dependency folders only it
        used (without waiting for DEPS_GRACE_SECONDS)."""
        await asyncio.to_thread(forget_artifacts, self.work_root, name)

    async def pool_image(self, runtime: str) -> str:
        """An artifact with no function (empty code and dependency folders) that pool
        instances of ``runtime`` start from."""

        def lay_out() -> Path:
            folder = self.work_root / POOL_DIR / runtime
            for sub in ("app", "deps"):
                (folder / sub).mkdir(parents=True, exist_ok=True)
            meta = {"function": f"pool-{runtime}", "version": "pool", "runtime": runtime}
            (folder / ARTIFACT_META).write_text(json.dumps(meta) + "\n")
            return folder

        return image_ref(await asyncio.to_thread(lay_out))

    # The pool's Sources: a prepared folder already is what an instance runs.

    def layout(self, release: Release) -> Layout | None:
        try:
            artifact = artifact_dir(release.image)
        except PlatError:
            return None
        if not (artifact / "app").is_dir():
            return None
        deps = artifact / "deps"
        return Layout(artifact / "app", deps if deps.is_dir() else None)

    async def prepare(self, release: Release) -> Layout | None:
        return self.layout(release)

    def retain(self, releases: list[Release]) -> None:
        """Nothing to do: deploys prune prepared folders already."""
