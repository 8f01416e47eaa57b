"""plat.doctor: judging injected facts (pure) and parsing host files."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from plat.doctor.checks import DROP_IN, Check, failed, judge
from plat.doctor.facts import BaseImageFacts, Facts
from plat.doctor.host import cgroup_layout, has_subid_range, merge_containers_conf
from plat.engine import EngineInfo

PODMAN = EngineInfo("unix:///run/podman/podman.sock", "podman", "4.3.1", "1.41")

# A healthy rootful host like the CI machines after scripts/setup.sh.
HEALTHY = Facts(
    is_root=True,
    plat_home="/tmp/home",
    engine=PODMAN,
    podman="4.3.1",
    buildah="1.28.2",
    runc=True,
    mmdebstrap=True,
    oci_runtime="runc",
    storage_driver="overlay",
    cgroup="hybrid",
    conf_ulimits=["nofile=20000:20000", "nproc=1000:1000"],
    conf_runtime="runc",
    can_raise_rlimits=False,
    tun_mode=0o666,
    base_images=[
        BaseImageFacts(
            "python",
            "docker.io/library/python:3.12-slim",
            False,
            "localhost/plat/python-base:bookworm",
            True,
        ),
        BaseImageFacts(
            "node",
            "docker.io/library/node:20-slim",
            True,
            "localhost/plat/node-base:bookworm",
            False,
        ),
    ],
    daemon_status="answering on /tmp/home/run/plat.sock",
)


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


def test_healthy_host_passes() -> None:
    checks = judge(HEALTHY)
    assert not failed(checks)
    assert all(check.ok for check in checks), checks
    rows = by_name(checks)
    assert "localhost/plat/python-base:bookworm" in rows["base image python"].detail
    assert rows["base image node"].detail == "docker.io/library/node:20-slim"
    assert "rootless networking" not in rows  # root: no rootless notes


@pytest.mark.parametrize(
    ("changes", "name", "ok", "fix_has"),
    [
        # crun on a hybrid host: the exact containers.conf fix
        (
            {"oci_runtime": "crun", "conf_runtime": None, "crun": True},
            "OCI runtime",
            False,
            DROP_IN.rstrip(),
        ),
        (
            {"oci_runtime": "crun", "runc": False, "crun": True},
            "OCI runtime",
            False,
            "apt-get install -y runc",
        ),
        ({"oci_runtime": "crun", "crun": True, "cgroup": "v2"}, "OCI runtime", True, ""),
        (
            {"oci_runtime": None, "conf_runtime": None, "crun": True},
            "OCI runtime",
            False,
            'runtime = "runc"',
        ),
        ({"oci_runtime": "runc", "runc": False}, "OCI runtime", False, "apt-get install -y runc"),
        # ulimits: needed and missing / needed and set / not needed
        ({"conf_ulimits": None}, "default ulimits", False, "default_ulimits = ["),
        ({"conf_ulimits": None, "can_raise_rlimits": True}, "default ulimits", True, ""),
        ({"conf_ulimits": None, "is_root": False}, "default ulimits", True, ""),
        # engine
        ({"engine": None}, "container engine", True, ""),
        ({"engine": None, "podman": None}, "container engine", False, "apt-get install -y podman"),
        ({"buildah": None}, "buildah", False, "apt-get install -y buildah"),
        ({"mmdebstrap": False}, "mmdebstrap", None, "apt-get install -y mmdebstrap"),
        # base images: neither present -> the bootstrap command
        (
            {
                "base_images": [
                    BaseImageFacts(
                        "python",
                        "docker.io/library/python:3.12-slim",
                        False,
                        "localhost/plat/python-base:bookworm",
                        False,
                    )
                ]
            },
            "base image python",
            None,
            "plat runtime bootstrap python",
        ),
        ({"home_writable": False}, "PLAT_HOME", False, "PLAT_HOME"),
        ({"config_error": "invalid PLAT_GATEWAY_PORT"}, "config", False, "fix or remove"),
        (
            {"daemon_status": None, "daemon_detail": "no socket"},
            "daemon",
            None,
            "plat daemon start",
        ),
    ],
)
def test_single_problem(
    changes: dict[str, object], name: str, ok: bool | None, fix_has: str
) -> None:
    checks = judge(replace(HEALTHY, **changes))  # type: ignore[arg-type]
    check = by_name(checks)[name]
    assert check.ok is ok, check
    assert fix_has in check.fix
    assert failed(checks) is (ok is False)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"tun_mode": 0o600}, {"rootless networking": False}),
        ({"tun_mode": 0o666}, {"rootless networking": True}),
        ({"storage_driver": "vfs"}, {"rootless storage": None}),
        ({"storage_driver": "overlay"}, {"rootless storage": True}),
        ({"cgroup": "hybrid"}, {"rootless limits": None}),
        ({"cgroup": "v1"}, {"rootless limits": None}),
        ({"tun_mode": None}, {"rootless networking": False}),
        ({"subuid": False}, {"rootless ids": False}),
        ({"subgid": False}, {"rootless ids": False}),
        ({"newuidmap": False}, {"rootless ids": False}),
        ({}, {"rootless ids": True, "rootless firewall": None}),
    ],
)
def test_rootless_notes(changes: dict[str, object], expected: dict[str, bool | None]) -> None:
    base: dict[str, object] = {"is_root": False, "cgroup": "v2", "tun_mode": 0o666}
    facts = replace(HEALTHY, **{**base, **changes})  # type: ignore[arg-type]
    rows = by_name(judge(facts))
    for name, ok in expected.items():
        assert rows[name].ok is ok, rows[name]
    if facts.cgroup == "v2":
        assert "rootless limits" not in rows


def test_subid_fix_names_the_user_and_the_missing_table() -> None:
    facts = replace(HEALTHY, is_root=False, user="ada", subgid=False)
    row = by_name(judge(facts))["rootless ids"]
    assert row.detail == "ada has no range in /etc/subgid"
    assert "usermod --add-subuids 100000-165535 --add-subgids 100000-165535 ada" in row.fix


def test_rootless_limits_say_deploys_still_work() -> None:
    row = by_name(judge(replace(HEALTHY, is_root=False, cgroup="hybrid")))["rootless limits"]
    assert "not enforced" in row.detail and "deploys still work" in row.detail


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ada:100000:65536\n", True),
        ("1000:100000:65536\n", True),  # by uid
        ("bob:100000:65536\n", False),
        ("ada:100000:0\n", False),  # an empty range
        ("ada:100000\n", False),  # malformed
        ("", False),
    ],
)
def test_has_subid_range(tmp_path: Path, text: str, expected: bool) -> None:
    table = tmp_path / "subuid"
    table.write_text(text)
    assert has_subid_range(table, "ada", 1000) is expected


def test_has_subid_range_without_the_file(tmp_path: Path) -> None:
    assert has_subid_range(tmp_path / "nope", "ada", 1000) is False


def test_tun_fix_is_the_chmod() -> None:
    rows = by_name(judge(replace(HEALTHY, is_root=False, tun_mode=0o600)))
    assert rows["rootless networking"].fix == "sudo chmod 0666 /dev/net/tun"


HYBRID = """\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
"""


@pytest.mark.parametrize(
    ("mounts", "expected"),
    [
        ("cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n", "v2"),
        (HYBRID, "hybrid"),
        ("\n".join(HYBRID.splitlines()[:3]), "v1"),
        ("proc /proc proc rw 0 0\n", "unknown"),
        ("", "unknown"),
    ],
)
def test_cgroup_layout(mounts: str, expected: str) -> None:
    assert cgroup_layout(mounts) == expected


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        ([], {"default_ulimits": None, "runtime": None}),
        (
            [DROP_IN],
            {"default_ulimits": ["nofile=20000:20000", "nproc=1000:1000"], "runtime": "runc"},
        ),
        (
            ['[engine]\nruntime = "crun"\n', DROP_IN],
            {"default_ulimits": ["nofile=20000:20000", "nproc=1000:1000"], "runtime": "runc"},
        ),
        (
            [DROP_IN, '[engine]\nruntime = "crun"\n'],
            {"default_ulimits": ["nofile=20000:20000", "nproc=1000:1000"], "runtime": "crun"},
        ),
        (
            ["this is [not toml", '[containers]\ndefault_ulimits = ["nofile=1:1"]\n'],
            {"default_ulimits": ["nofile=1:1"], "runtime": None},
        ),
    ],
)
def test_merge_containers_conf(texts: list[str], expected: dict[str, object]) -> None:
    assert merge_containers_conf(texts) == expected


def test_docker_base_images_are_looked_for_in_dockers_store() -> None:
    docker = EngineInfo("unix:///var/run/docker.sock", "docker", "20.10.24", "1.41")
    missing = BaseImageFacts("node", None, False, "localhost/plat/node-base:bookworm", False)
    rows = by_name(judge(replace(HEALTHY, engine=docker, base_images=[missing])))
    row = rows["base image node"]
    assert row.ok is None and "Docker's image store" in row.detail
    assert row.fix == (
        "plat runtime bootstrap node, then "
        "podman save localhost/plat/node-base:bookworm | docker load"
    )
