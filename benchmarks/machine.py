"""The machine and the tool versions a report states, and the tools a run needs."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from benchmarks.context import REPO, BenchError
from benchmarks.shell import run


def _first_line(cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    text = (proc.stdout or proc.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def _last_word(line: str) -> str:
    return line.split()[-1] if line.split() else line


def machine() -> list[tuple[str, str]]:
    """Cores, memory, kernel, OS and load: the facts a reader needs to weigh the numbers."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    os_name = platform.system()
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.partition("=")[2].strip('"')
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        ("cores", f"{os.cpu_count()} ({model})"),
        ("memory", f"{mem_kib / 1024**2:.1f} GiB"),
        ("kernel", platform.release()),
        ("OS", os_name),
        ("load average at start (1, 5, 15 min)", load),
    ]


def plat_version() -> str:
    import plat

    version = str(plat.__version__)
    git = shutil.which("git")
    if git is None:
        return version
    head = run([git, "-C", str(REPO), "rev-parse", "--short", "HEAD"], check=False).stdout.strip()
    if not head:
        return version
    dirty = run(
        [git, "-C", str(REPO), "status", "--porcelain", "--", "plat", "runtimes"], check=False
    ).stdout.strip()
    return f"{version} (git {head}{', with uncommitted changes' if dirty else ''})"


def versions() -> list[tuple[str, str]]:
    """Versions of plat and of every tool the benchmarks use."""
    import aiohttp

    nginx = _first_line(["nginx", "-v"])
    wrk_line = _first_line(["wrk", "-v"])
    wrk_version = wrk_line.split()[1] if wrk_line.startswith("wrk ") else wrk_line
    buildah = _first_line(["buildah", "--version"]).split()
    return [
        ("plat", plat_version()),
        ("Python", platform.python_version()),
        ("aiohttp (gateway)", aiohttp.__version__),
        ("Podman", _last_word(_first_line(["podman", "--version"]))),
        ("Buildah", buildah[2] if len(buildah) > 2 else " ".join(buildah)),
        ("runc", _last_word(_first_line(["runc", "--version"]))),
        ("wrk", wrk_version),
        ("nginx", nginx.rpartition("/")[2] if "/" in nginx else nginx),
    ]


def check_tools(names: Iterable[str]) -> None:
    """Raise BenchError naming the install command when a tool is missing."""
    packages = {"wrk": "wrk", "nginx": "nginx", "podman": "podman", "buildah": "buildah"}
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        pkgs = " ".join(packages.get(m, m) for m in missing)
        raise BenchError(
            f"missing tools: {', '.join(missing)}; install them with "
            f"`apt-get install -y --no-install-recommends {pkgs}` (scripts/setup.sh does)"
        )
