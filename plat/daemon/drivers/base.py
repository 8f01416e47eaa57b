"""Where instances run. One ``Backend`` protocol; implementations are siblings.

A backend starts an instance from an InstanceSpec, stops it, lists the instances
it holds for this daemon (by label), reports liveness and returns log tails, and
tells when one of its instances exits (``events``). A backend that
``isolates_tenants`` keeps each tenant's instances on a network of the tenant's
own; one that does not (the process backend) says so, for the daemon to say it.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from plat.daemon.drivers.secretvalue import Secrets
from plat.tenancy import DEFAULT_TENANT

LABEL_FUNCTION = "plat.function"
LABEL_VERSION = "plat.version"
LABEL_DAEMON = "plat.daemon"
LABEL_INSTANCE = "plat.instance"
LABEL_TENANT = "plat.tenant"
# The port an instance listens on inside its own network namespace (``PORT``).
INSTANCE_PORT = 8080
LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on right now.

    The port is released before an instance binds (or the engine publishes) it, so
    another program could take it in between: a container start then fails and is
    retried on another port; a process instance exits ("cannot listen") and the
    controller reports it as not ready, with that line in the log tail.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class InstanceSpec:
    """What to run: one instance of a function version."""

    function: str
    version: str
    image: str
    env: dict[str, str] = field(default_factory=dict)
    memory: int = 256 * 1024**2
    cpu: float = 1.0
    pids: int = 256
    port: int = INSTANCE_PORT
    # None lets the image choose (a user's Dockerfile); template runtimes run unprivileged.
    user: str | None = "10001:10001"
    # Host folders mounted read-only: {host path: path in the instance}.
    mounts: dict[str, str] = field(default_factory=dict)
    # The tenant whose network (and quota) the instance belongs to.
    tenant: str = DEFAULT_TENANT
    # Files under SECRETS_PATHS (and $PLAT_SECRETS_DIR): {file name: value}.
    secrets: Secrets = field(default_factory=dict)


@dataclass(frozen=True)
class RunningInstance:
    """An instance as the backend sees it. ``host``/``port`` is where it answers."""

    id: str
    function: str
    version: str
    host: str
    port: int
    backend_ref: str
    running: bool = True

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class OutputLine:
    """One line an instance wrote, as the backend captured it."""

    ts: float
    stream: str  # stdout | stderr
    text: str


@dataclass(frozen=True)
class InstanceExit:
    """An instance's process ended: it crashed, was killed, or was stopped."""

    instance_id: str
    backend_ref: str
    # As a shell reports it: 128 + the signal for a process a signal ended (137: SIGKILL).
    # None when the backend does not know.
    exit_code: int | None
    ts: float  # when it ended, seconds since the epoch


class Backend(Protocol):
    name: str
    # Whether one tenant's instances cannot open connections to another's.
    isolates_tenants: bool

    @property
    def endpoint(self) -> str: ...

    async def start(self, spec: InstanceSpec, instance_id: str) -> RunningInstance:
        """Start an instance and return where it listens; it may not be ready yet."""
        ...

    async def prepare(self, spec: InstanceSpec, instance_id: str) -> None:
        """Do ahead what the next ``start(spec, ...)`` would do first, without running
        anything (a function that scaled to zero); that start then uses it and
        returns ``instance_id``. Best effort: a failure only means a normal start."""
        ...

    async def unprepare(self, function: str) -> None:
        """Drop what ``prepare`` made for ``function`` (a new version, a removal)."""
        ...

    async def stop(self, instance: RunningInstance, timeout: float = 5.0) -> None:
        """Stop the instance (SIGTERM, then SIGKILL after ``timeout``); idempotent."""
        ...

    async def remove(self, instance: RunningInstance) -> None:
        """Remove a stopped (or running) instance for good; idempotent."""
        ...

    def output(
        self, instance: RunningInstance, since: float | None = None
    ) -> AsyncIterator[OutputLine]:
        """The instance's stdout/stderr lines from its start (or ``since``) until it exits."""
        ...

    async def list(self) -> list[RunningInstance]:
        """Instances of this daemon the backend holds, running or not."""
        ...

    async def rename(self, instance: RunningInstance, function: str) -> None:
        """Name the instance after the function it now serves (a specialised pool instance)."""
        ...

    async def is_alive(self, instance: RunningInstance) -> bool: ...

    def runs(self, image: str) -> bool:
        """Whether ``image`` is an artifact of this backend (a function deployed with
        another backend must be deployed again)."""
        ...

    async def sweep(self) -> None:
        """Retry the clean-ups that failed while the engine was away (the watchdog
        calls it once the engine answers again)."""
        ...

    async def logs(self, instance: RunningInstance, tail: int = 50) -> str: ...

    async def remove_network(self, tenant: str) -> bool:
        """Remove what isolates ``tenant`` (its network), for ``plat tenant rm``; False,
        quietly, while instances still use it. True when there is nothing to remove."""
        ...

    def events(self, since: float | None = None) -> AsyncIterator[InstanceExit]:
        """Exits of this daemon's instances as they happen, from ``since`` (a
        time.time() value; None: from now on), whatever ended them (``stop`` too).

        The container backend's raises EngineError when the engine's stream breaks
        or ends (the engine went away: a caller reconnects with ``since`` and
        reconciles with ``list``); the process backend's ends when it closes. A
        reader stops reading by closing the iterator (or cancelling its task)."""
        ...

    async def close(self) -> None: ...
