"""What `plat doctor` knows about a host: plain data, gathered by plat.doctor.host."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from plat.engine import EngineInfo

CgroupLayout = Literal["v2", "hybrid", "v1", "unknown"]

# What rootful podman asks for when containers.conf sets no default_ulimits
# (podman's RLimitDefaultValue). A host that cannot grant it fails every run with
# "error setting rlimits ... operation not permitted".
PODMAN_DEFAULT_RLIMIT = 1_048_576


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
    user: str = ""  # the user plat runs as (for the rootless fixes)
    subuid: bool = True  # the user has a range in /etc/subuid
    subgid: bool = True
    newuidmap: bool = True  # uidmap's setuid helpers (newuidmap, newgidmap)
    daemon_status: str | None = None  # the daemon's answer; None when it does not answer
    daemon_detail: str = ""
    config_error: str = ""  # why $PLAT_HOME/config.yaml or PLAT_* could not be read


def facts_to_json(facts: Facts) -> dict[str, Any]:
    """The facts as JSON-able data (for `plat doctor --json`)."""
    return asdict(facts)
