"""plat's own isolation chains, against the host's real iptables (root)."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator

import pytest

from plat.daemon.drivers.container.firewall import FIRST, SECOND, Firewall

pytestmark = pytest.mark.container

BRIDGES = ("plattest0", "plattest1")


def rules(chain: str) -> list[str]:
    out = subprocess.run(["iptables", "-w", "5", "-S", chain], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if line.startswith("-A")]


@pytest.fixture
async def firewall() -> AsyncIterator[Firewall]:
    wall = Firewall()
    assert wall.available, "the tests run as root with iptables installed"
    yield wall
    for bridge in BRIDGES:
        await wall.forget(bridge)
    subprocess.run(["iptables", "-w", "5", "-D", "FORWARD", "-i", "plattest9", "-j", "ACCEPT"])


async def test_each_bridge_gets_its_rules_once_and_loses_them_when_forgotten(
    firewall: Firewall,
) -> None:
    for _ in range(2):
        for bridge in BRIDGES:
            assert await firewall.isolate(bridge)
    first, second = rules(FIRST), rules(SECOND)
    for bridge in BRIDGES:
        assert first.count(f"-A {FIRST} -i {bridge} ! -o {bridge} -j {SECOND}") == 1
        assert second.count(f"-A {SECOND} -o {bridge} -j DROP") == 1
    assert rules("FORWARD").count(f"-A FORWARD -j {FIRST}") == 1
    await firewall.forget("plattest0")
    assert not any("plattest0" in line for line in rules(FIRST) + rules(SECOND))
    assert any("plattest1" in line for line in rules(SECOND))


async def test_the_jump_is_put_back_before_rules_that_accept(firewall: Firewall) -> None:
    await firewall.isolate("plattest0")
    subprocess.run(
        ["iptables", "-w", "5", "-I", "FORWARD", "1", "-i", "plattest9", "-j", "ACCEPT"],
        check=True,
    )
    await firewall.isolate("plattest1")
    forward = rules("FORWARD")
    assert forward.index(f"-A FORWARD -j {FIRST}") < forward.index(
        "-A FORWARD -i plattest9 -j ACCEPT"
    )
    assert forward.count(f"-A FORWARD -j {FIRST}") == 1


async def test_without_iptables_it_says_so_and_isolates_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wall = Firewall(iptables="/nonexistent/iptables")
    wall.iptables = None
    assert not await wall.isolate("plattest0")
    assert not await wall.isolate("plattest1")
    assert caplog.text.count("netavark's isolation alone") == 1
