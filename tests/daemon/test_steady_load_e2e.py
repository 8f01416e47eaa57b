"""Steady load on a default function: the instance count converges and no healthy
instance is stopped while the load lasts (real daemon, real Podman, wrk)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures import PlatRunner, daemon_session, make_runner
from tests.functions import write_python_function

pytestmark = pytest.mark.container

# Long enough that 64 callers keep every slot of 4 instances busy.
BUSY = """
import time

def handle(event, context):
    time.sleep(0.02)
    return "ok"
"""


@pytest.fixture
def plat(tmp_path: Path) -> Iterator[PlatRunner]:
    """The autoscaler's windows shortened (as an idle minute, then load, would be)."""
    runner = make_runner(tmp_path)
    runner.env.update({"PLAT_STABLE_WINDOW": "10s", "PLAT_PANIC_WINDOW": "2s"})
    with daemon_session(runner):
        yield runner


def test_steady_load_keeps_its_instances(plat: PlatRunner, tmp_path: Path) -> None:
    wrk = shutil.which("wrk")
    assert wrk is not None, "wrk is installed by scripts/setup.sh"
    plat.run("deploy", str(write_python_function(tmp_path, "steady", BUSY)))
    time.sleep(10)  # idle for a stable window: the averages start low
    token = base64.b64encode(f"admin:{plat.password()}".encode()).decode()
    log = plat.home / "daemon.log"
    log_start = log.stat().st_size
    url = f"{plat.gateway}/function/steady"
    out = subprocess.run(
        [wrk, "-t2", "-c64", "-d8s", "-H", f"Authorization: Basic {token}", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "Non-2xx" not in out and "Socket errors" not in out, out
    during = log.read_bytes()[log_start:].decode(errors="replace")
    stops = re.findall(r"stopping instance \S+ of steady: .*", during)
    assert not stops, f"instances were stopped under steady load:\n{during}"
    described = json.loads(plat.run("describe", "steady", "--json").stdout)
    assert described["admission"] == {"inflight": 0, "held": 0, "waiting": 0, "ok": True}
    # Every instance started for the load is still there once it is over.
    started = set(re.findall(r"instance (\S+) of steady (?:ready|specialised)", during))
    running = {name.rsplit("-", 1)[1] for name in plat.instances_of("steady", "status=running")}
    assert started <= running, (started, running)
