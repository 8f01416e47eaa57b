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
import functools
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path

from plat.daemon.drivers.container.build import BuildOutcome
from plat.daemon.serving.function_state import Release
from plat.daemon.serving.pool import Layout
from plat.errors import BuildError, PlatError
from plat.ignore import (
    IgnoreRules,
    content_entries,
    copy_entries,
    copy_regular,
    digest_files,
    open_regular,
)
from plat.manifest import Manifest
from plat.runtimes import Runtime, get_runtime

PROCESS_IMAGE_PREFIX = "process:"
POOL_DIR = "_pool"
DEPS_ROOT = "_deps"
TMP_PREFIX = ".tmp-"
EMPTY_DEPS = "empty"
# Beside app/ and deps: which runtime's shim serves the folder (read by the backend).
ARTIFACT_META = "artifact.json"
# How many lines of a failed install's output the BuildError carries.
TAIL_LINES = 25
# A dependency folder used (or made) this recently is never pruned: another
# function's preparation may be about to link it.
DEPS_GRACE_SECONDS = 600.0
# Leftovers of a preparation killed with the daemon (no `finally` ran) older than this go.
STALE_TMP_SECONDS = 3600.0

# One install per dependency folder at a time within this daemon; across
# processes the rename into place settles who wins.
_install_locks: dict[Path, asyncio.Lock] = {}


def image_ref(artifact: Path) -> str:
    """The ``InstanceSpec.image`` of an artifact folder."""
    return f"{PROCESS_IMAGE_PREFIX}{artifact}"


def artifact_dir(image: str) -> Path:
    """The artifact folder named by an ``InstanceSpec.image`` of the process backend.

    Raises PlatError when ``image`` is not a ``process:<dir>`` reference (e.g. an
    image built for the container backend).
    """
    if not image.startswith(PROCESS_IMAGE_PREFIX) or len(image) == len(PROCESS_IMAGE_PREFIX):
        raise PlatError(
            f"{image!r} is not a process artifact (expected 'process:<folder>')",
            hint="redeploy the function so it is prepared for the process backend",
        )
    return Path(image[len(PROCESS_IMAGE_PREFIX) :])


def artifact_runtime(artifact: Path) -> str:
    """The runtime an artifact folder was prepared for; PlatError if it is not one."""
    try:
        meta = json.loads((artifact / ARTIFACT_META).read_text())
        runtime = meta["runtime"]
    except (OSError, ValueError, KeyError, TypeError):
        raise PlatError(
            f"{artifact} is not a prepared function folder (it may have been pruned)",
            hint="deploy the function again",
        ) from None
    return str(runtime)


def python_packages(requirements: str) -> bool:
    """Whether a requirements file names anything to install (not only comments/blanks)."""
    return any(
        line.strip() and not line.strip().startswith("#") for line in requirements.splitlines()
    )


def node_packages(package_json: str, source: str = "package.json") -> bool:
    """Whether a package.json declares (optional) dependencies; dev ones are never installed.

    Raises BuildError when it is not a JSON object.
    """
    try:
        data = json.loads(package_json)
    except ValueError as exc:
        raise BuildError(
            f"{source} is not valid JSON: {exc}", hint="fix the file and deploy again"
        ) from None
    if not isinstance(data, dict):
        raise BuildError(f"{source} must be a JSON object", hint="fix the file and deploy again")
    wanted = 0
    for key in ("dependencies", "optionalDependencies"):
        section = data.get(key) or {}
        if isinstance(section, dict):
            wanted += len(section)
    return wanted > 0


@functools.cache
def _node_abi(node: str | None) -> str:
    """``process.versions.modules`` of ``node`` (native addons are built for it)."""
    if node is None:
        return "none"
    try:
        result = subprocess.run(
            [node, "-p", "process.versions.modules"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() or "unknown"


def _toolchain_tag(runtime: str, env: Mapping[str, str]) -> str:
    """What installed packages depend on besides the dependency files.

    Compiled wheels and native addons only work with the interpreter they were
    installed for, so its identity is part of the dependency folder's key.
    """
    if runtime == "python":
        return f"{sys.implementation.cache_tag}-{platform.machine()}"
    return f"node-abi{_node_abi(shutil.which('node', path=env.get('PATH')))}-{platform.machine()}"


class _Plan:
    """What one preparation needs, computed before anything is written."""

    def __init__(self, runtime: Runtime, source: Path, env: Mapping[str, str]) -> None:
        self.runtime = runtime
        self.source = source
        self.entries = IgnoreRules(source).entries()
        self.dependencies = content_entries(self.entries, runtime.dependencies)
        self.dependency_files = list(self.dependencies)
        self.has_packages = self._has_packages()
        if self.has_packages:
            tag = _toolchain_tag(runtime.name, env)
            names = "\0".join(self.dependency_files)
            deps_digest = digest_files(
                source,
                list(self.dependencies.values()),
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

    def _read(self, name: str) -> str:
        with open_regular(self.source, self.dependencies[name].path) as fh:
            return fh.read().decode(errors="replace")

    def _has_packages(self) -> bool:
        if self.runtime.name == "python" and "requirements.txt" in self.dependencies:
            return python_packages(self._read("requirements.txt"))
        if self.runtime.name == "node" and "package.json" in self.dependencies:
            return node_packages(self._read("package.json"), str(self.source / "package.json"))
        return False


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
    if runtime.name == "dockerfile" or runtime.shim_dir is None:
        raise PlatError(
            f"the process backend cannot run `{runtime.name}` functions",
            hint="use the container backend: `plat daemon start --backend container`",
        )
    source = source.resolve()
    plan = await asyncio.to_thread(_Plan, runtime, source, env)
    function_root = work_root / manifest.name
    target = function_root / plan.version
    deps_dir = work_root / DEPS_ROOT / plan.deps_key

    deps_ready = await asyncio.to_thread(_deps_exists, deps_dir)
    if not deps_ready:
        await _install_deps(plan, deps_dir, env, on_line)
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
    if not await asyncio.to_thread(_deps_exists, deps_dir):
        # `plat rm` of the last other function using it removed it meanwhile.
        await _install_deps(plan, deps_dir, env, on_line)
    return plan.version, image_ref(target), cached


def _deps_exists(deps_dir: Path) -> bool:
    return deps_dir.is_dir()


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
        try:
            tmp.rename(target)
        except OSError:
            # Another preparation of the same version got there first: same content.
            if not target.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


async def _install_deps(
    plan: _Plan, deps_dir: Path, env: Mapping[str, str], on_line: Callable[[str], None]
) -> None:
    lock = _install_locks.setdefault(deps_dir, asyncio.Lock())
    async with lock:
        if await asyncio.to_thread(_deps_exists, deps_dir):
            return  # installed by the preparation we waited for
        deps_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = deps_dir.parent / f"{TMP_PREFIX}{deps_dir.name}-{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            if plan.runtime.name == "node":
                (tmp / "node_modules").mkdir()
            if not plan.has_packages:
                files = ", ".join(plan.dependency_files) or "no dependency file"
                on_line(f"no dependencies to install ({files})")
            else:
                # Installed from copies, as in the image build: the folder records its input.
                for name, entry in plan.dependencies.items():
                    copy_regular(plan.source, entry.path, tmp / name)
                if plan.runtime.name == "python":
                    await _pip_install(tmp, env, on_line)
                else:
                    await _npm_install(tmp, plan.dependency_files, env, on_line)
            try:
                tmp.rename(deps_dir)
            except OSError:
                if not deps_dir.is_dir():
                    raise
        finally:
            if tmp.exists():
                await asyncio.to_thread(shutil.rmtree, tmp, True)


async def _pip_install(
    target: Path, env: Mapping[str, str], on_line: Callable[[str], None]
) -> None:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-input",
        "--disable-pip-version-check",
        "--no-warn-script-location",
        "--target",
        str(target),
        "-r",
        str(target / "requirements.txt"),
    ]
    await _run_installer(
        cmd,
        target,
        {
            **env,
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_NO_INPUT": "1",
            # Installing into a private --target folder is fine as root.
            "PIP_ROOT_USER_ACTION": "ignore",
        },
        on_line,
        what="requirements.txt",
        hint="check requirements.txt: every line must name a package pip can install "
        "(e.g. humanize==4.17.0); pip's error is in the lines above",
    )


async def _npm_install(
    target: Path, present: list[str], env: Mapping[str, str], on_line: Callable[[str], None]
) -> None:
    npm = shutil.which("npm", path=env.get("PATH"))
    if npm is None:
        raise BuildError(
            "npm is not installed, and package.json lists dependencies",
            hint="install Node.js with npm, or use the container backend",
        )
    verb = "ci" if "package-lock.json" in present else "install"
    cmd = [npm, verb, "--omit=dev", "--no-audit", "--no-fund", "--update-notifier=false"]
    await _run_installer(
        cmd,
        target,
        dict(env),
        on_line,
        what="package.json",
        hint="check the dependencies in package.json (and package-lock.json); "
        "npm's error is in the lines above",
    )


async def _run_installer(
    cmd: list[str],
    cwd: Path,
    env: Mapping[str, str],
    on_line: Callable[[str], None],
    *,
    what: str,
    hint: str,
) -> None:
    """Run an installer, streaming its merged output; BuildError with the tail on failure."""
    on_line("$ " + " ".join(cmd))
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        cwd=cwd,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        # Own group, so cancelling stops pip's or npm's children too.
        start_new_session=True,
    )
    assert proc.stdout is not None
    try:
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\r\n")
            tail.append(line)
            on_line(line)
        code = await proc.wait()
    except BaseException:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        raise
    if code != 0:
        raise BuildError(
            f"installing the dependencies from {what} failed ({Path(cmd[0]).name} exit {code})",
            log_tail="\n".join(tail),
            hint=hint,
        )


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

    async def hot(self, manifest: Manifest, source: Path) -> BuildOutcome | None:
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
