"""The container engine goes away under load and comes back.

The daemon reaches Podman through ``podman system service``, which it starts as its
own child when no engine answers (plat/engine.py). The test SIGKILLs that process
while calls flow. Running instances do not need the engine, so calls keep being
answered; the daemon must survive the outage. The engine then comes back: if the
daemon has not restarted it within :data:`SELF_RESTART_WAIT`, the test starts
``podman system service`` on the same socket, as a service manager would. Once it
is back the daemon must use it again within :data:`RECOVERY_BOUND`: a killed
instance is replaced and ``plat scale`` starts new instances.
"""

from __future__ import annotations

import contextlib
import random
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from plat.engine import ping
from tests.chaos.support import (
    Chaos,
    alive,
    assert_only_json_errors,
    deployed,
    kill_random_instance,
    sigkill,
    wait_until,
)

pytestmark = pytest.mark.container

NAME = "chaos-engine"
MANIFEST = "scale: {min: 2, max: 4, concurrency: 8}\n"
SELF_RESTART_WAIT = 3.0
RECOVERY_BOUND = 10.0


# Engine services the test started: stopped after the daemon (which needs an engine to
# stop its instances).
STARTED: list[subprocess.Popen[bytes]] = []


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chaos]:
    try:
        yield from deployed(tmp_path_factory, "engine", {NAME: MANIFEST})
    finally:
        for proc in STARTED:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.timeout(120)
def test_the_daemon_survives_an_engine_restart_and_uses_it_again(
    chaos: Chaos, record_property: Callable[[str, object], None]
) -> None:
    endpoint = f"unix://{chaos.plat.home / 'run' / 'podman.sock'}"
    chaos.wait_ready(NAME, 2)
    daemon = chaos.daemon_pid()
    with chaos.load(NAME, clients=16, seconds=30, paths=("?s=0.01",)) as load:
        time.sleep(1)
        services = chaos.engine_services()
        assert len(services) == 1, f"expected one engine service, found {services}"
        sigkill(services[0])
        down_at = load.result.total
        time.sleep(2)
        answered_while_down = load.result.total - down_at
        try:
            wait_until(
                lambda: ping(endpoint) is not None, SELF_RESTART_WAIT, "engine not restarted"
            )
        except AssertionError:
            STARTED.append(
                subprocess.Popen(
                    ["podman", "system", "service", "--time=0", endpoint],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            wait_until(lambda: ping(endpoint) is not None, 10, "podman service did not start")
        time.sleep(1)
        result = load.stop()

    record_property("engine_restarted_by", "the test" if STARTED else "the daemon")
    assert alive(daemon), "the daemon died with its engine"
    assert answered_while_down > 0, "no call was answered while the engine was down"
    assert_only_json_errors(result, allowed=())
    chaos.plat.run("daemon", "status")

    # The daemon uses the engine again: a dead instance is replaced ...
    victim = kill_random_instance(chaos, NAME, random.Random(3))
    chaos.wait_ready(NAME, 2, without=(victim,), timeout=RECOVERY_BOUND)
    # ... and new instances start.
    chaos.plat.run("scale", NAME, "--min", "3")
    chaos.wait_ready(NAME, 3, timeout=RECOVERY_BOUND)

    # As many containers run as plat has instances, at least the 3 asked for (the
    # load may have scaled it out to 4 already; that lasts a stable window).
    def podman_runs_them() -> bool:
        running = len(chaos.running_containers(NAME))
        return running >= 3 and running == len(chaos.describe(NAME)["instance_list"])

    try:
        wait_until(podman_runs_them, 10, "podman does not run the instances plat has")
    except AssertionError as exc:
        instances = chaos.describe(NAME)["instance_list"]
        running = chaos.running_containers(NAME)
        raise AssertionError(f"{exc}: podman runs {running}; plat has {instances}") from None
    assert chaos.plat.http("GET", f"/function/{NAME}").status == 200
    chaos.assert_admission_settled(NAME)
    chaos.assert_no_orphans()
