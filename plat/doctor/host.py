"""Looking at this host for `plat doctor`: tools, engine, containers.conf, cgroups, daemon.

Every probe is impure (subprocesses, files, sockets); what they find becomes
the :class:`~plat.doctor.facts.Facts` that plat.doctor.checks judges.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pwd
import resource
import shutil
import socket
import stat
import subprocess
import tomllib
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests

from plat.baseimages import image_exists, qualify
from plat.doctor.facts import PODMAN_DEFAULT_RLIMIT, BaseImageFacts, CgroupLayout, Facts
from plat.engine import PING_API_VERSION, candidate_endpoints, find_engine
from plat.paths import Home
from plat.runtimes import all_runtimes

SYSTEM_CONF_FILES = (
    Path("/usr/share/containers/containers.conf"),
    Path("/etc/containers/containers.conf"),
)
SYSTEM_CONF_DIRS = (Path("/etc/containers/containers.conf.d"),)


def cgroup_layout(mounts: str) -> CgroupLayout:
    """v2, hybrid (v1 controllers plus a cgroup2 mount) or v1, from /proc/self/mounts text."""
    v1 = v2 = False
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        mountpoint, fstype = parts[1], parts[2]
        if fstype == "cgroup2":
            if mountpoint == "/sys/fs/cgroup":
                return "v2"
            v2 = True
        elif fstype == "cgroup":
            v1 = True
    if v1:
        return "hybrid" if v2 else "v1"
    return "unknown"


def merge_containers_conf(texts: Iterable[str]) -> dict[str, Any]:
    """The ``default_ulimits`` and ``runtime`` that containers.conf files set, later files win.

    Unparsable files are skipped (podman would complain about them itself).
    """
    merged: dict[str, Any] = {"default_ulimits": None, "runtime": None}
    for text in texts:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            continue
        ulimits = data.get("containers", {}).get("default_ulimits")
        if ulimits is not None:
            merged["default_ulimits"] = list(ulimits)
        runtime = data.get("engine", {}).get("runtime")
        if runtime:
            merged["runtime"] = str(runtime)
    return merged


def containers_conf_files(env: Mapping[str, str], is_root: bool) -> list[Path]:
    """The containers.conf files podman reads, lowest precedence first."""
    if env.get("CONTAINERS_CONF"):
        return [Path(env["CONTAINERS_CONF"])]
    files = list(SYSTEM_CONF_FILES)
    dirs = list(SYSTEM_CONF_DIRS)
    if not is_root:
        user = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "containers"
        files.append(user / "containers.conf")
        dirs.append(user / "containers.conf.d")
    for folder in dirs:
        if folder.is_dir():
            files += sorted(folder.glob("*.conf"))
    return files


def _can_raise_rlimits() -> bool:
    """Whether this process may raise its hard limits to podman's default (undone at once)."""
    for limit in (resource.RLIMIT_NOFILE, resource.RLIMIT_NPROC):
        soft, hard = resource.getrlimit(limit)
        if hard == resource.RLIM_INFINITY or hard >= PODMAN_DEFAULT_RLIMIT:
            continue
        try:
            resource.setrlimit(limit, (soft, PODMAN_DEFAULT_RLIMIT))
        except (ValueError, OSError):
            return False
        resource.setrlimit(limit, (soft, hard))
    return True


def _version(cmd: list[str]) -> str | None:
    """The version ``<tool> --version`` prints (``buildah version 1.28.2 (...)`` -> 1.28.2)."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=15, check=False)
    except subprocess.TimeoutExpired:
        return "unknown (did not answer)"
    words = result.stdout.split()
    if result.returncode != 0 or not words:
        return "unknown"
    if "version" in words[:-1]:
        return words[words.index("version") + 1].rstrip(",")
    return words[-1]


def _podman_info() -> dict[str, str]:
    fmt = "{{.Host.OCIRuntime.Name}}\n{{.Store.GraphDriverName}}"
    try:
        result = subprocess.run(
            ["podman", "info", "--format", fmt],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (subprocess.TimeoutExpired, FileNotFoundError):
        return {}
    lines = result.stdout.splitlines()
    if result.returncode != 0 or len(lines) < 2:
        return {}
    return {"runtime": lines[0].strip(), "driver": lines[1].strip()}


def has_subid_range(table: Path, user: str, uid: int) -> bool:
    """Whether ``table`` (/etc/subuid or /etc/subgid) gives ``user`` a range (by name
    or uid, as shadow-utils reads it)."""
    try:
        lines = table.read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        parts = line.strip().split(":")
        named = len(parts) == 3 and parts[0] in (user, str(uid))
        if named and parts[2].isdigit() and int(parts[2]) > 0:
            return True
    return False


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def docker_image_exists(endpoint: str, ref: str) -> bool:
    """Whether Docker at ``endpoint`` has ``ref`` in its image store."""
    try:
        api = docker.APIClient(base_url=endpoint, timeout=10, version=PING_API_VERSION)
    except docker.errors.DockerException:
        return False
    try:
        api.inspect_image(ref)
    except (docker.errors.DockerException, requests.RequestException, OSError):
        return False
    finally:
        api.close()
    return True


def _writable(path: Path) -> bool:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return os.access(probe, os.W_OK | os.X_OK)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(str(self._path))
        self.sock = sock


def daemon_status(home: Home, timeout: float = 2.0) -> tuple[str | None, str]:
    """(summary, "") when the daemon answers GET /v1/status, else (None, why not)."""
    if not home.socket.exists():
        return None, f"no socket at {home.socket}"
    conn = _UnixHTTPConnection(home.socket, timeout)
    try:
        conn.request("GET", "/v1/status")
        response = conn.getresponse()
        body = response.read()
    except OSError as exc:
        return None, f"{home.socket} does not answer ({exc.strerror or exc})"
    finally:
        conn.close()
    if response.status != 200:
        return None, f"GET /v1/status answered {response.status}"
    summary = f"answering on {home.socket}"
    with contextlib.suppress(ValueError, AttributeError):
        data = json.loads(body)
        extra = [f"{k} {data[k]}" for k in ("version", "pid", "backend") if k in data]
        if extra:
            summary += " (" + ", ".join(extra) + ")"
    return summary, ""


def gather_facts(home: Home, env: Mapping[str, str], configured: str | None = None) -> Facts:
    """Look at this host. Slow parts (podman, sockets) run side by side; takes ~1 s."""
    is_root = os.geteuid() == 0
    runtimes = [r for r in all_runtimes().values() if r.base or r.bootstrap]
    refs = {
        ref
        for r in runtimes
        for ref in (qualify(r.base) if r.base else None, r.bootstrap.image if r.bootstrap else None)
        if ref
    }
    podman_installed = shutil.which("podman") is not None
    with ThreadPoolExecutor(max_workers=8) as pool:
        engine_f = pool.submit(
            find_engine,
            env,
            configured,
            extra=(str(home.run_dir / "podman.sock"),),
            docker_default=not podman_installed,
        )
        info_f = pool.submit(_podman_info) if podman_installed else None
        podman_f = pool.submit(_version, ["podman", "--version"])
        buildah_f = pool.submit(_version, ["buildah", "--version"])
        daemon_f = pool.submit(daemon_status, home)
        exists = {ref: pool.submit(image_exists, ref) for ref in sorted(refs)}

        engine = engine_f.result()
        if engine is not None and engine.name == "docker":
            # Docker keeps its own image store: what podman has does not count there.
            exists = {ref: pool.submit(docker_image_exists, engine.endpoint, ref) for ref in refs}

        def present(ref: str | None) -> bool:
            return ref is not None and exists[ref].result()

        conf = merge_containers_conf(_read(path) for path in containers_conf_files(env, is_root))
        try:
            mounts = Path("/proc/self/mounts").read_text()
        except OSError:
            mounts = ""
        try:
            tun_mode: int | None = stat.S_IMODE(os.stat("/dev/net/tun").st_mode)
        except OSError:
            tun_mode = None
        info = info_f.result() if info_f else {}
        status, why = daemon_f.result()
        return Facts(
            is_root=is_root,
            plat_home=str(home.root),
            home_writable=_writable(home.root),
            engine=engine,
            engine_candidates=candidate_endpoints(
                env, configured, docker_default=not podman_installed
            ),
            podman=podman_f.result(),
            buildah=buildah_f.result(),
            runc=shutil.which("runc") is not None,
            crun=shutil.which("crun") is not None,
            mmdebstrap=shutil.which("mmdebstrap") is not None,
            oci_runtime=info.get("runtime"),
            storage_driver=info.get("driver"),
            cgroup=cgroup_layout(mounts),
            conf_ulimits=conf["default_ulimits"],
            conf_runtime=conf["runtime"],
            can_raise_rlimits=_can_raise_rlimits(),
            base_images=[
                BaseImageFacts(
                    runtime=r.name,
                    public=qualify(r.base) if r.base else None,
                    public_present=present(qualify(r.base) if r.base else None),
                    bootstrap=r.bootstrap.image if r.bootstrap else None,
                    bootstrap_present=present(r.bootstrap.image if r.bootstrap else None),
                )
                for r in runtimes
            ],
            tun_mode=tun_mode,
            user=_user(),
            subuid=has_subid_range(Path("/etc/subuid"), _user(), os.geteuid()),
            subgid=has_subid_range(Path("/etc/subgid"), _user(), os.geteuid()),
            newuidmap=shutil.which("newuidmap") is not None,
            daemon_status=status,
            daemon_detail=why,
        )


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
