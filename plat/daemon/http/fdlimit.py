"""The daemon's open-file budget: how many gateway connections it can afford.

Every client connection to the gateway is a file descriptor, and a call being
proxied holds a second one (its connection to the instance). When the
descriptors run out, ``accept`` fails on every listening socket at once: the
gateway and the control socket stop together. So the daemon raises its soft
RLIMIT_NOFILE to the hard limit when it starts, and caps gateway connections
so that two descriptors for each still leave ``RESERVE`` for everything else
(the store, the control socket, logs, instances, the engine).
"""

from __future__ import annotations

import resource

RESERVE = 256
PER_CONNECTION = 2


def raise_open_files() -> int:
    """Raise the soft open-file limit to the hard one, if possible; returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass  # e.g. an infinite hard limit the kernel caps lower (nr_open)
    return soft


def connection_cap(wanted: int, open_files: int) -> int:
    """At most ``wanted`` connections, fewer when ``open_files`` cannot hold them
    (``RLIM_INFINITY`` holds any); never below 1."""
    if open_files == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, (open_files - RESERVE) // PER_CONNECTION))
