"""Helpers of the adapter tests: the shim with the venv's packages (Flask, FastAPI),
and raw HTTP exchanges that read a streamed body chunk by chunk or hang up midway."""

from __future__ import annotations

import socket
import sysconfig
import time
from contextlib import AbstractContextManager
from pathlib import Path

from tests.runtimes import ServerProcess
from tests.runtimes.shims import PYTHON, running, write_files

# The shim runs with -S (no site-packages), as in images: the function's packages
# come on PYTHONPATH, as /opt/plat/deps does there.
SITE_PACKAGES = sysconfig.get_paths()["purelib"]


def serve_app(
    folder: Path, files: dict[str, str], handler: str, *, ready: bool = True, **env: str
) -> AbstractContextManager[ServerProcess]:
    """The Python shim serving ``handler`` from ``files``, stopped on exit."""
    write_files(folder, files)
    return running(PYTHON, folder, handler, ready=ready, **{"PYTHONPATH": SITE_PACKAGES, **env})


def raw_request(port: int, head: str, body: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head.encode("latin-1") + body)
    return sock


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """(the response head, what came after it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            raise AssertionError(f"connection closed before the head: {data!r}")
        data += piece
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def timed_chunks(sock: socket.socket) -> tuple[list[tuple[float, bytes]], bool]:
    """The chunks of a chunked body with the time each arrived, and whether the body
    ended properly (its last chunk) rather than with the connection cut."""
    head, buffer = read_head(sock)
    assert b"transfer-encoding: chunked" in head.lower(), head
    out: list[tuple[float, bytes]] = []

    def fill(n: int) -> bool:
        nonlocal buffer
        while len(buffer) < n:
            piece = sock.recv(65536)
            if not piece:
                return False
            buffer += piece
        return True

    while True:
        while b"\r\n" not in buffer:
            if not fill(len(buffer) + 1):
                return out, False
        line, _, buffer = buffer.partition(b"\r\n")
        size = int(line, 16)
        if not fill(size + 2):
            return out, False
        chunk, buffer = buffer[:size], buffer[size + 2 :]
        if size == 0:
            return out, True
        out.append((time.monotonic(), chunk))
