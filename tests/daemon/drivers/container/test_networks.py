"""Tenant networks on a real Podman: one tenant's instance cannot open a connection to
another tenant's, while the host (the gateway) reaches both and instances of one
tenant reach each other; networks are isolated, labelled, made once however many
starts race for them, and removed when no container uses them."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from plat.daemon.drivers.base import LABEL_DAEMON, LABEL_TENANT, InstanceSpec, RunningInstance
from plat.daemon.drivers.container.anchors import LABEL_ANCHOR, anchor_name
from plat.daemon.drivers.container.backend import ContainerBackend
from plat.daemon.drivers.container.build import ImageBuilder
from plat.daemon.drivers.container.builders.buildah import BuildahBuilder
from plat.daemon.drivers.container.cleanup import remove_all
from plat.daemon.drivers.container.documents import bridge_address
from plat.daemon.drivers.container.firewall import FIRST, SECOND, Firewall
from plat.daemon.drivers.versions import Release
from plat.daemon.serving.pool import WarmPool, pool_key
from plat.daemon.serving.probe import wait_ready
from plat.engine import PodmanService
from plat.errors import EngineError
from plat.manifest import validate_manifest
from tests.daemon.drivers.container.podman import (
    containers_of,
    engine_backend,
    inspect,
    networks_of,
    remove_networks_of,
)
from tests.daemon.fakes import FakeSources, eventually

pytestmark = pytest.mark.container

CONNECT = "import socket, sys; socket.create_connection((sys.argv[1], 8080), timeout=3)"


def spec_of(image: str, tenant: str, function: str = "web") -> InstanceSpec:
    return InstanceSpec(function=f"{function}.{tenant}", version="v1", image=image, tenant=tenant)


async def ready(backend: ContainerBackend, running: RunningInstance) -> None:
    async def alive() -> bool:
        return await backend.is_alive(running)

    async with aiohttp.ClientSession() as session:
        await wait_ready(session, running.host, running.port, timeout=20, alive=alive)


def address_on_its_network(backend: ContainerBackend, running: RunningInstance) -> str:
    """The instance's bridge address (what another container would dial)."""
    data = inspect(running.backend_ref)
    labels = data["Config"]["Labels"]
    address = bridge_address(data["NetworkSettings"], backend.networks.name(labels[LABEL_TENANT]))
    assert address
    return address


def network_names(data: dict[str, Any]) -> list[str]:
    """The networks a container inspect document says it is attached to."""
    return list(data["NetworkSettings"]["Networks"])


def connects_from(container: RunningInstance, address: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", "exec", container.backend_ref, "python3", "-c", CONNECT, address],
        capture_output=True,
        text=True,
        timeout=30,
    )


def isolation_in_force() -> bool:
    """Whether the host's FORWARD chain jumps to netavark's isolation chains. Any
    isolated network on this host that loses its last container removes that jump
    (netavark 1.4; see plat/daemon/drivers/container/anchors.py): other test runs
    on a shared machine can, for a moment."""
    rules = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True)
    return rules.returncode != 0 or "NETAVARK_ISOLATION_1" in rules.stdout


async def assert_cannot_connect(
    backend: ContainerBackend, source: RunningInstance, address: str
) -> None:
    """``source`` cannot open a connection to ``address``: a connection that went
    through while isolation was in force fails the test; one made while another
    process had lifted it (no jump, before or after) is tried again once plat has
    put it back."""
    for _ in range(3):
        before = isolation_in_force()
        attempt = connects_from(source, address)
        if attempt.returncode != 0:
            assert "timed out" in attempt.stderr, attempt.stderr
            return
        assert not (before and isolation_in_force()), f"{source.id} reached {address}"
        await backend.networks.restore()
    raise AssertionError(f"isolation kept being lifted on this host; {source.id} reached it")


def anchor_of(backend: ContainerBackend, tenant: str) -> dict[str, Any]:
    return inspect(anchor_name(backend.networks.name(tenant)))


@pytest.mark.parametrize("address", ["published", "direct"])
async def test_an_instance_cannot_reach_another_tenants_but_the_host_and_its_own_tenant_can(
    tmp_path: Path, server_image: str, address: str
) -> None:
    async with engine_backend(tmp_path, address) as backend:
        a1, a2, b1 = await asyncio.gather(
            backend.start(spec_of(server_image, "a"), "i-a1"),
            backend.start(spec_of(server_image, "a", "other"), "i-a2"),
            backend.start(spec_of(server_image, "b"), "i-b1"),
        )
        for running in (a1, a2, b1):
            await ready(backend, running)
        b_address = address_on_its_network(backend, b1)
        a2_address = address_on_its_network(backend, a2)
        if address == "direct":
            assert b1.host == b_address

        await assert_cannot_connect(backend, a1, b_address)
        await assert_cannot_connect(backend, b1, a2_address)

        same = connects_from(a1, a2_address)  # the control: the probe itself works
        assert same.returncode == 0, same.stderr
        with socket.create_connection((b_address, 8080), timeout=3):
            pass  # the host (the gateway's view) reaches every tenant's instances


async def test_a_tenant_whose_last_instance_goes_keeps_its_network_in_use_by_its_anchor(
    backend: ContainerBackend, server_image: str
) -> None:
    a, b, c = await asyncio.gather(
        *(backend.start(spec_of(server_image, t), f"i-{t}") for t in ("a", "b", "c"))
    )
    await ready(backend, a)
    await ready(backend, b)
    await backend.remove(c)  # tenant c scales to zero
    # Its network was not torn down completely (the anchor runs on it), which is what
    # would have lifted every network's isolation.
    anchor = anchor_of(backend, "c")
    assert anchor["State"]["Running"] is True
    assert network_names(anchor) == [backend.networks.name("c")]
    labels = anchor["Config"]["Labels"]  # and the image's own
    assert (labels[LABEL_ANCHOR], labels[LABEL_TENANT]) == (backend.daemon_id, "c")
    assert LABEL_DAEMON not in anchor["Config"]["Labels"]  # no instance of the daemon's
    assert sorted(i.id for i in await backend.list()) == ["i-a", "i-b"]
    await assert_cannot_connect(backend, b, address_on_its_network(backend, a))


async def test_an_anchor_that_could_not_start_is_tried_again_by_the_next_start(
    backend: ContainerBackend, server_image: str
) -> None:
    missing = "localhost/plat-test/no-such-image:v0"
    with pytest.raises(EngineError):
        await backend.start(spec_of(missing, "late"), "i-none")
    await backend.networks.anchored()
    anchor = anchor_name(backend.networks.name("late"))
    assert subprocess.run(["podman", "container", "exists", anchor]).returncode == 1
    await backend.start(spec_of(server_image, "late"), "i-late")
    await backend.networks.anchored()
    assert inspect(anchor)["State"]["Running"] is True


async def test_a_tenants_anchor_starts_after_its_first_instance_not_beside_it(
    backend: ContainerBackend, server_image: str
) -> None:
    # Side by side on two cores, the two starts made the first one 0.15 s slower.
    running = await backend.start(spec_of(server_image, "first"), "i-first")
    await backend.networks.anchored()
    anchor = anchor_of(backend, "first")
    assert anchor["State"]["Running"] is True
    started = inspect(running.backend_ref)["State"]["StartedAt"]
    assert _instant(anchor["Created"]) >= _instant(started), (anchor["Created"], started)
    # and its removal waits for an anchor still starting: the network stays in use
    await backend.remove(await backend.start(spec_of(server_image, "brief"), "i-brief"))
    assert anchor_of(backend, "brief")["State"]["Running"] is True


def _instant(stamp: str) -> str:
    """An engine's RFC 3339 time, comparable as text: UTC, nanoseconds padded."""
    moment, _, fraction = stamp.partition(".")
    digits = "".join(c for c in fraction if c.isdigit())
    assert stamp.endswith("Z") or "+00:00" in stamp, stamp
    return f"{moment}.{digits.ljust(9, '0')}"


def firewall_rules() -> str:
    chains = [["iptables", "-w", "5", "-S", chain] for chain in (FIRST, SECOND)]
    return "".join(subprocess.run(c, capture_output=True, text=True).stdout for c in chains)


async def test_plats_own_rules_keep_tenants_apart_when_netavark_lifts_its_own(
    tmp_path: Path, server_image: str
) -> None:
    firewall = Firewall()
    assert firewall.available, "the tests run as root with iptables installed"
    async with engine_backend(tmp_path, "direct", firewall=firewall) as backend:
        x, y = await asyncio.gather(
            backend.start(spec_of(server_image, "x"), "i-x"),
            backend.start(spec_of(server_image, "y"), "i-y"),
        )
        await ready(backend, x)
        await ready(backend, y)
        bridges = [inspect(backend.networks.name(t), "network")["network_interface"] for t in "xy"]
        for bridge in bridges:
            assert f"-A {SECOND} -o {bridge} -j DROP" in firewall_rules()
        # netavark 1.4 lifts its isolation when an isolated network loses its only container.
        lift = f"plat-test-lift-{uuid.uuid4().hex[:8]}"
        podman = ["podman", "network", "create", "--opt", "isolate=true", lift]
        subprocess.run(podman, check=True, capture_output=True)
        try:
            run = ["podman", "run", "--rm", "--network", lift, server_image, "true"]
            subprocess.run(run, check=True, capture_output=True)
        finally:
            subprocess.run(["podman", "network", "rm", "-f", lift], capture_output=True)
        across = connects_from(y, x.host)
        assert across.returncode != 0 and "timed out" in across.stderr, across.stderr
        await backend.networks.restore()  # netavark's own, for the other tests on this host
    for bridge in bridges:  # the networks went with the backend's close: their rules too
        assert f"-o {bridge} " not in firewall_rules()


async def test_each_instance_sits_on_its_tenants_isolated_labelled_network_only(
    backend: ContainerBackend, server_image: str
) -> None:
    running = await backend.start(spec_of(server_image, "acme"), "i-one")
    await backend.prepare(spec_of(server_image, "beta"), "i-standby")
    for ref, tenant in ((running.backend_ref, "acme"), ("plat-web.beta-i-standby", "beta")):
        data = inspect(ref)
        network = backend.networks.name(tenant)
        assert data["Config"]["Labels"][LABEL_TENANT] == tenant
        assert network_names(data) == [network]  # not `podman` too
        described = inspect(network, "network")
        assert described["options"] == {"isolate": "true"}
        assert described["labels"] == {LABEL_TENANT: tenant, LABEL_DAEMON: backend.daemon_id}
    assert networks_of(backend.daemon_id) == sorted(
        backend.networks.name(t) for t in ("acme", "beta")
    )
    (listed,) = [i for i in await backend.list() if i.id == "i-one"]
    assert (listed.host, listed.port) == (running.host, running.port)


async def test_starts_racing_for_a_new_tenants_network_all_succeed_on_one_network(
    tmp_path: Path, server_image: str
) -> None:
    async with engine_backend(tmp_path, "direct") as first:
        # A second daemon object of the same id: another process racing on the engine.
        second = ContainerBackend(first.endpoint, first.daemon_id, "direct")
        try:
            names = await asyncio.gather(
                *(
                    b.networks.ensure("race", server_image)
                    for b in (first, second)
                    for _ in range(8)
                )
            )
            assert set(names) == {first.networks.name("race")}
            started = await asyncio.gather(
                *(
                    b.start(spec_of(server_image, "burst", f"f{n}"), f"i-{n}")
                    for n, b in enumerate((first, second, first, second))
                )
            )
            network = first.networks.name("burst")
            assert networks_of(first.daemon_id) == sorted([first.networks.name("race"), network])
            for running in started:
                assert network_names(inspect(running.backend_ref)) == [network]
        finally:
            await second.close()


async def test_a_network_of_the_tenants_name_that_is_not_isolated_is_refused(
    backend: ContainerBackend, server_image: str
) -> None:
    name = backend.networks.name("squat")
    subprocess.run(["podman", "network", "create", name], check=True, capture_output=True)
    try:
        with pytest.raises(EngineError, match="not isolated") as caught:
            await backend.start(spec_of(server_image, "squat"), "i-squat")
        assert f"podman network rm {name}" in (caught.value.hint or "")
        assert await backend.list() == []
    finally:
        subprocess.run(["podman", "network", "rm", name], capture_output=True)


async def test_remove_network_waits_for_the_last_container_and_a_later_start_makes_it_again(
    backend: ContainerBackend, server_image: str
) -> None:
    running = await backend.start(spec_of(server_image, "gone"), "i-1")
    await backend.start(spec_of(server_image, "stays"), "i-stays")
    network = backend.networks.name("gone")
    assert await backend.remove_network("gone") is False  # refused quietly: in use
    assert network in networks_of(backend.daemon_id)
    assert anchor_of(backend, "gone")["State"]["Running"] is True
    await backend.remove(running)
    await backend.prepare(spec_of(server_image, "gone"), "i-standby")  # its standby goes first
    started_before = anchor_of(backend, "stays")["State"]["StartedAt"]
    assert await backend.remove_network("gone") is True
    assert network not in networks_of(backend.daemon_id)
    assert (
        subprocess.run(
            ["podman", "container", "exists", anchor_name(network)], capture_output=True
        ).returncode
        == 1
    )
    # The removal tore a network down completely: another anchor was restarted, which
    # put the isolation jump back for every network.
    assert anchor_of(backend, "stays")["State"]["StartedAt"] != started_before
    assert [i.id for i in await backend.list()] == ["i-stays"]
    assert await backend.remove_network("gone") is True  # nothing to remove

    again = await backend.start(spec_of(server_image, "gone"), "i-2")
    await ready(backend, again)
    # Removed behind the backend's back: the next start makes it again too.
    await backend.remove(again)
    subprocess.run(["podman", "network", "rm", "-f", network], check=True, capture_output=True)
    third = await backend.start(spec_of(server_image, "gone"), "i-3")
    assert network_names(inspect(third.backend_ref)) == [network]


async def test_close_removes_the_networks_no_container_uses_and_leaves_the_others(
    podman_service: PodmanService, server_image: str
) -> None:
    daemon_id = f"test-{uuid.uuid4().hex[:8]}"
    backend = ContainerBackend(podman_service.endpoint, daemon_id)
    try:
        await backend.start(spec_of(server_image, "stays"), "i-kept")
        await backend.start(spec_of(server_image, "goes"), "i-goes")
        for instance in await backend.list():
            if instance.id == "i-goes":
                await backend.remove(instance)
        await backend.close()  # a daemon stopping: its running instances are adopted later
        assert networks_of(daemon_id) == [backend.networks.name("stays")]
        assert containers_of(daemon_id) == ["plat-web.stays-i-kept"]

        removed, remaining = await asyncio.to_thread(remove_all, podman_service.endpoint, daemon_id)
        assert (removed, remaining) == (["plat-web.stays-i-kept"], [])
        assert networks_of(daemon_id) == []  # the forced clean-up takes the networks too
    finally:
        for name in containers_of(daemon_id):
            subprocess.run(["podman", "rm", "-f", name], capture_output=True)
        remove_networks_of(daemon_id)


def pooled_release(tenant: str) -> Release:
    manifest = validate_manifest(
        {"name": f"fn.{tenant}", "runtime": "python"}, source="test", qualified=True
    )
    return Release(manifest, "v1", f"localhost/plat/fn.{tenant}:v1")


async def test_a_pool_member_starts_on_its_tenants_network_and_becomes_a_function_of_it(
    backend: ContainerBackend, tmp_path: Path
) -> None:
    images = ImageBuilder(BuildahBuilder(), tmp_path / "builds", {}, tmp_path / "dev")
    app = tmp_path / "app"
    app.mkdir()
    (app / "handler.py").write_text(
        "def handle(event, context):\n    return {'function': context.function}\n"
    )
    a, b = pooled_release("a"), pooled_release("b")
    async with aiohttp.ClientSession() as session:
        pool = WarmPool(
            backend,
            FakeSources(app),
            images.pool_image,
            tmp_path / "pool",
            size=1,
            session=lambda: session,
        )
        await pool.start()
        try:
            pool.want([a, b])
            await eventually(
                lambda: [p.ready for p in pool.states()] == [1, 1],
                timeout=120,  # the first run builds the pool image
                what="a pool member of each tenant",
            )
            key_b = pool_key(b)
            assert key_b is not None and key_b.tenant == "b"
            (waiting,) = pool.pools[key_b].ready
            claimed = await pool.claim(a, {"PLAT_HANDLER": "handler.handle"}, "handler.handle")
            assert claimed is not None and claimed.function == "fn.a"
            async with session.get(f"http://{claimed.address}/") as resp:
                assert await resp.json() == {"function": "fn.a"}

            data = inspect(claimed.backend_ref)
            assert network_names(data) == [backend.networks.name("a")]
            assert data["Config"]["Labels"][LABEL_TENANT] == "a"
            # Tenant b's member waits on b's network; a's claim could not take it.
            assert network_names(inspect(waiting.running.backend_ref)) == [
                backend.networks.name("b")
            ]
            assert waiting in pool.pools[key_b].ready
            b_address = address_on_its_network(backend, waiting.running)
            assert connects_from(claimed, b_address).returncode != 0
        finally:
            await pool.close()
