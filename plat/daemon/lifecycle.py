"""Running the daemon: one per PLAT_HOME (a lock), a pid file, signals, detaching.

``run`` is the foreground process; ``start_detached`` spawns it and waits until
its control socket answers; ``stop`` asks it to shut down, waits (bounded), kills
it if it must, then removes whatever containers of this daemon remain.

Starts and stops of one home take turns on ``run/start.lock``: commands started
at once against a home with no daemon all use the one daemon the first of them
starts, and a stop's final clean-up cannot remove a new daemon's containers.

The backend given explicitly (``--backend``) is remembered in ``$PLAT_HOME/backend``
(mode 0600) and used by every later start that names none, so a daemon the CLI
restarts after a crash comes back on the backend it ran on.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from plat.config import Config, load_config
from plat.daemon import daemonlog
from plat.errors import DaemonError, PlatError
from plat.paths import Home

if TYPE_CHECKING:
    from plat.daemon.app import Daemon

log = logging.getLogger("plat.daemon")


def read_pid(home: Home) -> int | None:
    try:
        return int(home.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (dead, not yet reaped by its parent) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill(0)
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


@contextlib.contextmanager
def single_instance(home: Home) -> Iterator[None]:
    """Hold the home's lock and pid file; raises DaemonError if another daemon holds it."""
    home.ensure()
    fd = os.open(home.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    lock: IO[str] = os.fdopen(fd, "r+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        pid = read_pid(home)
        raise DaemonError(
            f"a plat daemon is already running for {home.root}" + (f" (pid {pid})" if pid else ""),
            hint="`plat daemon status` shows it; `plat daemon stop` stops it; "
            "set PLAT_HOME to run another one",
        ) from None
    stale = read_pid(home)
    if stale and stale != os.getpid():
        log.info("removing the stale pid file of pid %d", stale)
    home.pid_file.write_text(f"{os.getpid()}\n")
    os.chmod(home.pid_file, 0o600)
    try:
        yield
    finally:
        home.pid_file.unlink(missing_ok=True)
        lock.close()


BACKENDS = ("auto", "container", "process")
# How long a daemon's close may take before its containers are removed by force.
CLOSE_TIMEOUT = 30.0


def _backend_file(home: Home) -> Path:
    return home.root / "backend"


def _engine_file(home: Home) -> Path:
    return home.run_dir / "engine"


def remembered_backend(home: Home) -> str | None:
    """The backend last given explicitly for this home (container | process), or None."""
    try:
        value = _backend_file(home).read_text().strip()
    except OSError:
        return None
    return value if value in BACKENDS and value != "auto" else None


def remember_backend(home: Home, choice: str) -> None:
    """Remember an explicit backend choice; ``auto`` forgets it (settings decide again)."""
    path = _backend_file(home)
    if choice == "auto":
        path.unlink(missing_ok=True)
        return
    _write_private(path, choice)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (mode 0600) by renaming a temporary file into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def _turn(home: Home, timeout: float) -> Iterator[None]:
    """Hold ``run/start.lock``: starts and stops of this home take turns.

    Raises DaemonError when another command holds it for more than ``timeout`` s.
    """
    home.ensure()
    fd = os.open(home.run_dir / "start.lock", os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise DaemonError(
                        f"another plat command has been starting or stopping the daemon of "
                        f"{home.root} for {timeout:.0f} s",
                        hint=f"see {home.daemon_log}; try again when it is done",
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


async def _main(
    home: Home,
    env: Mapping[str, str],
    config: Config,
    explicit_backend: str | None,
    logs: daemonlog.DaemonLog,
) -> None:
    from plat.daemon.app import Daemon

    daemon = Daemon(home, config, env)
    loop = asyncio.get_running_loop()
    signals = {"count": 0}

    def on_signal(signum: int) -> None:
        signals["count"] += 1
        if signals["count"] > 1:
            log.warning("second signal: exiting now")
            os._exit(1)
        log.info("received %s, shutting down", signal.Signals(signum).name)
        daemon.stop_event.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    repeats = asyncio.create_task(_flush_repeats(logs), name="log-repeats")
    try:
        await daemon.start()
        _record_choices(home, daemon, explicit_backend)
        log.info("plat daemon ready (pid %d, gateway %s)", os.getpid(), daemon.gateway_url)
        print(f"plat daemon ready: gateway {daemon.gateway_url}", flush=True)
        await daemon.stop_event.wait()
    finally:
        try:
            await asyncio.wait_for(daemon.close(), timeout=CLOSE_TIMEOUT)
        except TimeoutError:
            log.error(
                "shutdown did not finish within %.0f s; removing this daemon's containers by force",
                CLOSE_TIMEOUT,
            )
            await _remove_containers(daemon)
        repeats.cancel()
        await asyncio.gather(repeats, return_exceptions=True)
        log.info("plat daemon stopped")


async def _flush_repeats(logs: daemonlog.DaemonLog) -> None:
    while True:
        await asyncio.sleep(5)
        logs.flush_repeats()


def _record_choices(home: Home, daemon: Daemon, explicit_backend: str | None) -> None:
    """Remember an explicit backend, and the engine a stop may need after this daemon died."""
    if explicit_backend is not None:
        remember_backend(home, explicit_backend)
    endpoint = daemon.engine_description.get("endpoint")
    if daemon.backend.name == "container" and endpoint:
        _write_private(_engine_file(home), str(endpoint))
    else:
        _engine_file(home).unlink(missing_ok=True)


async def _remove_containers(daemon: Daemon) -> None:
    from plat.daemon.drivers.container.cleanup import remove_all

    if getattr(daemon, "backend", None) is None or daemon.backend.name != "container":
        return
    try:
        removed, remaining = await asyncio.to_thread(
            remove_all, daemon.backend.endpoint, daemon.home.daemon_id()
        )
    except PlatError as exc:
        log.error("removing this daemon's containers failed: %s", exc.message)
        return
    log.warning("removed %d containers by force", len(removed))
    if remaining:
        log.error("containers of this daemon remain: %s", ", ".join(remaining))


def run(home: Home, env: Mapping[str, str], overrides: Mapping[str, Any]) -> None:
    """Run the daemon in the foreground until SIGTERM/SIGINT or a shutdown request.

    Without a ``backend`` override, the one remembered for this home applies.
    """
    # uvloop: the gateway's hot path measured faster on it (docs/architecture.md).
    # Imported here: it takes ~0.1 s, which other CLI commands need not pay.
    import uvloop

    os.umask(0o077)  # the database, its WAL files and logs are private
    explicit_backend = overrides.get("backend")
    overrides = {**overrides, "backend": explicit_backend or remembered_backend(home)}
    with single_instance(home):
        config = load_config(home, env, overrides)
        logs = daemonlog.setup(
            home.daemon_log,
            max_bytes=config.daemon_log_size,
            backups=config.daemon_log_files,
            repeat_interval=config.daemon_log_repeat,
            foreground=True,
        )
        if explicit_backend is None and overrides["backend"] is not None:
            log.info("backend %s (remembered in %s)", overrides["backend"], _backend_file(home))
        try:
            uvloop.run(_main(home, env, config, explicit_backend, logs))
        finally:
            logs.close()


@dataclass(frozen=True)
class Started:
    """The daemon that answers: its pid, and whether this call started it."""

    pid: int
    started: bool


def start_detached(
    home: Home,
    env: Mapping[str, str],
    port: int | None = None,
    timeout: float = 60.0,
    backend: str | None = None,
) -> Started:
    """Spawn ``plat daemon run`` in its own session and wait until it answers.

    Idempotent and safe to call from many processes at once: they take turns,
    and whoever finds a daemon answering (or one being started by a foreground
    ``plat daemon run``) uses it instead of starting a second one.
    Raises DaemonError when the daemon exits while starting or stays silent.
    """
    from plat.client import DaemonClient

    client = DaemonClient(home)
    deadline = time.monotonic() + timeout
    with _turn(home, timeout):
        if client.ping():
            return Started(read_pid(home) or 0, started=False)
        cmd = [sys.executable, "-m", "plat", "daemon", "run"]
        if port is not None:
            cmd += ["--port", str(port)]
        if backend is not None:
            cmd += ["--backend", backend]
        with open(home.daemon_log, "ab") as logfile:
            os.chmod(home.daemon_log, 0o600)
            offset = logfile.tell()
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=logfile,
                start_new_session=True,
                env=dict(env),
            )
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                other = read_pid(home)
                if other is None or other == proc.pid or not pid_alive(other):
                    raise DaemonError(
                        f"the daemon exited while starting (exit {proc.returncode}):\n"
                        + _log_since(home, offset),
                        hint=f"the full log is in {home.daemon_log}",
                    )
                # A daemon started outside these turns (`plat daemon run`) holds the
                # home: wait for it to answer.
                if client.ping():
                    return Started(other, started=False)
            elif client.ping():
                return Started(proc.pid, started=True)
            time.sleep(0.05)
    raise DaemonError(
        f"the daemon did not answer within {timeout:.0f} s:\n" + _log_since(home, offset),
        hint=f"see {home.daemon_log}",
    )


def _log_since(home: Home, offset: int) -> str:
    try:
        with open(home.daemon_log, "rb") as fh:
            fh.seek(offset)
            lines = fh.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-15:])


@dataclass
class Stopped:
    """What ``stop`` did. ``remaining`` names containers it could not remove, with
    ``problem`` saying why."""

    pid: int | None = None
    forced: bool = False
    removed: list[str] = field(default_factory=list)
    remaining: list[str] = field(default_factory=list)
    problem: str | None = None


def stop(home: Home, timeout: float = 40.0, env: Mapping[str, str] | None = None) -> Stopped:
    """Stop the daemon and every container of it, whatever state it is in.

    Asks for a shutdown (SIGTERM if the control socket does not take the request),
    waits up to ``timeout`` s, then SIGKILLs it. Once it is gone, any container
    still labelled with this home's daemon id is removed through the engine
    (``podman rm -f``). Idempotent: with no daemon running it only does the latter.
    """
    from plat.client import DaemonClient

    result = Stopped()
    # Long enough for a start in progress to finish first.
    with _turn(home, timeout + 60.0):
        pid = read_pid(home)
        if pid is not None and not pid_alive(pid):
            home.pid_file.unlink(missing_ok=True)
            pid = None
        if pid is not None:
            result.pid = pid
            try:
                DaemonClient(home, timeout=5.0).request("POST", "/v1/shutdown")
            except PlatError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            if not _wait_gone(home, pid, timeout):
                result.forced = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                _wait_gone(home, pid, 10.0)
                if read_pid(home) == pid:
                    home.pid_file.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    home.socket.unlink()
        _sweep(home, dict(os.environ if env is None else env), result)
    return result


def _wait_gone(home: Home, pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid) or read_pid(home) != pid:
            return True
        time.sleep(0.05)
    return False


def _sweep(home: Home, env: Mapping[str, str], result: Stopped) -> None:
    """Remove every container labelled with this home's daemon id (the daemon is gone)."""
    try:
        ident = (home.root / "daemon-id").read_text().strip()
        endpoint = _engine_file(home).read_text().strip()
    except OSError:
        return  # never ran containers
    for remove in _removers(home, env, endpoint):
        try:
            result.removed, result.remaining = remove(ident)
        except PlatError as exc:
            result.problem = exc.message
            continue
        result.problem = "the engine did not remove them" if result.remaining else None
        return
    result.remaining = [f"every container labelled plat.daemon={ident}"]


Remover = Callable[[str], tuple[list[str], list[str]]]


def _removers(home: Home, env: Mapping[str, str], recorded: str) -> Iterator[Remover]:
    """Ways to remove a daemon's containers, each tried only if the one before failed:
    the engine it used, the one that answers now, the podman CLI (the daemon's own
    `podman system service` goes with it; its containers do not)."""
    from plat.daemon.drivers.container.cleanup import remove_all, remove_all_podman
    from plat.engine import find_engine

    yield functools.partial(remove_all, recorded)
    podman = shutil.which("podman") is not None  # then a dockerd holds none of them
    found = find_engine(env, extra=(str(home.run_dir / "podman.sock"),), docker_default=not podman)
    if found is not None and found.endpoint != recorded:
        yield functools.partial(remove_all, found.endpoint)
    yield remove_all_podman


def cleanup_hint(home: Home) -> str:
    """The command that removes what a stop could not."""
    try:
        ident = (home.root / "daemon-id").read_text().strip()
    except OSError:
        ident = "<daemon id>"
    return (
        f"`podman rm -f $(podman ps -aq --filter label=plat.daemon={ident}) "
        f"$(podman ps -aq --filter label=plat.anchor={ident})`, then "
        f"`podman network rm $(podman network ls -q --filter label=plat.daemon={ident})`"
    )
