"""Base images: the public ones when present or pullable, local Debian-built ones otherwise.

A runtime's ``base`` (``python:3.12-slim``) is used when it is in local storage
or one pull of it succeeds. Hosts that cannot reach a registry build an
equivalent from Debian packages with :func:`bootstrap` (``plat runtime
bootstrap``): mmdebstrap makes a root filesystem tarball, cached on disk and
keyed on its package list, and buildah commits it ``FROM scratch`` under the
runtime's ``bootstrap.image`` tag. Buildah and rootful Podman share
``/var/lib/containers/storage``, so the image is runnable at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

from plat.errors import BuildError, CommandError, PlatError
from plat.paths import Home
from plat.runtimes import Runtime, all_runtimes, get_runtime

Progress = Callable[[str], None]

DEBIAN_SUITE = "bookworm"
SHARED_CACHE = Path("/var/cache/plat")
# Measured on a host without registry access: the pull fails in ~0.06 s (DNS).
# The bound is for networks that drop packets instead of refusing them.
PULL_TIMEOUT = 20.0
DEFAULT_REGISTRY = "docker.io"

# Commands the public images have on PATH that Debian names differently:
# {runtime: [(command, Debian's name)]}; linked in /usr/local/bin only if missing.
PATH_ALIASES: dict[str, list[tuple[str, str]]] = {
    "python": [("python", "python3")],
    "node": [("node", "nodejs")],
}
# The image's default command, as in the public images.
DEFAULT_CMD: dict[str, str] = {"python": "python3", "node": "node"}
# Bumped when the recipe changes, so cached tarballs made by an older one are not reused.
RECIPE_VERSION = "1"


# ---------------------------------------------------------------------------
# references


def qualify(ref: str) -> str:
    """``python:3.12-slim`` -> ``docker.io/library/python:3.12-slim``; qualified refs unchanged.

    The first path component names a registry when it contains ``.`` or ``:`` or
    is ``localhost`` (the rule Docker applies).
    """
    first, sep, _ = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return ref
    if not sep:
        return f"{DEFAULT_REGISTRY}/library/{ref}"
    return f"{DEFAULT_REGISTRY}/{ref}"


def spellings(ref: str) -> list[str]:
    """Every way a Dockerfile may name a Docker Hub image, the given one first.

    ``python:3.12-slim`` -> itself, ``library/python:3.12-slim``,
    ``docker.io/python:3.12-slim``, ``docker.io/library/python:3.12-slim``
    (plus the ``index.docker.io`` forms). Refs on other registries have one spelling.
    """
    full = qualify(ref)
    prefix = f"{DEFAULT_REGISTRY}/"
    if not full.startswith(prefix):
        return [ref]
    path = full[len(prefix) :]
    names = [path]
    if path.startswith("library/"):
        names.insert(0, path[len("library/") :])
    found: list[str] = [ref]
    for name in names:
        for spelled in (name, f"docker.io/{name}", f"index.docker.io/{name}"):
            if spelled not in found:
                found.append(spelled)
    return found


_FROM_RE = re.compile(
    r"""^(?P<lead>\s*FROM\s+(?:--\S+\s+)*)   # FROM and its flags (--platform=...)
        (?P<image>[^\s#]+)
        (?P<rest>.*)$""",
    re.IGNORECASE | re.VERBOSE,
)


def rewrite_from_lines(dockerfile_text: str, mapping: dict[str, str]) -> str:
    """Replace the image of each ``FROM <image> [AS name]`` line found in ``mapping``.

    Flags (``--platform=...``), the stage name, indentation, comments and every
    other line are kept byte for byte, as are line endings. Images not in the
    mapping (earlier stage names, ``${ARG}`` references) are left alone.
    """
    lines = dockerfile_text.splitlines(keepends=True)
    for index, line in enumerate(lines):
        body = line.rstrip("\r\n")
        match = _FROM_RE.match(body)
        if match and match["image"] in mapping:
            ending = line[len(body) :]
            lines[index] = f"{match['lead']}{mapping[match['image']]}{match['rest']}{ending}"
    return "".join(lines)


# ---------------------------------------------------------------------------
# local storage


def image_exists(ref: str) -> bool:
    """Whether ``ref`` is in local container storage (``podman image exists``).

    False when podman is not installed. Buildah and rootful Podman share storage,
    so this also sees images buildah just committed.
    """
    if shutil.which("podman") is None:
        return False
    try:
        result = subprocess.run(
            ["podman", "image", "exists", ref],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


_pull_results: dict[str, bool] = {}
_pull_lock = threading.Lock()


def pull_once(ref: str, timeout: float = PULL_TIMEOUT) -> bool:
    """Pull ``ref`` at most once per process; True when it is now local. Blocking.

    The outcome, failure included, is remembered, so a host without registry
    access pays for one failed attempt per process, not one per build.
    Concurrent callers wait for the one pull in progress.
    """
    with _pull_lock:
        if ref not in _pull_results:
            _pull_results[ref] = _pull(ref, timeout)
        return _pull_results[ref]


def _pull(ref: str, timeout: float) -> bool:
    if shutil.which("podman") is None:
        return False
    try:
        result = subprocess.run(
            ["podman", "pull", "--quiet", ref],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def forget_pulls() -> None:
    """Clear the in-process pull memory (for tests and long-lived processes)."""
    with _pull_lock:
        _pull_results.clear()


def resolve_base_sync(runtime: Runtime, *, pull: bool = True) -> str:
    """The image a build of ``runtime`` should start from. Blocking; see resolve_base."""
    boot = runtime.bootstrap
    if runtime.base is None and boot is None:
        raise PlatError(f"runtime {runtime.name!r} has no base image")
    if runtime.base is not None:
        public = qualify(runtime.base)
        if image_exists(public):
            return public
        if pull and pull_once(public):
            return public
    if boot is not None and image_exists(boot.image):
        return boot.image
    wanted = qualify(runtime.base) if runtime.base else boot.image if boot else runtime.name
    raise BuildError(
        f"the base image {wanted} of runtime {runtime.name!r} is not in local storage "
        "and cannot be pulled",
        hint=f"run `plat runtime bootstrap {runtime.name}` to build a local equivalent "
        "from Debian packages",
    )


async def resolve_base(runtime: Runtime, *, pull: bool = True) -> str:
    """The image a build of ``runtime`` should start from.

    In order: the public base (fully qualified, e.g.
    ``docker.io/library/python:3.12-slim``) when in local storage; the same after
    one pull attempt per process (skipped when ``pull`` is False); the bootstrap
    image when present. Raises BuildError hinting at `plat runtime bootstrap`.
    """
    return await asyncio.to_thread(resolve_base_sync, runtime, pull=pull)


def local_equivalents_sync(
    runtimes: Iterable[Runtime] | None = None, *, pull: bool = True
) -> dict[str, str]:
    """Every spelling of each runtime's public base -> the image to use in its place.

    Runtimes whose base cannot be resolved are left out (a user Dockerfile naming
    them then fails in the build with the engine's own message). Blocking.
    """
    mapping: dict[str, str] = {}
    for runtime in all_runtimes().values() if runtimes is None else runtimes:
        if runtime.base is None:
            continue
        try:
            resolved = resolve_base_sync(runtime, pull=pull)
        except BuildError:
            continue
        for spelled in spellings(runtime.base):
            mapping.setdefault(spelled, resolved)
    return mapping


async def local_equivalents(
    runtimes: Iterable[Runtime] | None = None, *, pull: bool = True
) -> dict[str, str]:
    """Async wrapper of :func:`local_equivalents_sync`, for the builder."""
    return await asyncio.to_thread(local_equivalents_sync, runtimes, pull=pull)


# ---------------------------------------------------------------------------
# bootstrap


def default_cache_dir(home: Home | None = None) -> Path:
    """``/var/cache/plat`` for root (shared by every PLAT_HOME), else ``$PLAT_HOME/cache``."""
    if os.geteuid() == 0:
        return SHARED_CACHE
    return (home or Home.from_env()).cache_dir


def rootfs_key(runtime: Runtime) -> str:
    """The cache key of a runtime's root filesystem: suite, packages, aliases, recipe."""
    boot = runtime.bootstrap
    packages = sorted(boot.packages) if boot else []
    aliases = PATH_ALIASES.get(runtime.name, [])
    text = f"{RECIPE_VERSION}|{DEBIAN_SUITE}|{','.join(packages)}|{aliases}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _customize_hooks(runtime: Runtime) -> list[str]:
    # Hooks run on the host with the root filesystem's path as $1, so they need
    # nothing from inside the chroot.
    hooks = []
    for command, debian_name in PATH_ALIASES.get(runtime.name, []):
        hooks.append(
            f'if [ ! -e "$1/usr/bin/{command}" ] && [ -e "$1/usr/bin/{debian_name}" ]; then '
            f'ln -s /usr/bin/{debian_name} "$1/usr/local/bin/{command}"; fi'
        )
    # The public python images let `pip install` write to the system; Debian's
    # PEP 668 marker would refuse it. Removing it makes both bases behave alike.
    hooks.append('rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED')
    hooks.append('rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin')
    return hooks


def _run(cmd: list[str], progress: Progress | None, *, hint: str | None = None) -> str:
    """Run ``cmd``, feeding each output line to ``progress``; raise CommandError on failure."""
    tail: deque[str] = deque(maxlen=200)
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
    except FileNotFoundError as exc:
        raise CommandError(cmd, 127, str(exc), hint=hint) from exc
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        tail.append(line)
        if progress and line:
            progress(line)
    code = proc.wait()
    output = "\n".join(tail)
    if code != 0:
        raise CommandError(cmd, code, output, hint=hint)
    return output


def _require(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        raise PlatError(
            f"{tool} is not installed; it is needed to build base images",
            hint=f"`sudo apt-get install {package}` (or run scripts/setup.sh install)",
        )


def build_rootfs(
    runtime: Runtime, cache_dir: Path, *, force: bool = False, progress: Progress | None = None
) -> Path:
    """The cached root filesystem tarball of ``runtime``, made with mmdebstrap if missing.

    Made under a temporary name and renamed, so an interrupted run never leaves
    a truncated tarball to be reused.
    """
    boot = runtime.bootstrap
    if boot is None:
        raise PlatError(f"runtime {runtime.name!r} has no bootstrap section")
    cache_dir.mkdir(parents=True, exist_ok=True)
    tarball = cache_dir / f"{runtime.name}-{rootfs_key(runtime)}.tar"
    if tarball.is_file() and not force:
        if progress:
            progress(f"reusing {tarball}")
        return tarball
    _require("mmdebstrap", "mmdebstrap")
    partial = tarball.with_name(f"{tarball.name}.{os.getpid()}.partial")
    cmd = [
        "mmdebstrap",
        "--variant=apt",
        "--format=tar",
        f"--include={','.join(boot.packages)}",
        # apt's "Recommends" would pull in compilers with python3-pip and npm.
        '--aptopt=APT::Install-Recommends "false"',
        *(f"--customize-hook={hook}" for hook in _customize_hooks(runtime)),
        DEBIAN_SUITE,
        str(partial),
    ]
    if progress:
        progress(f"mmdebstrap {DEBIAN_SUITE} with {', '.join(boot.packages)}")
    try:
        _run(cmd, progress, hint="check that the Debian mirror (deb.debian.org) is reachable")
        partial.rename(tarball)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return tarball


def bootstrap(
    runtime: Runtime,
    *,
    force: bool = False,
    progress: Progress | None = None,
    cache_dir: Path | None = None,
) -> str:
    """Build ``runtime.bootstrap.image`` from Debian packages and return its name.

    A no-op when the image already exists (unless ``force``, which also remakes
    the cached tarball). The image carries the label
    ``plat.bootstrap.packages=<comma-separated packages>``. Blocking (~40 s the
    first time, seconds with a cached tarball). Raises PlatError when the
    runtime has no bootstrap section or a tool is missing, CommandError when
    mmdebstrap or buildah fails.
    """
    boot = runtime.bootstrap
    if boot is None:
        raise PlatError(
            f"runtime {runtime.name!r} has no bootstrap section in its runtime.yaml",
            hint="only runtimes with a base image can be bootstrapped",
        )
    if not force and image_exists(boot.image):
        if progress:
            progress(f"{boot.image} already present")
        return boot.image
    _require("buildah", "buildah")
    tarball = build_rootfs(
        runtime, cache_dir or default_cache_dir(), force=force, progress=progress
    )
    if progress:
        progress(f"committing {boot.image}")
    container = _run(["buildah", "from", "--quiet", "scratch"], None).strip().splitlines()[-1]
    try:
        _run(["buildah", "add", "--quiet", container, str(tarball), "/"], progress)
        config = [
            "buildah",
            "config",
            "--env",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--env",
            "LANG=C.UTF-8",
            "--label",
            f"plat.bootstrap.packages={','.join(boot.packages)}",
            "--label",
            f"plat.bootstrap.runtime={runtime.name}",
            "--label",
            f"plat.bootstrap.suite={DEBIAN_SUITE}",
        ]
        if runtime.name in DEFAULT_CMD:
            config += ["--cmd", DEFAULT_CMD[runtime.name]]
        _run([*config, container], None)
        _run(["buildah", "commit", "--quiet", "--rm", container, boot.image], None)
    except BaseException:
        subprocess.run(["buildah", "rm", container], capture_output=True, check=False)
        raise
    return boot.image


def bootstrappable(names: Iterable[str] = ()) -> list[Runtime]:
    """The runtimes named (all with a bootstrap section when none are); unknown names raise."""
    wanted = list(names)
    if not wanted:
        return [r for r in all_runtimes().values() if r.bootstrap is not None]
    return [get_runtime(name) for name in wanted]
