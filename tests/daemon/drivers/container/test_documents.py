"""plat.daemon.drivers.container.documents: the hardened Engine API create body of an
instance (on its tenant's network, its secrets mounted), and instances read back."""

from __future__ import annotations

import json
from typing import Any

import pytest

from plat.daemon.drivers.base import (
    LABEL_DAEMON,
    LABEL_FUNCTION,
    LABEL_INSTANCE,
    LABEL_TENANT,
    LABEL_VERSION,
    InstanceSpec,
)
from plat.daemon.drivers.container.documents import (
    bridge_address,
    container_name,
    create_body,
    listed_instance,
    network_missing,
    secret_owner,
)
from plat.daemon.drivers.container.engine import EngineAPIError
from plat.daemon.drivers.container.holders import LABEL_NETNS, LABEL_PORT

NETWORK = "plat-default-daemon-9"


def body(host_port: int = 31000, secrets_dir: str | None = None, **changes: Any) -> dict[str, Any]:
    spec = InstanceSpec(function="hello", version="v1", image="localhost/plat/hello:v1", **changes)
    return create_body(
        spec, "i-123", "daemon-9", host_port, network=NETWORK, secrets_dir=secrets_dir
    )


def env_of(payload: dict[str, Any]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in payload["Env"])


def test_identity() -> None:
    spec = InstanceSpec(function="hello", version="v1", image="localhost/plat/hello:v1")
    assert body()["Image"] == "localhost/plat/hello:v1"
    assert container_name(spec, "i-123") == "plat-hello-i-123"


def test_body_is_json() -> None:
    payload = body(mounts={"/src": "/home/app"})
    assert json.loads(json.dumps(payload)) == payload


def test_labels() -> None:
    assert body()["Labels"] == {
        LABEL_FUNCTION: "hello",
        LABEL_VERSION: "v1",
        LABEL_DAEMON: "daemon-9",
        LABEL_INSTANCE: "i-123",
        LABEL_TENANT: "default",
    }
    assert body(tenant="acme")["Labels"][LABEL_TENANT] == "acme"
    assert (LABEL_FUNCTION, LABEL_VERSION, LABEL_DAEMON, LABEL_TENANT) == (
        "plat.function",
        "plat.version",
        "plat.daemon",
        "plat.tenant",
    )


def test_hardening() -> None:
    host = body()["HostConfig"]
    assert host["CapDrop"] == ["ALL"]
    assert "CapAdd" not in host
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["ReadonlyRootfs"] is True
    assert set(host["Tmpfs"]) == {"/tmp"}
    assert "rw" in host["Tmpfs"]["/tmp"].split(",")
    assert host["Init"] is True
    assert not host.get("Privileged", False)
    # Its tenant's network only: never the engine's default one, nor the host's.
    assert host["NetworkMode"] == NETWORK
    assert body()["NetworkingConfig"] == {"EndpointsConfig": {NETWORK: {}}}
    assert host["LogConfig"] == {"Type": "k8s-file", "Config": {"max-size": "10mb"}}


def test_limits_from_spec() -> None:
    host = body(memory=512 * 1024**2, cpu=0.5, pids=64)["HostConfig"]
    assert host["Memory"] == 512 * 1024**2
    assert host["MemorySwap"] == host["Memory"]  # no swap beyond the memory limit
    assert host["NanoCpus"] == 500_000_000
    assert isinstance(host["NanoCpus"], int)
    assert host["PidsLimit"] == 64


@pytest.mark.parametrize(("cpu", "nano"), [(1.0, 10**9), (2.0, 2 * 10**9), (0.25, 250_000_000)])
def test_nano_cpus(cpu: float, nano: int) -> None:
    assert body(cpu=cpu)["HostConfig"]["NanoCpus"] == nano


def test_defaults_have_limits() -> None:
    host = body()["HostConfig"]
    assert host["Memory"] == 256 * 1024**2
    assert host["NanoCpus"] == 10**9
    assert host["PidsLimit"] == 256


@pytest.mark.parametrize("port", [8080, 3000])
def test_port_published_on_loopback_only(port: int) -> None:
    payload = body(host_port=41234, port=port)
    assert payload["ExposedPorts"] == {f"{port}/tcp": {}}
    assert payload["HostConfig"]["PortBindings"] == {
        f"{port}/tcp": [{"HostIp": "127.0.0.1", "HostPort": "41234"}]
    }
    assert env_of(payload)["PORT"] == str(port)


def test_environment() -> None:
    env = env_of(body(env={"GREETING": "hi", "PORT": "1", "EQ": "a=b"}))
    assert env["GREETING"] == "hi"
    assert env["EQ"] == "a=b"
    assert env["PLAT_FUNCTION"] == "hello"
    assert env["PLAT_VERSION"] == "v1"
    assert env["PORT"] == "8080"  # the platform's PORT wins over the user's


def test_user_set_by_default() -> None:
    assert body()["User"] == "10001:10001"
    assert body(user="1000:1000")["User"] == "1000:1000"


def test_user_left_to_image_when_none() -> None:
    assert "User" not in body(user=None)


def test_mounts_read_only() -> None:
    assert "Binds" not in body()["HostConfig"]
    binds = body(mounts={"/srv/snap": "/home/app"})["HostConfig"]["Binds"]
    assert binds == ["/srv/snap:/home/app:ro"]


def test_port_not_published_for_direct_instances() -> None:
    spec = InstanceSpec(function="hello", version="v1", image="localhost/plat/hello:v1")
    payload = create_body(spec, "i", "d", None, network=NETWORK)
    assert "PortBindings" not in payload["HostConfig"]
    assert payload["ExposedPorts"] == {"8080/tcp": {}}


def test_bridge_address_from_inspect_or_list_settings() -> None:
    assert bridge_address({"IPAddress": "172.17.0.3"}) == "172.17.0.3"
    networks = {"Networks": {"none": {"IPAddress": ""}, "podman": {"IPAddress": "10.88.0.7"}}}
    assert bridge_address({"IPAddress": "", **networks}) == "10.88.0.7"
    assert bridge_address(None) == ""


def test_spec_env_not_mutated() -> None:
    env = {"A": "1"}
    spec = InstanceSpec(function="hello", version="v1", image="img", env=env)
    create_body(spec, "i", "d", 1, network=NETWORK)
    assert env == {"A": "1"}


def test_secrets_are_a_read_only_folder_at_both_paths_never_values() -> None:
    payload = body(mounts={"/srv/snap": "/home/app"}, secrets_dir="/dev/shm/plat-d/i-123")
    assert payload["HostConfig"]["Binds"] == [
        "/srv/snap:/home/app:ro",
        "/dev/shm/plat-d/i-123:/var/plat/secrets:ro",
        "/dev/shm/plat-d/i-123:/var/openfaas/secrets:ro",
    ]
    assert env_of(payload)["PLAT_SECRETS_DIR"] == "/var/plat/secrets"
    assert "PLAT_SECRETS_DIR" not in env_of(body())
    assert "Binds" not in body()["HostConfig"]


@pytest.mark.parametrize(
    ("user", "owner"),
    [
        ("10001:10001", (10001, 10001)),
        ("1000", (1000, None)),
        ("app:app", (None, None)),  # a name: the image's /etc/passwd decides, not plat
        (None, (None, None)),
        ("", (None, None)),
    ],
)
def test_secret_owner_from_the_instance_user(
    user: str | None, owner: tuple[int | None, int | None]
) -> None:
    assert secret_owner(user) == owner


def test_bridge_address_on_the_tenant_network_first() -> None:
    settings = {
        "IPAddress": "",
        "Networks": {"podman": {"IPAddress": "10.88.0.7"}, NETWORK: {"IPAddress": "10.89.3.2"}},
    }
    assert bridge_address(settings, NETWORK) == "10.89.3.2"
    assert bridge_address(settings, "plat-other-daemon-9") == "10.88.0.7"  # not on it: any


def test_a_listed_direct_instance_is_reached_on_its_tenant_network() -> None:
    entry = {
        "Id": "abc123",
        "State": "running",
        "Labels": {LABEL_INSTANCE: "i-1", LABEL_FUNCTION: "fn.acme", LABEL_TENANT: "acme"},
        "Ports": [],
        "NetworkSettings": {
            "Networks": {
                "podman": {"IPAddress": "10.88.0.9"},
                "plat-acme-d": {"IPAddress": "10.89.4.2"},
            }
        },
    }
    listed = listed_instance(entry, "d")
    assert (listed.id, listed.function, listed.host, listed.port) == (
        "i-1",
        "fn.acme",
        "10.89.4.2",
        8080,
    )


def test_a_container_from_before_tenant_networks_is_not_adopted() -> None:
    entry = {
        "Id": "abc123",
        "State": "running",
        "Labels": {LABEL_INSTANCE: "i-1", LABEL_FUNCTION: "fn"},
        "Ports": [{"PublicPort": 40001}],
    }
    assert not listed_instance(entry, "d").running
    entry["Labels"] = {**entry["Labels"], LABEL_TENANT: "default"}
    assert listed_instance(entry, "d").running


@pytest.mark.parametrize(
    ("message", "missing"),
    [
        ("container create: unable to find network with name or ID x: network not found", True),
        ("network plat-acme-d not found", True),
        ("no such image: localhost/x", False),
        ("image not found", False),
    ],
)
def test_a_create_refused_for_a_missing_network_is_told_apart(message: str, missing: bool) -> None:
    assert network_missing(EngineAPIError(500, message)) is missing


def test_an_instance_in_a_holders_namespace_joins_it_and_names_its_port() -> None:
    spec = InstanceSpec(function="hello", version="v1", image="localhost/plat/hello:v1")
    payload = create_body(spec, "i", "d", 41000, network=NETWORK, holder="plat-net-i")
    host = payload["HostConfig"]
    assert host["NetworkMode"] == "container:plat-net-i"
    assert "PortBindings" not in host  # the holder publishes it
    assert "NetworkingConfig" not in payload and "ExposedPorts" not in payload
    assert payload["Labels"][LABEL_NETNS] == "plat-net-i"
    assert payload["Labels"][LABEL_PORT] == "41000"
    assert host["CapDrop"] == ["ALL"] and host["ReadonlyRootfs"] is True


def test_a_listed_instance_in_a_holders_namespace_is_reached_at_the_holders_port() -> None:
    labels = {LABEL_INSTANCE: "i-1", LABEL_FUNCTION: "fn", LABEL_TENANT: "default"}
    entry = {"Id": "abc", "State": "running", "Ports": [], "NetworkSettings": {}}
    listed = listed_instance({**entry, "Labels": {**labels, LABEL_PORT: "41000"}}, "d")
    assert (listed.host, listed.port, listed.running) == ("127.0.0.1", 41000, True)
    # A label that is not a port is ignored, not a crash: reached as a direct instance.
    odd = listed_instance({**entry, "Labels": {**labels, LABEL_PORT: "x"}}, "d")
    assert odd.port == 8080
