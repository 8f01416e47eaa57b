"""Installing a function's dependencies for the process backend: pip or npm, once per
distinct dependency-file content (and interpreter), into a folder of their own.

Every folder is assembled under a temporary name and renamed into place, so a
failed or cancelled install never leaves a half-made folder behind that a later
call would take for finished.
"""

from __future__ import annotations

import asyncio
import functools
import json
import platform
import secrets
import shutil
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from plat.daemon.drivers.process.layout import TMP_PREFIX, rename_into_place
from plat.errors import BuildError
from plat.ignore import Entry, copy_regular, open_regular
from plat.subprocesses import stream_lines

# How many lines of a failed install's output the BuildError carries.
TAIL_LINES = 25

# One install per dependency folder at a time within this daemon; across
# processes the rename into place settles who wins.
_install_locks: dict[Path, asyncio.Lock] = {}


@dataclass(frozen=True)
class DependencyFiles:
    """A function's dependency files, as present in its folder."""

    runtime: str
    source: Path
    # {name: the regular file standing for it}
    files: dict[str, Entry]

    def read(self, name: str) -> str:
        with open_regular(self.source, self.files[name].path) as fh:
            return fh.read().decode(errors="replace")

    @functools.cached_property
    def has_packages(self) -> bool:
        """Whether they name anything to install."""
        if self.runtime == "python" and "requirements.txt" in self.files:
            return python_packages(self.read("requirements.txt"))
        if self.runtime == "node" and "package.json" in self.files:
            return node_packages(self.read("package.json"), str(self.source / "package.json"))
        return False


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


def toolchain_tag(runtime: str, env: Mapping[str, str]) -> str:
    """What installed packages depend on besides the dependency files.

    Compiled wheels and native addons only work with the interpreter they were
    installed for, so its identity is part of the dependency folder's key.
    """
    if runtime == "python":
        return f"{sys.implementation.cache_tag}-{platform.machine()}"
    return f"node-abi{_node_abi(shutil.which('node', path=env.get('PATH')))}-{platform.machine()}"


async def install_deps(
    deps: DependencyFiles,
    deps_dir: Path,
    env: Mapping[str, str],
    on_line: Callable[[str], None],
) -> None:
    """Install ``deps`` into ``deps_dir`` unless it exists (a folder with an empty
    node_modules/ when there is nothing to install). Raises BuildError with the
    installer's output tail; cancelling stops the installer and leaves no folder."""
    lock = _install_locks.setdefault(deps_dir, asyncio.Lock())
    async with lock:
        if await asyncio.to_thread(deps_dir.is_dir):
            return  # installed by the preparation we waited for
        deps_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = deps_dir.parent / f"{TMP_PREFIX}{deps_dir.name}-{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            if deps.runtime == "node":
                (tmp / "node_modules").mkdir()
            if not deps.has_packages:
                files = ", ".join(deps.files) or "no dependency file"
                on_line(f"no dependencies to install ({files})")
            else:
                # Installed from copies, as in the image build: the folder records its input.
                for name, entry in deps.files.items():
                    copy_regular(deps.source, entry.path, tmp / name)
                if deps.runtime == "python":
                    await _pip_install(tmp, env, on_line)
                else:
                    await _npm_install(tmp, list(deps.files), env, on_line)
            rename_into_place(tmp, deps_dir)
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

    def keep(line: str) -> None:
        tail.append(line)
        on_line(line)

    # Cancelling stops pip's or npm's children too.
    code = await stream_lines(cmd, keep, cwd=cwd, env=env)
    if code != 0:
        raise BuildError(
            f"installing the dependencies from {what} failed ({Path(cmd[0]).name} exit {code})",
            log_tail="\n".join(tail),
            hint=hint,
        )
