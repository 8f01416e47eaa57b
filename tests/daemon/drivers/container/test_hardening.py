"""A deployed instance, inspected with the real podman CLI, is hardened as promised."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.fixtures import PlatRunner
from tests.functions import write_python_function

pytestmark = pytest.mark.container


def test_instance_is_hardened(plat: PlatRunner, tmp_path: Path) -> None:
    folder = write_python_function(
        tmp_path,
        "hard",
        "def handle(e, c):\n    return 'ok'\n",
        extra_manifest="resources: {memory: 128Mi, cpu: 0.5, pids: 64}\n",
    )
    plat.run("deploy", str(folder))
    (name,) = plat.containers("label=plat.function=hard")
    data = json.loads(
        subprocess.run(["podman", "inspect", name], capture_output=True, check=True).stdout
    )[0]
    host = data["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] or data["EffectiveCaps"] in (None, [])
    assert not data.get("EffectiveCaps")
    assert any("no-new-privileges" in opt for opt in host["SecurityOpt"] or [])
    assert host["Memory"] == 128 * 1024**2
    assert host["NanoCpus"] == 500_000_000 or host["CpuQuota"] == 50_000
    assert host["PidsLimit"] == 64
    assert host["Init"] is True
    assert "/tmp" in host["Tmpfs"]
    bindings = [b for ports in host["PortBindings"].values() for b in ports]
    assert bindings and all(b["HostIp"] == "127.0.0.1" for b in bindings)
    labels = data["Config"]["Labels"]
    assert labels["plat.function"] == "hard"
    assert labels["plat.daemon"] == plat.daemon_id()
    assert labels["plat.version"]
    assert data["Config"]["User"] == "10001:10001"
    # The root filesystem really is read-only, /tmp is writable.
    ro = subprocess.run(
        ["podman", "exec", name, "python3", "-c", "open('/x','w')"], capture_output=True, text=True
    )
    assert ro.returncode != 0
    assert "Read-only file system" in ro.stderr
    rw = subprocess.run(
        ["podman", "exec", name, "python3", "-c", "open('/tmp/x','w')"], capture_output=True
    )
    assert rw.returncode == 0
