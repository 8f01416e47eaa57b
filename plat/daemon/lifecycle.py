"""Running the daemon: one per PLAT_HOME (a lock), a pid file, signals, detaching.

``run`` is the foreground process; ``start_detached`` spawns it and waits until
its control socket answers; ``stop`` asks it to shut down and waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from typing import IO, Any

from plat.config import load_config
from plat.errors import DaemonError, PlatError
from plat.paths import Home

log = logging.getLogger("plat.daemon")


def read_pid(home: Home) -> int | None:
    try:
        return int(home.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


def _setup_logging(home: Home, foreground: bool) -> None:
    handlers: list[logging.Handler] = [logging.FileHandler(home.daemon_log)]
    if foreground and sys.stderr.isatty():
        handlers.append(logging.StreamHandler())
    os.chmod(home.daemon_log, 0o600)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    logging.getLogger("docker").setLevel(logging.WARNING)


async def _main(home: Home, env: Mapping[str, str], overrides: Mapping[str, Any]) -> None:
    from plat.daemon.app import Daemon

    config = load_config(home, env, overrides)
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
    try:
        await daemon.start()
        log.info("plat daemon ready (pid %d, gateway %s)", os.getpid(), daemon.gateway_url)
        print(f"plat daemon ready: gateway {daemon.gateway_url}", flush=True)
        await daemon.stop_event.wait()
    finally:
        try:
            await asyncio.wait_for(daemon.close(), timeout=30)
        except TimeoutError:
            log.error("shutdown did not finish within 30 s")
        log.info("plat daemon stopped")


def run(home: Home, env: Mapping[str, str], overrides: Mapping[str, Any]) -> None:
    """Run the daemon in the foreground until SIGTERM/SIGINT or a shutdown request."""
    # uvloop: the gateway's hot path measured faster on it (docs/architecture.md).
    # Imported here: it takes ~0.1 s, which other CLI commands need not pay.
    import uvloop

    os.umask(0o077)  # the database, its WAL files and logs are private
    with single_instance(home):
        _setup_logging(home, foreground=True)
        uvloop.run(_main(home, env, overrides))


def start_detached(
    home: Home,
    env: Mapping[str, str],
    port: int | None = None,
    timeout: float = 60.0,
    backend: str | None = None,
) -> int:
    """Spawn ``plat daemon run`` in its own session; returns its pid once it answers."""
    from plat.client import DaemonClient

    home.ensure()
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
    client = DaemonClient(home)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DaemonError(
                f"the daemon exited while starting (exit {proc.returncode}):\n"
                + _log_since(home, offset),
                hint=f"the full log is in {home.daemon_log}",
            )
        if client.ping():
            return proc.pid
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


def stop(home: Home, timeout: float = 40.0) -> int | None:
    """Ask the daemon to stop and wait until it has; returns its pid, None if none ran."""
    from plat.client import DaemonClient

    pid = read_pid(home)
    client = DaemonClient(home)
    if pid is None or not pid_alive(pid):
        if pid is not None:
            home.pid_file.unlink(missing_ok=True)
        return None
    try:
        client.request("POST", "/v1/shutdown")
    except PlatError:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid) or read_pid(home) != pid:
            return pid
        time.sleep(0.05)
    raise DaemonError(
        f"the daemon (pid {pid}) did not stop within {timeout:.0f} s",
        hint=f"see {home.daemon_log}; `kill {pid}` forces it",
    )
