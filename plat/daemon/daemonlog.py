"""The daemon's own log, ``$PLAT_HOME/daemon.log``: rotated by size, repeats limited.

The file rotates at ``daemon_log_size`` bytes and keeps ``daemon_log_files``
older files (``daemon.log.1`` is the newest of them). A detached daemon's
stdout and stderr are the log file too (``start_detached`` opens it for them), so
on each rotation they follow the new file instead of filling an unlinked one.

A warning or error that repeats (same logger, level and message; for a traceback,
the same log call and exception type raised at the same place) is written once per
``daemon_log_repeat`` seconds; the copies in between are counted and summed up
in one line ("... repeated 41 times in the last 60 s") when the interval ends.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Keys remembered at most; a flood of distinct messages forgets the oldest.
MAX_KEYS = 1024

Key = tuple[str, int, str, str]


def repeat_key(record: logging.LogRecord) -> Key:
    """What makes two records "the same": logger, level and message; for a traceback,
    the message's template (its arguments, e.g. a peer address, may differ) and the
    exception's type and the place it was raised."""
    exc_info = record.exc_info
    if not exc_info or exc_info[0] is None:
        return record.name, record.levelno, record.getMessage(), ""
    frames = traceback.extract_tb(exc_info[2]) if exc_info[2] is not None else []
    place = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return record.name, record.levelno, str(record.msg), f"{exc_info[0].__qualname__}@{place}"


@dataclass
class _Seen:
    since: float
    repeats: int = 0
    level: int = logging.WARNING
    name: str = ""
    message: str = ""


class RepeatLimiter(logging.Filter):
    """A handler's filter: each warning/error at most once per ``interval`` seconds.

    Records below WARNING always pass. ``flush(now)`` writes the summaries of the
    intervals that ended (the daemon calls it every few seconds, and at exit).
    Thread-safe: the daemon logs from worker threads too.
    """

    def __init__(
        self,
        handler: logging.Handler,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.handler = handler
        self.interval = interval
        self.clock = clock
        self._seen: dict[Key, _Seen] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            record.levelno < logging.WARNING
            or self.interval <= 0
            or getattr(record, "plat_summary", False)
        ):
            return True
        key = repeat_key(record)
        now = self.clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen.since < self.interval:
                seen.repeats += 1
                return False
            if seen is not None and seen.repeats:
                self._emit_summary(seen, now)
            self._seen.pop(key, None)
            self._seen[key] = _Seen(now, 0, record.levelno, record.name, record.getMessage())
            while len(self._seen) > MAX_KEYS:
                oldest = next(iter(self._seen))
                dropped = self._seen.pop(oldest)
                if dropped.repeats:
                    self._emit_summary(dropped, now)
        return True

    def flush(self, now: float | None = None) -> None:
        """Write a summary for every interval that ended with repeats; forget idle keys."""
        now = self.clock() if now is None else now
        with self._lock:
            for key, seen in list(self._seen.items()):
                if now - seen.since < self.interval:
                    continue
                if seen.repeats:
                    self._emit_summary(seen, now)
                del self._seen[key]

    def flush_all(self) -> None:
        """Summaries of every pending repeat, whether its interval ended or not (at exit)."""
        with self._lock:
            now = self.clock()
            for seen in self._seen.values():
                if seen.repeats:
                    self._emit_summary(seen, now)
            self._seen.clear()

    def _emit_summary(self, seen: _Seen, now: float) -> None:
        record = logging.LogRecord(
            seen.name,
            seen.level,
            __file__,
            0,
            "%s (repeated %d times in the last %.0f s)",
            (seen.message, seen.repeats, max(now - seen.since, 0.0)),
            None,
        )
        record.plat_summary = True
        seen.repeats = 0
        self.handler.handle(record)


class DaemonLogFile(logging.handlers.RotatingFileHandler):
    """``daemon.log``, rotated at ``max_bytes`` with ``backups`` older files kept, mode 0600.

    With ``follow_std`` the process's stdout/stderr are pointed at the new file
    after each rotation (a detached daemon writes them into the log).
    """

    def __init__(self, path: Path, max_bytes: int, backups: int, follow_std: bool) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, delay=False)
        self.follow_std = follow_std
        os.chmod(path, 0o600)

    def doRollover(self) -> None:
        super().doRollover()
        if self.stream is None:
            return
        os.chmod(self.baseFilename, 0o600)
        if self.follow_std:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            fd = self.stream.fileno()
            os.dup2(fd, 1)
            os.dup2(fd, 2)


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


@dataclass
class DaemonLog:
    """The configured handlers and their repeat limiters."""

    limiters: list[RepeatLimiter]

    def flush_repeats(self) -> None:
        for limiter in self.limiters:
            limiter.flush()

    def close(self) -> None:
        for limiter in self.limiters:
            limiter.flush_all()


def setup(
    path: Path,
    *,
    max_bytes: int,
    backups: int,
    repeat_interval: float,
    foreground: bool,
) -> DaemonLog:
    """Route the daemon's logging to ``path`` (and a terminal's stderr in the foreground)."""
    path.touch(mode=0o600)
    follow_std = _same_file(1, path) or _same_file(2, path)
    handlers: list[logging.Handler] = [DaemonLogFile(path, max_bytes, backups, follow_std)]
    if foreground and sys.stderr.isatty():
        handlers.append(logging.StreamHandler())
    limiters = []
    for handler in handlers:
        handler.setFormatter(logging.Formatter(FORMAT))
        limiter = RepeatLimiter(handler, repeat_interval)
        handler.addFilter(limiter)
        limiters.append(limiter)
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True)
    for noisy in ("aiohttp.access", "urllib3", "docker"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return DaemonLog(limiters)
