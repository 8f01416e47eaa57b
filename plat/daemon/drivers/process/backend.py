"""The process backend: each instance is the runtime's shim as a local subprocess.

It is the fallback where no container engine answers, and the fast path of
``plat dev``: starting a process takes tens of milliseconds where a container
takes hundreds. It isolates NOTHING: an instance runs as the daemon's user, sees
the whole filesystem and network, and has no memory, CPU or pids limits
(``InstanceSpec.memory``/``cpu``/``pids``/``user`` are ignored, and so are
``mounts``: the artifact folder already is the code). See docs/backends.md.
An instance's ``secrets`` are files in a private folder of its own (on tmpfs,
:mod:`plat.daemon.drivers.secretfiles`) that ``PLAT_SECRETS_DIR`` names; the
folder goes when the process ends.

What it runs is an artifact folder laid out by :mod:`plat.daemon.drivers.process.artifacts`
(``InstanceSpec.image == "process:<folder>"``): the shim starts in
``<folder>/app`` with ``<folder>/deps`` on ``PYTHONPATH`` / ``NODE_PATH``, and a
minimal environment (not the daemon's). Python runs with ``-S``, so a handler
imports the standard library and its own requirements only, as in its image.

Lifecycle: every instance is the leader of its own process group (so stopping it
also stops what its handler spawned) and gets a death signal from the kernel when
the daemon dies, even by SIGKILL, so no instance outlives the daemon. Instances
belong to this backend object: ``list()`` knows only what it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from plat.daemon.drivers.base import (
    LOOPBACK,
    InstanceExit,
    InstanceSpec,
    OutputLine,
    RunningInstance,
    free_port,
)
from plat.daemon.drivers.process.environment import instance_environment
from plat.daemon.drivers.process.layout import artifact_dir, artifact_runtime
from plat.daemon.drivers.secretfiles import SecretFiles
from plat.daemon.drivers.versions import PROCESS_IMAGE_PREFIX
from plat.errors import ConflictError, PlatError
from plat.runtimes import runtimes_root
from plat.subprocesses import death_signal_hook

log = logging.getLogger(__name__)

# Lines of output kept per instance: what output() replays to a reader that
# attaches after start, and what logs() can return.
BACKLOG_LINES = 1000
# A longer line is cut into pieces of this many bytes (bounds memory per line).
MAX_LINE_BYTES = 64 * 1024
READ_CHUNK = 64 * 1024
# After the process is gone, how long stop() waits for its pipes to reach EOF
# (a grandchild in another session could hold them open).
PIPE_DRAIN_SECONDS = 2.0
# Exits kept for an ``events(since=...)`` reader that subscribes after them.
EXITS_KEPT = 256
# -S: no `site`, so a handler imports the standard library and its own
# dependencies only, as in the image, never the daemon's packages or the user's
# ~/.local ones (a missing requirement fails here too, not first in a container).
# It also skips the site-packages' .pth hooks, which cost tens of ms per start.
PYTHON_FLAGS = ("-S",)
SHIMS = {
    "python": Path("python") / "shim" / "plat_shim.py",
    "node": Path("node") / "shim" / "plat-shim.cjs",
}


@dataclass(eq=False)
class _Instance:
    """One started process and what it has written."""

    running: RunningInstance
    proc: asyncio.subprocess.Process
    lines: deque[OutputLine] = field(default_factory=lambda: deque(maxlen=BACKLOG_LINES))
    total: int = 0  # lines ever captured; lines[-1] is line number total - 1
    open_streams: int = 2
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    readers: list[asyncio.Task[None]] = field(default_factory=list)
    watcher: asyncio.Task[None] | None = None  # tells ``events`` readers of the exit

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    @property
    def ended(self) -> bool:
        """Both pipes reached EOF: no more lines will come."""
        return self.open_streams == 0

    def add(self, stream: str, data: bytes) -> None:
        """Keep one line; an overlong one becomes pieces of MAX_LINE_BYTES."""
        now = time.time()
        for start in range(0, max(len(data), 1), MAX_LINE_BYTES):
            piece = data[start : start + MAX_LINE_BYTES]
            self.lines.append(OutputLine(now, stream, piece.decode(errors="replace")))
            self.total += 1


class ProcessBackend:
    """Instances as local processes of the runtime's shim. No isolation at all."""

    name = "process"
    isolates_tenants = False  # every instance shares the host's network and filesystem

    def __init__(
        self,
        daemon_id: str,
        *,
        python: str = sys.executable,
        node: str | None = shutil.which("node"),
        secret_files: SecretFiles | None = None,
    ) -> None:
        self.daemon_id = daemon_id
        self.python = python
        self.node = node
        self._secret_files = secret_files
        self._instances: dict[str, _Instance] = {}
        self._starting_ports: set[int] = set()
        self._starting_ids: set[str] = set()
        self._exits: deque[InstanceExit] = deque(maxlen=EXITS_KEPT)
        self._subscribers: set[asyncio.Queue[InstanceExit | None]] = set()
        self._closed = False

    @property
    def endpoint(self) -> str:
        return "local processes"

    def _command(self, runtime: str) -> list[str]:
        shim = runtimes_root() / SHIMS[runtime] if runtime in SHIMS else None
        if shim is None:
            raise PlatError(
                f"the process backend cannot run `{runtime}` functions",
                hint="use the container backend: `plat daemon start --backend container`",
            )
        if runtime == "node":
            if self.node is None:
                raise PlatError(
                    "node is not installed; the process backend runs node functions "
                    "with the host's node",
                    hint="install Node.js 18 or newer, or use the container backend",
                )
            return [self.node, str(shim)]
        return [self.python, *PYTHON_FLAGS, str(shim)]

    async def start(self, spec: InstanceSpec, instance_id: str) -> RunningInstance:
        """Spawn the shim for ``spec`` on a free loopback port; it may not be ready yet.

        Raises ConflictError when ``instance_id`` is already in use by this
        backend, PlatError when the artifact is missing or its runtime cannot run.
        """
        artifact = artifact_dir(spec.image)
        runtime = await asyncio.to_thread(artifact_runtime, artifact)
        if instance_id in self._instances or instance_id in self._starting_ids:
            raise ConflictError(f"instance {instance_id} already exists")
        command = self._command(runtime)
        port = self._pick_port()
        # Held until the instance is registered (spawning awaits).
        self._starting_ports.add(port)
        self._starting_ids.add(instance_id)
        secrets_dir: Path | None = None
        try:
            if spec.secrets:
                secrets_dir = await asyncio.to_thread(
                    self.secret_files().write, instance_id, spec.secrets, uid=None, gid=None
                )
            env = instance_environment(spec, artifact, runtime, port, os.environ, secrets_dir)
            proc = await asyncio.create_subprocess_exec(
                *command,
                cwd=artifact / "app",
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                # Its own group: stop() signals the shim and whatever the handler spawned,
                # and a Ctrl-C meant for `plat daemon run` does not reach instances.
                start_new_session=True,
                # SIGKILL: with the daemon gone nobody routes requests or reads the output,
                # so a graceful drain has no audience, and a handler that ignores SIGTERM
                # must not linger.
                preexec_fn=death_signal_hook(signal.SIGKILL),
            )
        except BaseException as exc:
            if secrets_dir is not None:
                self._forget_secrets(instance_id)
            if isinstance(exc, OSError):
                raise PlatError(
                    f"cannot start {spec.function} ({' '.join(command)}): {exc}",
                    hint="run `plat doctor`",
                ) from exc
            raise
        finally:
            self._starting_ports.discard(port)
            self._starting_ids.discard(instance_id)
        running = RunningInstance(
            id=instance_id,
            function=spec.function,
            version=spec.version,
            host=LOOPBACK,
            port=port,
            backend_ref=str(proc.pid),
        )
        inst = _Instance(running, proc)
        # Readers start now, so every line is kept from the first one on.
        assert proc.stdout is not None and proc.stderr is not None
        inst.readers = [
            asyncio.create_task(self._read(inst, proc.stdout, "stdout"), name=f"out-{instance_id}"),
            asyncio.create_task(self._read(inst, proc.stderr, "stderr"), name=f"err-{instance_id}"),
        ]
        inst.watcher = asyncio.create_task(self._watch(inst), name=f"exit-{instance_id}")
        self._instances[instance_id] = inst
        return running

    def secret_files(self) -> SecretFiles:
        """Where instances' secret files go; made on first need when none was given
        (the driver gives one, swept at start-up)."""
        if self._secret_files is None:
            root = SecretFiles.default_root(
                Path(tempfile.gettempdir()), f"{self.daemon_id}-process", env={}
            )
            self._secret_files = SecretFiles(root)
        return self._secret_files

    def _forget_secrets(self, instance_id: str) -> None:
        if self._secret_files is not None:
            try:
                self._secret_files.remove(instance_id)
            except OSError as exc:
                log.warning("cannot remove the secret files of instance %s: %s", instance_id, exc)

    async def _watch(self, inst: _Instance) -> None:
        code = await inst.proc.wait()
        # Nothing reads them any more (a process instance is never restarted).
        self._forget_secrets(inst.running.id)
        ended = InstanceExit(
            instance_id=inst.running.id,
            backend_ref=inst.running.backend_ref,
            exit_code=128 - code if code < 0 else code,  # -9 (SIGKILL) -> 137, as a shell says
            ts=time.time(),
        )
        self._exits.append(ended)
        for queue in self._subscribers:
            queue.put_nowait(ended)

    def _pick_port(self) -> int:
        """A free port that no instance of ours holds or is about to bind.

        The kernel seldom hands out a just-released port again, but two starts
        running at once must not both get it.
        """
        taken = self._starting_ports | {
            inst.running.port for inst in self._instances.values() if inst.alive
        }
        port = free_port()
        for _ in range(20):
            if port not in taken:
                break
            port = free_port()
        return port

    @staticmethod
    async def _read(inst: _Instance, reader: asyncio.StreamReader, stream: str) -> None:
        """Split a pipe into lines until EOF; an overlong line is cut into pieces."""
        partial = b""
        try:
            while True:
                chunk = await reader.read(READ_CHUNK)
                if not chunk:
                    break
                data = partial + chunk
                *complete, partial = data.split(b"\n")
                for line in complete:
                    inst.add(stream, line.removesuffix(b"\r"))
                while len(partial) >= MAX_LINE_BYTES:
                    inst.add(stream, partial[:MAX_LINE_BYTES])
                    partial = partial[MAX_LINE_BYTES:]
                async with inst.changed:
                    inst.changed.notify_all()
            if partial:
                inst.add(stream, partial.removesuffix(b"\r"))
        finally:
            inst.open_streams -= 1
            async with inst.changed:
                inst.changed.notify_all()

    def _signal(self, inst: _Instance, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(inst.proc.pid, sig)

    async def stop(self, instance: RunningInstance, timeout: float = 5.0) -> None:
        """SIGTERM the instance's process group, SIGKILL it after ``timeout`` s; idempotent.

        Returns once the process has exited and its output has been read to the
        end (bounded by PIPE_DRAIN_SECONDS), so output() readers see every line.
        """
        inst = self._instances.get(instance.id)
        if inst is None:
            return
        if inst.alive:
            self._signal(inst, signal.SIGTERM)
            try:
                await asyncio.wait_for(inst.proc.wait(), max(timeout, 0.0))
            except TimeoutError:
                self._signal(inst, signal.SIGKILL)
                await inst.proc.wait()
            # The leader was alive a moment ago, so its group id cannot have been
            # reused: kill what the handler left behind in the group.
            self._signal(inst, signal.SIGKILL)
        await self._drain(inst)

    @staticmethod
    async def _drain(inst: _Instance) -> None:
        pending = [task for task in inst.readers if not task.done()]
        if not pending:
            return
        _done, still = await asyncio.wait(pending, timeout=PIPE_DRAIN_SECONDS)
        for task in still:
            task.cancel()
        await asyncio.gather(*still, return_exceptions=True)

    async def remove(self, instance: RunningInstance) -> None:
        """Forget the instance, killing it first if it still runs; idempotent."""
        inst = self._instances.get(instance.id)
        if inst is None:
            return
        if inst.alive:
            await self.stop(instance, timeout=0.0)
        await self._drain(inst)
        if inst.watcher is not None:  # the exit is told before the instance is forgotten
            await asyncio.wait([inst.watcher])
        self._instances.pop(instance.id, None)

    async def output(
        self, instance: RunningInstance, since: float | None = None
    ) -> AsyncIterator[OutputLine]:
        """Every line the instance wrote to stdout and stderr, in arrival order.

        Starts from its first line (lines are buffered from start, up to
        BACKLOG_LINES; a reader further behind skips the oldest), or from
        ``since`` (a time.time() value), and ends when both pipes reached EOF
        and the process has exited. Several readers may follow the same instance.
        An unknown instance yields nothing.
        """
        inst = self._instances.get(instance.id)
        if inst is None:
            return
        position = 0
        while True:
            while position < inst.total:
                first = inst.total - len(inst.lines)
                position = max(position, first)
                line = inst.lines[position - inst.total]
                position += 1
                if since is None or line.ts >= since:
                    yield line
            if inst.ended:
                # The pipes close a moment before the exit is reaped; wait for it,
                # so that after the last line is_alive() is already False.
                await inst.proc.wait()
                return
            async with inst.changed:
                while inst.total <= position and not inst.ended:
                    await inst.changed.wait()

    async def list(self) -> list[RunningInstance]:
        """The instances this object started and has not removed; ``running`` is live."""
        return [replace(inst.running, running=inst.alive) for inst in self._instances.values()]

    async def prepare(self, spec: InstanceSpec, instance_id: str) -> None:
        """Nothing to do ahead: a process start has no separate create step."""

    async def unprepare(self, function: str) -> None:
        """Nothing was prepared."""

    async def rename(self, instance: RunningInstance, function: str) -> None:
        """Nothing to do: processes have no names (and the process backend has no pool)."""

    def runs(self, image: str) -> bool:
        return image.startswith(PROCESS_IMAGE_PREFIX)

    async def is_alive(self, instance: RunningInstance) -> bool:
        inst = self._instances.get(instance.id)
        return inst is not None and inst.alive

    async def sweep(self) -> None:
        """Nothing to retry: a process is killed by this daemon, not by an engine."""

    async def remove_network(self, tenant: str) -> bool:
        """Nothing isolates a tenant's processes (docs/backends.md): nothing to remove."""
        return True

    async def logs(self, instance: RunningInstance, tail: int = 50) -> str:
        """The last ``tail`` lines (at most BACKLOG_LINES) of stdout and stderr, merged."""
        inst = self._instances.get(instance.id)
        if inst is None or tail <= 0:
            return ""
        lines = list(inst.lines)[-tail:]
        return "".join(f"{line.text}\n" for line in lines)

    async def events(self, since: float | None = None) -> AsyncIterator[InstanceExit]:
        """Exits of the processes this object started, whatever ended them (``stop``
        too), from ``since`` on (the last EXITS_KEPT exits are kept for it). The exit
        code is as a shell reports it: 128 + the signal for a killed process. Ends when
        the backend closes; never fails (no engine to lose)."""
        queue: asyncio.Queue[InstanceExit | None] = asyncio.Queue()
        for past in self._exits:
            if since is not None and past.ts >= since:
                queue.put_nowait(past)
        if self._closed:
            queue.put_nowait(None)
        self._subscribers.add(queue)
        try:
            while (ended := await queue.get()) is not None:
                yield ended
        finally:
            self._subscribers.discard(queue)

    async def close(self) -> None:
        """Stop and forget every instance (used when the daemon shuts down); ``events``
        readers get those exits, then their iteration ends."""
        instances = [inst.running for inst in self._instances.values()]
        await asyncio.gather(*(self.stop(running) for running in instances))
        await asyncio.gather(*(self.remove(running) for running in instances))
        self._closed = True
        if self._secret_files is not None:
            self._secret_files.discard()
        for queue in self._subscribers:
            queue.put_nowait(None)
