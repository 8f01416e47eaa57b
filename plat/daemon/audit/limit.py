"""How many failed authentications get a record each: a flood must not fill the disk.

Each origin host (the address without its port: a flood comes from many ports)
gets ``per_origin`` records a window; the rest are counted, and once its window
has passed one summary says how many were left out. At most ``max_origins``
hosts are followed at once; failures from further hosts share one bucket
(:data:`OTHERS`), so many addresses (IPv6 has plenty) cannot grow the state or
the records either. Decisions are a dict lookup: this runs in the gateway's
failure branch.
"""

from __future__ import annotations

from dataclasses import dataclass

OTHERS = "*"


@dataclass
class _Window:
    start: float
    admitted: int = 0
    suppressed: int = 0


@dataclass(frozen=True)
class Suppressed:
    """The failures of ``host`` left without a record of their own in one window."""

    host: str
    count: int
    start: float


def host_of(origin: str) -> str:
    """``127.0.0.1:5000`` -> ``127.0.0.1``, ``[::1]:5000`` -> ``::1``; else as it is."""
    if origin.startswith("["):
        return origin[1:].partition("]")[0]
    host, colon, port = origin.rpartition(":")
    return host if colon and port.isdigit() and ":" not in host else origin


class FailureLimit:
    def __init__(self, per_origin: int = 10, window: float = 60.0, max_origins: int = 64) -> None:
        self.per_origin = per_origin
        self.window = window
        self.max_origins = max_origins
        self._windows: dict[str, _Window] = {}

    def admit(self, origin: str, now: float) -> bool:
        """Whether a failure from ``origin`` at ``now`` gets a record of its own."""
        host = host_of(origin)
        win = self._windows.get(host)
        if win is None:
            if len(self._windows) >= self.max_origins:
                host = OTHERS
                win = self._windows.get(OTHERS)
            if win is None:
                win = self._windows[host] = _Window(now)
        if win.admitted < self.per_origin:
            win.admitted += 1
            return True
        win.suppressed += 1
        return False

    def expired(self, now: float, every: bool = False) -> list[Suppressed]:
        """Forget the windows that have passed (all of them with ``every``); the
        failures they left out, one entry per host that had any."""
        out = []
        for host, win in list(self._windows.items()):
            if every or now - win.start >= self.window:
                del self._windows[host]
                if win.suppressed:
                    out.append(Suppressed(host, win.suppressed, win.start))
        return out
