"""Judging a host's facts into the rows of `plat doctor`'s report (pure)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from plat.doctor.facts import PODMAN_DEFAULT_RLIMIT, Facts

DROP_IN_PATH = "/etc/containers/containers.conf.d/50-plat.conf"
DROP_IN = """[containers]
default_ulimits = ["nofile=20000:20000", "nproc=1000:1000"]
[engine]
runtime = "runc"
"""
CONF_FIX = (
    f"write {DROP_IN_PATH} (or run `sudo bash scripts/setup.sh install`):\n{DROP_IN.rstrip()}"
)


@dataclass(frozen=True)
class Check:
    """One row of the report. ``ok``: True passes, False fails, None is a warning or note."""

    name: str
    ok: bool | None
    detail: str
    fix: str = ""


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
    docker = f.engine is not None and f.engine.name == "docker"
    for b in f.base_images:
        name = f"base image {b.runtime}"
        if b.public and b.public_present:
            checks.append(Check(name, True, b.public))
        elif b.bootstrap and b.bootstrap_present:
            note = f" (used instead of {b.public})" if b.public else ""
            checks.append(Check(name, True, f"{b.bootstrap}{note}"))
        elif docker and b.bootstrap:
            checks.append(
                Check(
                    name,
                    None,
                    f"{b.bootstrap} is not in Docker's image store (Podman's does not count)",
                    f"plat runtime bootstrap {b.runtime}, then "
                    f"podman save {b.bootstrap} | docker load",
                )
            )
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
    checks = [_subids(f)]
    if f.tun_mode is None:
        checks.append(
            Check(
                "rootless networking",
                False,
                "there is no /dev/net/tun: slirp4netns cannot publish ports",
                "sudo modprobe tun",
            )
        )
    elif f.tun_mode & 0o006 != 0o006:
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
                f"cgroups {f.cgroup}: rootless podman ignores memory, CPU and pids limits, "
                "so plat.yaml's limits are not enforced (deploys still work)",
                "run plat as root, or boot with cgroup v2 (systemd.unified_cgroup_hierarchy=1)",
            )
        )
    checks.append(
        Check(
            "rootless firewall",
            None,
            "plat's own iptables rules between tenant networks need root: tenants are "
            "kept apart by netavark's isolation alone",
            "run plat as root where tenants must not reach each other",
        )
    )
    return checks


def _subids(f: Facts) -> Check:
    """Rootless podman, buildah and mmdebstrap map the container's ids to the
    user's subordinate ranges (through uidmap's newuidmap/newgidmap)."""
    user = f.user or "$USER"
    if not f.newuidmap:
        return Check(
            "rootless ids",
            False,
            "newuidmap/newgidmap are missing: rootless podman cannot map user ids",
            "sudo apt-get install -y uidmap",
        )
    missing = [table for table, ok in (("subuid", f.subuid), ("subgid", f.subgid)) if not ok]
    if missing:
        return Check(
            "rootless ids",
            False,
            f"{user} has no range in " + " or ".join(f"/etc/{t}" for t in missing),
            f"sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user} "
            "(a range no other user has), then `podman system migrate`",
        )
    return Check("rootless ids", True, f"{user} has subuid and subgid ranges")


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
