"""`plat doctor`: what this host can do, and how to fix what it cannot.

Two halves, kept apart so tests can feed in any host: :func:`gather_facts` looks
at the machine (subprocesses, files, sockets) and :func:`judge` turns the
:class:`Facts` into :class:`Check` rows without touching anything.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import resource
import shutil
import socket
import stat
import subprocess
import tomllib
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from plat.baseimages import image_exists, qualify
from plat.engine import EngineInfo, candidate_endpoints, find_engine
from plat.paths import Home
from plat.runtimes import all_runtimes

CgroupLayout = Literal["v2", "hybrid", "v1", "unknown"]

# What rootful podman asks for when containers.conf sets no default_ulimits
# (podman's RLimitDefaultValue). A host that cannot grant it fails every run with
# "error setting rlimits ... operation not permitted".
PODMAN_DEFAULT_RLIMIT = 1_048_576

DROP_IN_PATH = "/etc/containers/containers.conf.d/50-plat.conf"
DROP_IN = """[containers]
default_ulimits = ["nofile=20000:20000", "nproc=1000:1000"]
[engine]
runtime = "runc"
"""
CONF_FIX = (
    f"write {DROP_IN_PATH} (or run `sudo bash scripts/setup.sh install`):\n{DROP_IN.rstrip()}"
)

SYSTEM_CONF_FILES = (
    Path("/usr/share/containers/containers.conf"),
    Path("/etc/containers/containers.conf"),
)
SYSTEM_CONF_DIRS = (Path("/etc/containers/containers.conf.d"),)


@dataclass(frozen=True)
class Check:
    """One row of the report. ``ok``: True passes, False fails, None is a warning or note."""

    name: str
    ok: bool | None
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class BaseImageFacts:
    runtime: str
    public: str | None
    public_present: bool
    bootstrap: str | None
    bootstrap_present: bool


@dataclass
class Facts:
    """Everything judge() needs to know about the host; defaults describe a bare machine."""

    is_root: bool = True
    plat_home: str = "~/.plat"
    home_writable: bool = True
    engine: EngineInfo | None = None
    engine_candidates: list[str] = field(default_factory=list)
    podman: str | None = None  # version, None when not installed
    buildah: str | None = None
    runc: bool = False
    crun: bool = False
    mmdebstrap: bool = False
    oci_runtime: str | None = None  # the runtime podman uses
    storage_driver: str | None = None
    cgroup: CgroupLayout = "unknown"
    conf_ulimits: list[str] | None = None
    conf_runtime: str | None = None
    can_raise_rlimits: bool = True  # can a container get PODMAN_DEFAULT_RLIMIT?
    base_images: list[BaseImageFacts] = field(default_factory=list)
    tun_mode: int | None = None
    daemon_status: str | None = None  # the daemon's answer; None when it does not answer
    daemon_detail: str = ""
    config_error: str = ""  # why $PLAT_HOME/config.yaml or PLAT_* could not be read


# ---------------------------------------------------------------------------
# judging (pure)


def judge(facts: Facts) -> list[Check]:
    """The report rows for ``facts``; the same facts always give the same rows."""
    checks = [
        _engine(facts),
        _buildah(facts),
        _oci_runtime(facts),
        _ulimits(facts),
        *_base_images(facts),
        _mmdebstrap(facts),
    ]
    if not facts.is_root:
        checks += _rootless(facts)
    checks += [_home(facts), _daemon(facts)]
    if facts.config_error:
        checks.append(Check("config", False, facts.config_error, "fix or remove the setting"))
    return checks


def failed(checks: Iterable[Check]) -> bool:
    """True when any check failed (warnings do not count)."""
    return any(check.ok is False for check in checks)


def _engine(f: Facts) -> Check:
    if f.engine is not None:
        return Check(
            "container engine",
            True,
            f"{f.engine.name} {f.engine.version} (API {f.engine.api_version}) "
            f"at {f.engine.endpoint}",
        )
    if f.podman is not None:
        return Check(
            "container engine",
            True,
            f"no socket answers; the daemon starts `podman system service` itself "
            f"(podman {f.podman})",
        )
    return Check(
        "container engine",
        False,
        "no container engine: functions run as local processes, without isolation or limits",
        "sudo apt-get install -y podman buildah runc (or run `sudo bash scripts/setup.sh install`)",
    )


def _buildah(f: Facts) -> Check:
    if f.buildah is not None:
        return Check("buildah", True, f"buildah {f.buildah}")
    return Check(
        "buildah",
        False,
        "not installed: builds fall back to the engine's build API",
        "sudo apt-get install -y buildah",
    )


def _oci_runtime(f: Facts) -> Check:
    if f.podman is None:
        return Check("OCI runtime", None, "podman is not installed")
    runtime = f.oci_runtime or f.conf_runtime or ("crun" if f.crun else "runc")
    if f.cgroup == "hybrid" and runtime == "crun":
        install = "" if f.runc else "sudo apt-get install -y runc, then "
        return Check(
            "OCI runtime",
            False,
            "crun cannot start containers on this cgroup v1/v2 hybrid host "
            '("cgroups in hybrid mode not supported")',
            install + CONF_FIX,
        )
    if runtime == "runc" and not f.runc:
        return Check(
            "OCI runtime",
            False,
            "podman is set to runc, which is not installed",
            "sudo apt-get install -y runc",
        )
    note = " (crun would fail on these hybrid cgroups)" if f.cgroup == "hybrid" else ""
    return Check("OCI runtime", True, f"{runtime}, cgroups {f.cgroup}{note}")


def _ulimits(f: Facts) -> Check:
    if f.podman is None:
        return Check("default ulimits", None, "podman is not installed")
    if f.conf_ulimits:
        return Check("default ulimits", True, "default_ulimits = " + json.dumps(f.conf_ulimits))
    if not f.is_root:
        return Check("default ulimits", True, "rootless podman passes on your own limits")
    if f.can_raise_rlimits:
        return Check("default ulimits", True, "not needed: this host grants podman's defaults")
    return Check(
        "default ulimits",
        False,
        f"this host cannot grant podman's default limit ({PODMAN_DEFAULT_RLIMIT} open files "
        "and processes): every container start fails with setrlimit EPERM",
        CONF_FIX,
    )


def _base_images(f: Facts) -> list[Check]:
    checks = []
    for b in f.base_images:
        name = f"base image {b.runtime}"
        if b.public and b.public_present:
            checks.append(Check(name, True, b.public))
        elif b.bootstrap and b.bootstrap_present:
            note = f" (used instead of {b.public})" if b.public else ""
            checks.append(Check(name, True, f"{b.bootstrap}{note}"))
        else:
            wanted = b.public or b.bootstrap or "?"
            checks.append(
                Check(
                    name,
                    None,
                    f"{wanted} is not local: the first build tries to pull it, "
                    "which fails without registry access",
                    f"plat runtime bootstrap {b.runtime}",
                )
            )
    return checks


def _mmdebstrap(f: Facts) -> Check:
    if f.mmdebstrap:
        return Check("mmdebstrap", True, "can build base images from Debian packages")
    return Check(
        "mmdebstrap",
        None,
        "not installed: `plat runtime bootstrap` cannot build base images",
        "sudo apt-get install -y mmdebstrap",
    )


def _rootless(f: Facts) -> list[Check]:
    checks = []
    if f.tun_mode is not None and f.tun_mode & 0o006 != 0o006:
        checks.append(
            Check(
                "rootless networking",
                False,
                f"/dev/net/tun is mode {f.tun_mode:04o}: slirp4netns cannot publish ports",
                "sudo chmod 0666 /dev/net/tun",
            )
        )
    else:
        checks.append(Check("rootless networking", True, "/dev/net/tun is usable"))
    if f.storage_driver and f.storage_driver != "overlay":
        checks.append(
            Check(
                "rootless storage",
                None,
                f"storage driver {f.storage_driver}: every container start copies files "
                "and takes seconds",
                'set driver = "overlay" under [storage] in ~/.config/containers/storage.conf',
            )
        )
    elif f.storage_driver:
        checks.append(Check("rootless storage", True, "overlay"))
    if f.cgroup in ("v1", "hybrid"):
        checks.append(
            Check(
                "rootless limits",
                None,
                f"cgroups {f.cgroup}: rootless podman ignores memory, CPU and pids limits",
                "run plat as root, or boot with cgroup v2 (systemd.unified_cgroup_hierarchy=1)",
            )
        )
    return checks


def _home(f: Facts) -> Check:
    if f.home_writable:
        return Check("PLAT_HOME", True, f"{f.plat_home} is writable")
    return Check(
        "PLAT_HOME",
        False,
        f"{f.plat_home} is not writable",
        "set PLAT_HOME to a folder you own",
    )


def _daemon(f: Facts) -> Check:
    if f.daemon_status is not None:
        return Check("daemon", True, f.daemon_status)
    return Check(
        "daemon",
        None,
        f"not running{': ' + f.daemon_detail if f.daemon_detail else ''}; `plat deploy` starts it",
        "plat daemon start",
    )


# ---------------------------------------------------------------------------
# facts (impure)


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
            find_engine, env, configured, extra=(str(home.run_dir / "podman.sock"),)
        )
        info_f = pool.submit(_podman_info) if podman_installed else None
        podman_f = pool.submit(_version, ["podman", "--version"])
        buildah_f = pool.submit(_version, ["buildah", "--version"])
        daemon_f = pool.submit(daemon_status, home)
        exists = {ref: pool.submit(image_exists, ref) for ref in sorted(refs)}

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
            engine=engine_f.result(),
            engine_candidates=candidate_endpoints(env, configured),
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
            daemon_status=status,
            daemon_detail=why,
        )


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def facts_to_json(facts: Facts) -> dict[str, Any]:
    """The facts as JSON-able data (for `plat doctor --json`)."""
    return asdict(facts)
