"""plat.daemon.daemonlog: daemon.log rotation and repeated warnings/errors limited."""

from __future__ import annotations

import logging
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from plat.daemon.daemonlog import RepeatLimiter, repeat_key
from tests.fixtures import PlatRunner


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @property
    def messages(self) -> list[str]:
        return [r.getMessage() for r in self.records]


@pytest.fixture
def limited() -> tuple[logging.Logger, Collect, RepeatLimiter, Clock]:
    clock = Clock()
    handler = Collect()
    limiter = RepeatLimiter(handler, 60.0, clock)
    handler.addFilter(limiter)
    logger = logging.getLogger(f"test.daemonlog.{id(handler)}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    return logger, handler, limiter, clock


def fail(logger: logging.Logger, peer: str) -> None:
    try:
        raise ConnectionResetError("Cannot write to closing transport")
    except ConnectionResetError:
        logger.exception("Error handling request from %s", peer)


def test_a_repeated_traceback_is_written_once_then_summed_up(limited) -> None:  # type: ignore[no-untyped-def]
    logger, handler, limiter, clock = limited
    for i in range(500):
        fail(logger, f"127.0.0.1:{40000 + i}")  # the peer differs, the failure does not
        clock.now += 0.01
    assert len(handler.records) == 1
    assert handler.records[0].exc_info is not None
    limiter.flush()  # the interval has not ended
    assert len(handler.records) == 1
    clock.now += 60
    limiter.flush()
    assert len(handler.records) == 2
    summary = handler.records[1]
    assert summary.levelno == logging.ERROR
    assert summary.exc_info is None
    assert "Error handling request from 127.0.0.1:40000" in summary.getMessage()
    assert "repeated 499 times in the last" in summary.getMessage()
    # A new interval: written again, once.
    fail(logger, "127.0.0.1:1")
    fail(logger, "127.0.0.1:2")
    assert len(handler.records) == 3


def test_the_next_occurrence_after_the_interval_carries_the_count(limited) -> None:  # type: ignore[no-untyped-def]
    logger, handler, _, clock = limited
    for _ in range(5):
        logger.warning("disk is slow")
    clock.now += 61
    logger.warning("disk is slow")
    assert handler.messages == [
        "disk is slow",
        "disk is slow (repeated 4 times in the last 61 s)",
        "disk is slow",
    ]


def test_distinct_messages_and_info_pass(limited) -> None:  # type: ignore[no-untyped-def]
    logger, handler, limiter, _ = limited
    for i in range(3):
        logger.warning("function %s failed", i)  # no traceback: the text tells them apart
        logger.info("same info")
    assert handler.messages.count("same info") == 3
    assert [m for m in handler.messages if m.startswith("function")] == [
        "function 0 failed",
        "function 1 failed",
        "function 2 failed",
    ]
    limiter.flush_all()
    assert len(handler.records) == 6


def test_a_different_failure_place_is_another_key() -> None:
    def record(exc: BaseException) -> logging.LogRecord:
        try:
            raise exc
        except BaseException:
            return logging.LogRecord(
                "n", logging.ERROR, "f", 1, "failed: %s", ("x",), sys.exc_info()
            )

    assert repeat_key(record(ValueError("a"))) == repeat_key(record(ValueError("b")))
    assert repeat_key(record(ValueError("a"))) != repeat_key(record(KeyError("a")))


def test_interval_zero_turns_limiting_off() -> None:
    handler = Collect()
    handler.addFilter(RepeatLimiter(handler, 0.0))
    logger = logging.getLogger("test.daemonlog.off")
    logger.propagate = False
    logger.addHandler(handler)
    for _ in range(3):
        logger.error("again")
    assert handler.messages == ["again"] * 3


def test_daemon_log_rotates_and_stderr_follows(tmp_path: Path) -> None:
    """A detached daemon's stdout/stderr are daemon.log: after a rotation they write
    to the new file, not to an old one."""
    path = tmp_path / "daemon.log"
    script = textwrap.dedent(
        f"""
        import logging, sys
        from pathlib import Path
        from plat.daemon import daemonlog
        logs = daemonlog.setup(Path({str(path)!r}), max_bytes=4000, backups=2,
                               repeat_interval=60, foreground=False)
        log = logging.getLogger("plat.test")
        for i in range(400):
            log.info("line %d %s", i, "x" * 40)
        print("after rotation, on stderr", file=sys.stderr, flush=True)
        """
    )
    with path.open("ab") as out:
        subprocess.run([sys.executable, "-c", script], stdout=out, stderr=out, check=True)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["daemon.log", "daemon.log.1", "daemon.log.2"]
    for name in files:
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
        assert (tmp_path / name).stat().st_size <= 4000 + 200
    assert "line 399" in path.read_text()
    assert "after rotation, on stderr" in path.read_text()


@pytest.mark.container
def test_a_daemon_flooded_with_failing_requests_logs_one_traceback(
    fresh_plat: PlatRunner,
) -> None:
    """`GET * HTTP/1.1` once wrote an ERROR traceback per request into daemon.log."""
    plat = fresh_plat
    plat.env.update({"PLAT_BACKEND": "process", "PLAT_POOL_SIZE": "0"})
    plat.run("daemon", "start")
    for _ in range(40):
        with socket.create_connection(("127.0.0.1", plat.port), timeout=10) as sock:
            sock.sendall(b"GET * HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.settimeout(10)
            assert sock.recv(100).startswith(b"HTTP/1.1 4")
    plat.run("daemon", "stop")  # returns once the daemon has written its last line
    text = plat.home.joinpath("daemon.log").read_text()
    tracebacks = text.count("Traceback")
    assert tracebacks <= 1, text[-3000:]
    if tracebacks:
        assert "(repeated 39 times in the last" in text
