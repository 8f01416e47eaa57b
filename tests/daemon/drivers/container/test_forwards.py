"""plat.daemon.drivers.container.forwards: netavark's leftover port forwards found
in its rules' text, and removed from the host's real iptables after a real leak."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from plat.daemon.drivers.base import InstanceSpec
from plat.daemon.drivers.container.backend import ContainerBackend
from plat.daemon.drivers.container.forwards import (
    CHAIN,
    Forward,
    StaleForwards,
    destination,
    network_rules,
    parse_forwards,
    removals,
)
from tests.daemon.drivers.container.podman import inspect

ID_A = "a" * 64
ID_B = "b" * 64
DN = "NETAVARK-DN-0794E35504074"

LISTING = f"""-N {CHAIN}
-A {CHAIN} -p tcp -m tcp --dport 38585 -m comment --comment "dnat name: plat-x id: {ID_A}" -j {DN}
-A {CHAIN} -p tcp -m tcp --dport 38585 -m comment --comment "dnat name: plat-x id: {ID_B}" -j {DN}
-A {CHAIN} -p tcp -m tcp --dport 40000 -m comment --comment "no id here" -j {DN}
-A {CHAIN} -p tcp -m tcp --dport 41000 -m comment --comment "unbalanced -j {DN}
"""

NETWORK = f"""-N {DN}
-A {DN} -s 10.89.0.0/24 -d 127.0.0.1/32 -p tcp -m tcp --dport 38585 -j NETAVARK-HOSTPORT-SETMARK
-A {DN} -d 127.0.0.1/32 -p tcp -m tcp --dport 38585 -j DNAT --to-destination 10.89.0.8:8080
-A {DN} -d 127.0.0.1/32 -p tcp -m tcp --dport 55195 -j DNAT --to-destination 10.89.0.7:8080
-A {DN} -s 10.89.0.0/24 -d 127.0.0.1/32 -p tcp -m tcp --dport 38585 -j NETAVARK-HOSTPORT-SETMARK
-A {DN} -d 127.0.0.1/32 -p tcp -m tcp --dport 38585 -j DNAT --to-destination 10.89.0.9:8080
"""


def test_forwards_are_read_with_their_container_port_and_chain() -> None:
    forwards = parse_forwards(LISTING)
    assert [(f.container, f.port, f.chain) for f in forwards] == [
        (ID_A, 38585, DN),
        (ID_B, 38585, DN),
    ]
    assert forwards[0].rule[:4] == ("-p", "tcp", "-m", "tcp")
    assert f"dnat name: plat-x id: {ID_A}" in forwards[0].rule  # one argument, unquoted


def test_a_ports_rules_in_the_network_chain_and_where_they_send() -> None:
    rules = network_rules(NETWORK, DN, 38585)
    assert len(rules) == 4
    assert [destination(r) for r in rules] == [None, "10.89.0.8", None, "10.89.0.9"]
    assert network_rules(NETWORK, DN, 1) == []
    assert network_rules(NETWORK, "OTHER", 38585) == []


def forward(container: str) -> Forward:
    return Forward(container, 38585, DN, ())


def test_a_stale_forward_alone_on_its_port_loses_all_its_rules() -> None:
    rules = network_rules(NETWORK, DN, 38585)
    assert removals([forward(ID_A), forward(ID_B)], [], rules, set()) == rules


def test_a_live_forward_on_the_same_port_keeps_its_rules() -> None:
    rules = network_rules(NETWORK, DN, 38585)
    doomed = removals([forward(ID_A)], [forward(ID_B)], rules, {"10.89.0.9"})
    assert doomed == [rules[1], rules[2]]  # the dead address, one copy of the mark


def test_nothing_stale_removes_nothing() -> None:
    rules = network_rules(NETWORK, DN, 38585)
    assert removals([], [forward(ID_B)], rules, {"10.89.0.9"}) == []


# --- against the host's real iptables and a real netavark leak (root) ---


def nat(chain: str | None = None) -> str:
    """``iptables -t nat -S`` of ``chain``, or of the whole table."""
    out = subprocess.run(
        ["iptables", "-w", "5", "-t", "nat", "-S", *([chain] if chain else [])],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


def leak(container: str) -> None:
    """Make netavark's teardown fail the way measured: the container's network
    namespace is gone before the container is removed."""
    sandbox = inspect(container)["NetworkSettings"]["SandboxKey"]
    subprocess.run(["umount", "--lazy", sandbox], check=True)
    Path(sandbox).unlink()


def port_answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(5)
        try:
            sock.connect(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    yield sock
    sock.close()


async def get(port: int) -> int:
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.get(f"http://127.0.0.1:{port}/") as resp,
    ):
        return resp.status


@pytest.fixture
async def sweeps(backend: ContainerBackend) -> AsyncIterator[ContainerBackend]:
    assert backend.forwards is not None and backend.forwards.available, "root and iptables"
    yield backend


@pytest.mark.container
async def test_a_leaked_forward_is_removed_and_its_port_answers_again(
    sweeps: ContainerBackend, server_image: str, listener: socket.socket
) -> None:
    backend = sweeps
    spec = InstanceSpec(function="fwd", version="v1", image=server_image)
    kept = await backend.start(spec, "i-kept")
    gone = await backend.start(spec, "i-gone")
    assert gone.port is not None and kept.port is not None
    leak(gone.backend_ref)
    await backend.remove(gone)
    assert f"--dport {gone.port} " in nat(CHAIN), "netavark left the forward (the leak)"

    # What that does to anyone who listens on the port afterwards.
    listener.bind(("127.0.0.1", gone.port))
    listener.listen()
    assert not await asyncio.to_thread(port_answers, gone.port)

    await backend.sweep()  # seen stale once: left to netavark a while longer
    assert f"--dport {gone.port} " in nat(CHAIN)
    await backend.sweep()
    assert f"--dport {gone.port} " not in nat(CHAIN)
    assert f"--dport {gone.port} " not in nat()  # nor in the network's chain
    assert await asyncio.to_thread(port_answers, gone.port)
    # The instance beside it on the same network still answers on its own port.
    assert await get(kept.port) == 200
    assert f"--dport {kept.port} " in nat(CHAIN)


@pytest.mark.container
async def test_a_port_published_again_over_a_leaked_forward_is_freed(
    sweeps: ContainerBackend, server_image: str
) -> None:
    """The stale rule comes first: the next container published on the port is
    unreachable until the sweep takes the stale one out, and only that one."""
    backend = sweeps
    spec = InstanceSpec(function="fwd", version="v1", image=server_image)
    gone = await backend.start(spec, "i-gone")
    assert gone.port is not None
    network = next(iter(inspect(gone.backend_ref)["NetworkSettings"]["Networks"]))
    leak(gone.backend_ref)
    await backend.remove(gone)

    name = f"plat-test-fwd-{uuid.uuid4().hex[:8]}"
    publish = f"127.0.0.1:{gone.port}:8080"
    subprocess.run(
        ["podman", "run", "-d", "--name", name, "--network", network, "-p", publish, server_image],
        check=True,
        capture_output=True,
    )
    try:
        assert not await asyncio.to_thread(port_answers, gone.port)
        await backend.sweep()
        await backend.sweep()
        assert nat(CHAIN).count(f"--dport {gone.port} ") == 1
        for _ in range(50):  # the server in the new container may still be starting
            try:
                assert await get(gone.port) == 200
                break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("the container published over the leak never answered")
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True)


async def engine_ids() -> set[str]:
    out = await asyncio.to_thread(
        subprocess.run, ["podman", "ps", "-aq", "--no-trunc"], capture_output=True, text=True
    )
    return set(out.stdout.split())


async def engine_addresses(container: str) -> set[str]:
    networks = inspect(container)["NetworkSettings"]["Networks"]
    return {n["IPAddress"] for n in networks.values()}


@pytest.mark.container
async def test_once_nothing_is_stale_a_sweep_costs_nothing(
    sweeps: ContainerBackend, server_image: str
) -> None:
    spec = InstanceSpec(function="fwd", version="v1", image=server_image)
    await sweeps.start(spec, "i-published")  # netavark's chain exists from here on
    forwards = StaleForwards()
    await forwards.sweep(engine_ids, engine_addresses)  # a daemon starts: it looks
    await forwards.sweep(engine_ids, engine_addresses)  # (and removes what it found)

    async def never(*_: object) -> set[str]:
        raise AssertionError("a sweep with nothing to look for asked the engine")

    assert await forwards.sweep(never, never) == []
    forwards.touched()
    with pytest.raises(AssertionError, match="nothing to look for"):
        await forwards.sweep(never, never)
