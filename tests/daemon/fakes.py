"""Fakes at the serving wing's seams, for fast tests that need no container engine.

``FakeBackend`` implements the ``Backend`` protocol in memory; each instance it
starts is a real, tiny HTTP server on loopback (the readiness probe and the pool's
specialisation reach it over a socket, as they reach a shim). Knobs make starts
fail, instances never get ready, die or wedge, and the whole engine go away.
``FakeArtifacts`` implements the deployer's ``Artifacts``: the version is a digest
of the function folder, and a build can be made to fail or to wait.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from plat.daemon.deployer import Deployer
from plat.daemon.drivers.base import (
    LOOPBACK,
    InstanceExit,
    InstanceSpec,
    OutputLine,
    RunningInstance,
)
from plat.daemon.drivers.versions import BuildOutcome, Layout, LineSink, Release
from plat.daemon.metrics import Metrics
from plat.daemon.serving.controller import Controller
from plat.daemon.serving.probe import PROBE_HEADER, STATUS_HEADER
from plat.daemon.store import Store
from plat.errors import BuildError, EngineError
from plat.manifest import Manifest, validate_manifest

# Short enough that a test waiting for a failure is quick, long enough for a loaded CI box.
READY_TIMEOUT = 2.0


class FakeInstance:
    """One instance: a loopback socket that listens (answers HTTP) once it is ready.

    The port is bound from the start, so a probe before ``listen`` is refused, as
    it is by a process that has not opened its port yet."""

    def __init__(self, spec: InstanceSpec, instance_id: str) -> None:
        self.spec = spec
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((LOOPBACK, 0))
        port = int(self._sock.getsockname()[1])
        self.running = RunningInstance(
            instance_id, spec.function, spec.version, LOOPBACK, port, f"fake-{instance_id}"
        )
        self.server: asyncio.Server | None = None
        self.alive = True
        self.busy = False  # probes answer X-Plat-Status: busy (every worker stuck)
        self.requests: list[str] = []  # request lines of the calls (probes not included)
        self.probes = 0
        self._writers: set[asyncio.StreamWriter] = set()

    async def listen(self) -> None:
        if self.server is None and self.alive:
            self.server = await asyncio.start_server(self._serve, sock=self._sock)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                fields = dict(
                    (name.strip().lower(), value.strip())
                    for name, _, value in (line.partition(":") for line in head.split("\r\n")[1:])
                )
                await reader.readexactly(int(fields.get("content-length", "0")))
                status = ""
                if PROBE_HEADER.lower() in fields:
                    self.probes += 1
                    status = f"{STATUS_HEADER}: busy\r\n" if self.busy else ""
                else:
                    self.requests.append(head.split("\r\n", 1)[0])
                writer.write(f"HTTP/1.1 200 OK\r\n{status}Content-Length: 2\r\n\r\nok".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def close(self) -> None:
        """The process ended: nothing listens any more, open connections are cut."""
        self.alive = False
        if self.server is not None:
            self.server.close()
        else:
            self._sock.close()
        for writer in list(self._writers):
            writer.close()


class FakeBackend:
    """The ``Backend`` protocol in memory; see the module docstring.

    Knobs: ``fail_starts`` and ``unready_starts`` (how many of the next starts raise
    EngineError, or start an instance that never listens), ``start_delay``,
    ``unlisted``, ``away`` (every call raises EngineError), ``kill``, ``wedge``,
    ``make_ready``.
    Records: ``started``, ``stopped``, ``removed`` (instance ids, each once),
    ``prepared``, ``unprepared``, ``renamed``, ``sweeps``, ``removed_networks``
    (tenants). ``remove_network`` refuses while the tenant has an instance not removed.
    """

    name = "fake"
    isolates_tenants = True

    def __init__(self) -> None:
        self.instances: dict[str, FakeInstance] = {}  # every one not removed yet, by id
        self.fail_starts = 0
        self.unready_starts = 0
        self.start_delay = 0.0
        self.unlisted: set[str] = set()  # ids ``list`` misses (just started, being renamed)
        self._away = False
        self.started: list[str] = []
        self.stopped: list[str] = []
        self.removed: list[str] = []
        self.prepared: list[tuple[str, str]] = []  # (function, instance id)
        self.unprepared: list[str] = []
        self.renamed: list[tuple[str, str]] = []  # (instance id, function)
        self.sweeps = 0
        self.removed_networks: list[str] = []
        self.listings = 0
        self.exits: list[InstanceExit] = []
        self._news = asyncio.Event()  # replaced (after being set) at every exit
        self._closed = False

    @property
    def endpoint(self) -> str:
        return "fake://"

    @property
    def away(self) -> bool:
        return self._away

    @away.setter
    def away(self, away: bool) -> None:
        self._away = away
        self._poke()

    def _engine(self) -> None:
        if self._away:
            raise EngineError("container engine at fake:// failed: connection refused")

    def _poke(self) -> None:
        self._news.set()
        self._news = asyncio.Event()

    # knobs

    def instance(self, instance_id: str) -> FakeInstance:
        return self.instances[instance_id]

    def alive(self, function: str | None = None) -> list[FakeInstance]:
        """The instances that run (of ``function``), in the order they started."""
        return [
            f
            for f in self.instances.values()
            if f.alive and (function is None or f.running.function == function)
        ]

    def kill(self, instance_id: str, exit_code: int = 137) -> None:
        """The instance's process dies (out of memory, a crash): it listens no more."""
        self._exit(self.instances[instance_id], exit_code)

    def wedge(self, instance_id: str, busy: bool = True) -> None:
        """Every worker of the instance is stuck in a call (or free again)."""
        self.instances[instance_id].busy = busy

    async def make_ready(self, instance_id: str) -> None:
        """An instance started by an ``unready_starts`` start begins to listen."""
        await self.instances[instance_id].listen()

    def _exit(self, fake: FakeInstance, exit_code: int | None) -> None:
        if not fake.alive:
            return
        fake.close()
        running = fake.running
        self.exits.append(InstanceExit(running.id, running.backend_ref, exit_code, time.time()))
        self._poke()

    # the protocol

    async def start(self, spec: InstanceSpec, instance_id: str) -> RunningInstance:
        self._engine()
        if self.start_delay:
            await asyncio.sleep(self.start_delay)
        if self.fail_starts > 0:
            self.fail_starts -= 1
            raise EngineError(f"container engine at fake:// failed to start {spec.function}")
        fake = FakeInstance(spec, instance_id)
        self.instances[instance_id] = fake
        self.started.append(instance_id)
        if self.unready_starts > 0:
            self.unready_starts -= 1
        else:
            await fake.listen()
        return fake.running

    async def prepare(self, spec: InstanceSpec, instance_id: str) -> None:
        self._engine()
        self.prepared.append((spec.function, instance_id))

    async def unprepare(self, function: str) -> None:
        self._engine()
        self.unprepared.append(function)

    async def stop(self, instance: RunningInstance, timeout: float = 5.0) -> None:
        self._engine()
        fake = self.instances.get(instance.id)
        if fake is not None and fake.alive:
            self._exit(fake, 143)
            self.stopped.append(instance.id)

    async def remove(self, instance: RunningInstance) -> None:
        self._engine()
        fake = self.instances.pop(instance.id, None)
        if fake is not None:
            self._exit(fake, 137)
            self.removed.append(instance.id)

    async def output(
        self, instance: RunningInstance, since: float | None = None
    ) -> AsyncIterator[OutputLine]:
        self._engine()
        return
        yield  # an async generator that ends at once

    async def list(self) -> list[RunningInstance]:
        self._engine()
        self.listings += 1
        return [
            replace(f.running, running=f.alive)
            for f in self.instances.values()
            if f.running.id not in self.unlisted
        ]

    async def rename(self, instance: RunningInstance, function: str) -> None:
        self._engine()
        self.renamed.append((instance.id, function))

    def runs(self, image: str) -> bool:
        return not image.startswith("process:")

    async def is_alive(self, instance: RunningInstance) -> bool:
        self._engine()
        fake = self.instances.get(instance.id)
        return fake is not None and fake.alive

    async def sweep(self) -> None:
        self._engine()
        self.sweeps += 1

    async def logs(self, instance: RunningInstance, tail: int = 50) -> str:
        self._engine()
        return f"fake log of {instance.id}\n"

    async def remove_network(self, tenant: str) -> bool:
        self._engine()
        if any(f.spec.tenant == tenant for f in self.instances.values()):
            return False
        self.removed_networks.append(tenant)
        return True

    async def events(self, since: float | None = None) -> AsyncIterator[InstanceExit]:
        start = time.time() if since is None else since
        seen = 0
        while not self._closed:
            self._engine()
            news = self._news
            for event in self.exits[seen:]:
                if event.ts >= start:
                    yield event
            seen = len(self.exits)
            await news.wait()

    async def close(self) -> None:
        """Ends every instance (servers closed) and the event streams; never raises."""
        self._closed = True
        for fake in self.instances.values():
            if fake.alive:
                fake.close()
        self._poke()


class FakeArtifacts:
    """The ``Artifacts`` protocol: a build's version is a digest of the folder and the
    manifest. Knobs: ``failure`` (the next builds raise BuildError with it), ``gate``
    (builds wait for it; ``waiting`` is set once one does), ``hot_mounts`` (``hot``
    answers with a dev artifact mounting the folder)."""

    name = "fake"

    def __init__(self) -> None:
        self.failure: str | None = None
        self.gate: asyncio.Event | None = None
        self.waiting = asyncio.Event()
        self.hot_mounts = False
        self.builds = 0
        self.built: set[str] = set()
        self.forgotten: list[str] = []

    @staticmethod
    def version_of(manifest: Manifest, source: Path) -> str:
        digest = hashlib.sha256(json.dumps(manifest.to_dict(), sort_keys=True).encode())
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(source)).encode() + b"\0" + path.read_bytes())
        return digest.hexdigest()[:12]

    async def build(
        self, manifest: Manifest, source: Path, on_line: LineSink, *, force: bool = False
    ) -> BuildOutcome:
        self.builds += 1
        version = self.version_of(manifest, source)
        on_line(f"building {manifest.name} {version}")
        if self.gate is not None:
            self.waiting.set()
            await self.gate.wait()
        if self.failure is not None:
            on_line(self.failure)
            raise BuildError(f"the build of {manifest.name} failed", log_tail=self.failure)
        cached = version in self.built and not force
        self.built.add(version)
        return BuildOutcome(
            version, image_of(manifest.name, version), cached, 0.0, "fake", f"built {version}"
        )

    async def hot(
        self, manifest: Manifest, source: Path, on_line: LineSink | None = None
    ) -> BuildOutcome | None:
        if not self.hot_mounts:
            return None
        if self.failure is not None:  # as a dependency change's install that failed
            if on_line is not None:
                on_line(self.failure)
            raise BuildError("installing the dependencies failed", log_tail=self.failure)
        version = "dev-" + self.version_of(manifest, source)
        image = image_of(manifest.name, "base")
        return BuildOutcome(version, image, True, 0.0, "hot", "", {str(source): "/home/app"})

    async def forget(self, name: str) -> None:
        self.forgotten.append(name)


class FakeSources:
    """The pool's ``Sources``: every release is unpacked, in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def layout(self, release: Release) -> Layout | None:
        return Layout(self.folder, None)

    async def prepare(self, release: Release) -> Layout | None:
        return self.layout(release)

    def retain(self, releases: list[Release]) -> None:
        return None


# building the real things around the fakes


def image_of(name: str, version: str) -> str:
    return f"localhost/plat/{name}:{version}"


def manifest(name: str = "fn", **scale: int) -> Manifest:
    """A python function's manifest; ``scale`` overrides min, max and concurrency."""
    settings = {"min": 1, "max": 4, "concurrency": 1, **scale}
    return validate_manifest({"name": name, "runtime": "python", "scale": settings}, source="test")


def release(spec: Manifest, version: str = "v1") -> Release:
    return Release(spec, version, image_of(spec.name, version))


# The fixtures a test module gets by importing them (named here to keep the import
# apart from the parameter): ``from tests.daemon.fakes import backend_fixture, ...``.


@pytest.fixture(name="store")
async def store_fixture(tmp_path: Path) -> AsyncIterator[Store]:
    """The real store, in a fresh SQLite file."""
    store = Store(tmp_path / "plat.db")
    await store.open()
    yield store
    await store.close()


@pytest.fixture(name="backend")
async def backend_fixture() -> AsyncIterator[FakeBackend]:
    backend = FakeBackend()
    yield backend
    await backend.close()


def make_controller(store: Store, backend: FakeBackend, **settings: Any) -> Controller:
    """A Controller on ``backend`` with short timeouts; its loops run only after
    ``start()``, and the autoscaler ticks only when a test calls ``autoscale_once``."""
    options: dict[str, Any] = {
        "ready_timeout": READY_TIMEOUT,
        "drain_timeout": 1.0,
        "watch_interval": 0.05,
        "autoscale_tick": 3600.0,
        "queue_timeout": 2.0,
        **settings,
    }
    return Controller(store, backend, **options)


def make_deployer(store: Store, controller: Controller, artifacts: FakeArtifacts) -> Deployer:
    return Deployer(store, controller, artifacts, Metrics(controller.instance_states))


async def eventually(
    condition: Callable[[], object], timeout: float = 3.0, what: str = "the condition"
) -> None:
    """Wait until ``condition()`` is true; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s")
        await asyncio.sleep(0.005)
