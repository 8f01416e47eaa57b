"""plat.daemon.backends.container: the hardened ``containers.run`` options."""

from __future__ import annotations

from typing import Any

import pytest

from plat.daemon.backends import (
    LABEL_DAEMON,
    LABEL_FUNCTION,
    LABEL_INSTANCE,
    LABEL_VERSION,
    InstanceSpec,
)
from plat.daemon.backends.container import run_options


def options(**changes: Any) -> dict[str, Any]:
    spec = InstanceSpec(function="hello", version="v1", image="localhost/plat/hello:v1", **changes)
    return run_options(spec, "i-123", "daemon-9")


def test_identity() -> None:
    opts = options()
    assert opts["image"] == "localhost/plat/hello:v1"
    assert opts["name"] == "plat-hello-i-123"
    assert opts["detach"] is True


def test_labels() -> None:
    labels = options()["labels"]
    assert labels == {
        LABEL_FUNCTION: "hello",
        LABEL_VERSION: "v1",
        LABEL_DAEMON: "daemon-9",
        LABEL_INSTANCE: "i-123",
    }
    assert (LABEL_FUNCTION, LABEL_VERSION, LABEL_DAEMON) == (
        "plat.function",
        "plat.version",
        "plat.daemon",
    )


def test_hardening() -> None:
    opts = options()
    assert opts["cap_drop"] == ["ALL"]
    assert "cap_add" not in opts
    assert opts["security_opt"] == ["no-new-privileges"]
    assert opts["read_only"] is True
    assert set(opts["tmpfs"]) == {"/tmp"}
    assert "rw" in opts["tmpfs"]["/tmp"].split(",")
    assert opts["init"] is True
    assert not opts.get("privileged", False)
    assert "network_mode" not in opts


def test_limits_from_spec() -> None:
    opts = options(memory=512 * 1024**2, cpu=0.5, pids=64)
    assert opts["mem_limit"] == 512 * 1024**2
    assert opts["memswap_limit"] == opts["mem_limit"]  # no swap beyond the memory limit
    assert opts["nano_cpus"] == 500_000_000
    assert isinstance(opts["nano_cpus"], int)
    assert opts["pids_limit"] == 64


@pytest.mark.parametrize(("cpu", "nano"), [(1.0, 10**9), (2.0, 2 * 10**9), (0.25, 250_000_000)])
def test_nano_cpus(cpu: float, nano: int) -> None:
    assert options(cpu=cpu)["nano_cpus"] == nano


def test_defaults_have_limits() -> None:
    opts = options()
    assert opts["mem_limit"] == 256 * 1024**2
    assert opts["nano_cpus"] == 10**9
    assert opts["pids_limit"] == 256


@pytest.mark.parametrize("port", [8080, 3000])
def test_port_published_on_loopback_only(port: int) -> None:
    opts = options(port=port)
    assert opts["ports"] == {f"{port}/tcp": ("127.0.0.1", None)}
    assert opts["environment"]["PORT"] == str(port)


def test_environment() -> None:
    env = options(env={"GREETING": "hi", "PORT": "1"})["environment"]
    assert env["GREETING"] == "hi"
    assert env["PLAT_FUNCTION"] == "hello"
    assert env["PLAT_VERSION"] == "v1"
    assert env["PORT"] == "8080"  # the platform's PORT wins over the user's


def test_user_set_by_default() -> None:
    assert options()["user"] == "10001:10001"
    assert options(user="1000:1000")["user"] == "1000:1000"


def test_user_left_to_image_when_none() -> None:
    assert "user" not in options(user=None)


def test_spec_env_not_mutated() -> None:
    env = {"A": "1"}
    spec = InstanceSpec(function="hello", version="v1", image="img", env=env)
    run_options(spec, "i", "d")
    assert env == {"A": "1"}
